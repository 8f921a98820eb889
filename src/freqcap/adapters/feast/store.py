"""The Feast feature store as freqcap runs it: a runtime repo directory generated from settings.

The online store (SQLite, Redis or Redis Cluster) is chosen by `Settings.feast.online`, never by editing a file. The runtime
directory holds `feature_store.yaml` (so the `feast` CLI works there too), the registry, the SQLite online store
and the offline snapshots under `offline/<table>/`.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from freqcap.config import Settings, parse_duration
from freqcap.layout import offline_root

log = logging.getLogger(__name__)


def repo_config_dict(settings: Settings, repo_dir: Path) -> dict[str, Any]:
    """The feature_store.yaml content for these settings (absolute paths under `repo_dir`)."""
    online = settings.feast.online
    if online.is_redis:
        online_store: dict[str, Any] = {
            "type": "redis",
            "connection_string": online.redis_connection_string,
            # Keys of pairs that fell out of every window expire instead of piling up: the longest window they
            # serve plus a margin (`Settings.online_key_ttl`).
            "key_ttl_seconds": int(settings.online_key_ttl.total_seconds()),
        }
        if online.kind == "redis_cluster":  # the connection string lists start-up nodes; keys spread by slot
            online_store["redis_type"] = "redis_cluster"
    else:
        online_store = {"type": "sqlite", "path": str(repo_dir / "online.db")}
    return {
        "project": settings.feast.project,
        "provider": "local",
        "registry": _registry(settings, repo_dir),
        "online_store": online_store,
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
        "materialization": {"online_write_batch_size": online.online_write_batch_size},
    }


class _DropMisleadingFlagWarning(logging.Filter):
    """Feast warns that `serve_features_while_materializing` is a no-op on a file registry. Measured here it is
    not: without it, readers got "in state 'MATERIALIZING'" errors during a file-registry materialization
    (tests/integration/test_feast_online.py). Drop only that warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "serve_features_while_materializing" not in record.getMessage()


logging.getLogger("feast.repo_config").addFilter(_DropMisleadingFlagWarning())


def _registry(settings: Settings, repo_dir: Path) -> dict[str, Any]:
    registry = settings.feast.registry
    # Materialization marks views MATERIALIZING in the registry (file or SQL) and other readers would refuse to
    # serve them meanwhile: keep serving the last materialized values instead.
    common = {"cache_ttl_seconds": 60, "serve_features_while_materializing": True}
    if registry == "file":
        return {
            "registry_type": "file",
            "path": str(repo_dir / "registry.db"),
            # Feast's own file store rewrites registry.db in place; readers could see it half-written.
            "registry_store_type": "freqcap.adapters.feast.registry.AtomicFileRegistryStore",
            **common,
        }
    return {"registry_type": "sql", "path": registry, "cache_mode": "sync", **common}


def write_repo_config(settings: Settings, repo_dir: Path) -> Path:
    repo_dir.mkdir(parents=True, exist_ok=True)
    path = repo_dir / "feature_store.yaml"
    path.write_text(yaml.safe_dump(repo_config_dict(settings, repo_dir), sort_keys=False))
    return path


def open_store(settings: Settings, repo_dir: Path):
    """A `FeatureStore` for the runtime repo (writes its feature_store.yaml first). Build it once: ~1.4 s."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    repo_dir = repo_dir.resolve()
    write_repo_config(settings, repo_dir)
    config = RepoConfig(repo_path=repo_dir, **repo_config_dict(settings, repo_dir))
    return FeatureStore(config=config, repo_path=str(repo_dir))


def resolved_definitions(settings: Settings, repo_dir: Path) -> list[Any]:
    """Entities, views and services with batch source paths made absolute under `repo_dir/offline`."""
    from freqcap.adapters.feast.repo.entities import ENTITIES
    from freqcap.adapters.feast.repo.feature_services import build_feature_services
    from freqcap.adapters.feast.repo.feature_views import build_feature_views, build_stream_views

    ttl = parse_duration(settings.feast.snapshot_ttl)
    views = [copy.deepcopy(v) for v in build_feature_views(settings.features, ttl=ttl)]
    root = offline_root(repo_dir.resolve())
    for view in views:
        source = copy.deepcopy(view.batch_source)
        source.file_options.uri = str(root / Path(source.path).name)
        view.batch_source = source
        view.stream_source = None
    streams = [copy.deepcopy(v) for v in build_stream_views(ttl=ttl)]
    for view in streams:
        view.stream_source.batch_source.file_options.uri = str(root / Path(view.stream_source.batch_source.path).name)
    return [*ENTITIES, *views, *streams, *build_feature_services(views)]


def apply_definitions(store: Any, settings: Settings, repo_dir: Path) -> list[str]:
    """Register entities, views and services; idempotent. Returns the applied object names."""
    objects = resolved_definitions(settings, repo_dir)
    offline_root(repo_dir).mkdir(parents=True, exist_ok=True)
    store.apply(objects)
    store.refresh_registry()
    return [o.name for o in objects]


def materialize(store: Any, start: datetime, end: datetime, views: list[str] | None = None) -> None:
    """Load the newest snapshot in [start, end] of each view into the online store."""
    log.info("materializing %s .. %s", start.isoformat(), end.isoformat())
    if views is None:  # the batch views only: stream views are pushed by the worker, never materialized
        views = [v.name for v in store.list_feature_views() if v.tags.get("path") != "stream"]
    store.materialize(start_date=start, end_date=end, feature_views=views)
