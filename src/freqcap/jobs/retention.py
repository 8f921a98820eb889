"""Retention: prune every store to its horizon (`retention.*` settings). `freqcap retention`, the
`freqcap_maintenance` DAG (one task per group below) and the tests call these.

Each store's format is known to one adapter function; this module computes the cut-offs (`now - horizon`), says
what to keep whatever its age (the champion's training set, every table's newest snapshot, aliased model
versions), and reports counts per store. With `dry_run` nothing is removed and the counts are the same.

| store | unit counted | adapter |
|---|---|---|
| raw_events | Parquet files | `adapters.events_files.prune_event_files` |
| clean_events, quarantine | features runs | `adapters.gx.event_retention.prune_validation_outputs` |
| feature_runs | features runs | `adapters.stamped_dirs.prune_stamped_contents` |
| snapshots | snapshot files | `adapters.feast.snapshots.prune_snapshots` |
| training_sets, curves | directories | `adapters.stamped_dirs.prune_stamped_dirs` |
| mlflow_runs | runs | `adapters.mlflow.retention.prune_runs` |
| decision_log | days | `adapters.decision_log.prune_decision_log` |
| evidently_snapshots | snapshots | `adapters.evidently.prune_workspace` |
| monitoring_runs | directories | `adapters.stamped_dirs.prune_stamped_dirs` |
| dead_letters | entries / lines | `adapters.stream.dead_letters` |
| airflow_metadata | rows | `adapters.airflow.cleanup.clean_metadata` |
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from freqcap.adapters.airflow.cleanup import clean_metadata
from freqcap.adapters.decision_log import prune_decision_log
from freqcap.adapters.events_files import prune_event_files
from freqcap.adapters.feast.snapshots import prune_snapshots
from freqcap.adapters.gx.event_retention import prune_validation_outputs
from freqcap.adapters.mlflow.champion import champion_training_set, tracking_available
from freqcap.adapters.mlflow.retention import prune_runs
from freqcap.adapters.stamped_dirs import prune_stamped_contents, prune_stamped_dirs, stamped_dirs
from freqcap.adapters.stream.dead_letters import prune_dead_letter_file, prune_dead_letter_streams
from freqcap.adapters.stream.status import stream_redis_client
from freqcap.config import Settings, parse_duration
from freqcap.domain.stream.partitions import dead_letter_name
from freqcap.domain.training.config import resolve_model_config
from freqcap.errors import FreqcapError
from freqcap.layout import DataLayout, parse_as_of

log = logging.getLogger(__name__)


class RetentionConfigError(FreqcapError, ValueError):
    """A horizon is shorter than what a job reading that store needs; the message names the setting."""


def cutoff(settings: Settings, store: str, now: datetime) -> datetime:
    """What is older than this goes from `store`: `now - retention.<store>`."""
    return parse_as_of(now) - settings.retention.horizon(store)


def check_model_needs(settings: Settings) -> None:
    """The horizons against the model config the training DAG uses (it is not part of `Settings`): training reads
    `data.window` of impressions with `data.exposure_lookback` of history before them and the attribution window
    after, and joins snapshots over `data.window`."""

    model = resolve_model_config(settings.training.model_config_path)
    r = settings.retention
    span = parse_duration(model.data.window)
    needs = {
        "raw_events": (
            span + parse_duration(model.data.exposure_lookback) + parse_duration(model.label.attribution_window),
            "the training window + exposure_lookback + attribution_window of the model config",
        ),
        "snapshots": (span + parse_duration(settings.feast.snapshot_ttl), "the training window + feast.snapshot_ttl"),
        "training_sets": (span, "the training window of the model config"),
    }
    for name, (minimum, why) in needs.items():
        if r.horizon(name) < minimum:
            raise RetentionConfigError(
                f"retention.{name} = {getattr(r, name)} is shorter than {why} ({minimum.days}d): training needs it"
            )


# ------------------------------------------------------------------------------------------------------ groups


def prune_events(settings: Settings, now: datetime, dry_run: bool = False) -> dict[str, int]:
    """Raw events, the validated clean copies and the quarantine; then what is left of old features runs."""

    check_model_needs(settings)  # before anything goes: raw events are the training set's input
    layout = DataLayout.of(settings)
    runs = [(as_of, layout.features_run(as_of).validation_dir) for as_of, _ in stamped_dirs(layout.runs_root)]
    return {
        "raw_events": prune_event_files(layout.events_dir, cutoff(settings, "raw_events", now), dry_run),
        "clean_events": prune_validation_outputs(runs, cutoff(settings, "clean_events", now), "clean", dry_run),
        "quarantine": prune_validation_outputs(runs, cutoff(settings, "quarantine", now), "quarantine", dry_run),
    }


def prune_features(settings: Settings, now: datetime, dry_run: bool = False) -> dict[str, int]:
    """Features runs (their tables and gate reports; the validation outputs have horizons of their own) and the
    Feast offline snapshots (every table's newest kept)."""

    check_model_needs(settings)  # point-in-time joins over the training window read the snapshots
    layout = DataLayout.of(settings)
    spare = {layout.features_run(now).validation_dir.name}
    return {
        "feature_runs": prune_stamped_contents(
            layout.runs_root, cutoff(settings, "feature_runs", now), dry_run, spare=spare
        ),
        "snapshots": prune_snapshots(layout.offline_root, cutoff(settings, "snapshots", now), dry_run),
    }


def _registered_model(settings: Settings) -> Any:

    return resolve_model_config(settings.training.model_config_path)


def prune_training(settings: Settings, now: datetime, dry_run: bool = False) -> dict[str, int]:
    """Training sets (the champion's kept), curves and MLflow runs (aliased versions' runs kept)."""
    from freqcap.adapters.mlflow.evaluation import DEFAULT_EXPERIMENT

    check_model_needs(settings)
    layout = DataLayout.of(settings)
    model = _registered_model(settings)
    has_tracking = tracking_available(settings)
    champion_set = champion_training_set(settings, model.registered_model) if has_tracking else None
    keep = [champion_set.parent] if champion_set is not None else []
    horizon = cutoff(settings, "training_sets", now)
    training = 0
    for model_dir in (
        sorted(p for p in layout.training_base.iterdir() if p.is_dir()) if layout.training_base.is_dir() else []
    ):
        training += prune_stamped_dirs(model_dir, horizon, dry_run, keep=keep)
    counts = {
        "training_sets": training,
        "curves": prune_stamped_dirs(layout.curves_root, horizon, dry_run),
        "mlflow_runs": 0,
    }
    if has_tracking:
        pruned = prune_runs(
            settings,
            [model.experiment, DEFAULT_EXPERIMENT],
            [model.registered_model],
            cutoff(settings, "mlflow_runs", now),
            dry_run,
        )
        counts["mlflow_runs"] = pruned.runs
        counts["mlflow_model_versions"] = pruned.model_versions
    return counts


def prune_monitoring(settings: Settings, now: datetime, dry_run: bool = False) -> dict[str, int]:
    """The decision log, the Evidently workspace's snapshots and the monitoring runs' working files."""
    from freqcap.adapters.evidently import prune_workspace

    layout = DataLayout.of(settings)
    return {
        "decision_log": prune_decision_log(layout.decision_log_dir, cutoff(settings, "decision_log", now), dry_run),
        "evidently_snapshots": prune_workspace(
            layout.workspace_dir, cutoff(settings, "evidently_snapshots", now), dry_run
        ),
        "monitoring_runs": prune_stamped_dirs(
            layout.monitoring_runs_root, cutoff(settings, "monitoring_runs", now), dry_run
        ),
    }


def prune_stream(settings: Settings, now: datetime, dry_run: bool = False) -> dict[str, int]:
    """Dead letters: the replay transport's file and, where the stream runs on Redis (`stream.enabled`), every
    partition's dead-letter stream."""

    horizon = cutoff(settings, "dead_letters", now)
    removed = prune_dead_letter_file(DataLayout.of(settings).stream_dead_letters, horizon, dry_run)
    cfg = settings.stream
    if cfg.enabled:
        # A Redis Cluster client routes each partition's XTRIM to the master holding its hash tag.
        client = stream_redis_client(cfg, socket_timeout=30)
        try:
            keys = [dead_letter_name(cfg.dead_letter_key, p, cfg.partitions) for p in range(cfg.partitions)]
            removed += prune_dead_letter_streams(client, keys, horizon, dry_run)
        finally:
            client.close()
    return {"dead_letters": removed}


def airflow_configured(environ: dict[str, str] | None = None) -> bool:
    """Is an Airflow metadata DB named in this environment? Without one, `airflow db clean` would create and clean
    a fresh DB in ~/airflow: the group is skipped instead (the maintenance DAG always runs inside Airflow)."""
    env = os.environ if environ is None else environ
    return bool(env.get("AIRFLOW_HOME") or env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"))


def prune_airflow(settings: Settings, now: datetime, dry_run: bool = False) -> dict[str, int]:
    """Airflow's metadata DB through `airflow db clean` (rows per table, summed as `airflow_metadata`)."""

    if not airflow_configured():
        log.info("retention airflow: no Airflow configured here (AIRFLOW_HOME / its DB connection unset); skipped")
        return {}
    tables = clean_metadata(cutoff(settings, "airflow_metadata", now), dry_run)
    return {"airflow_metadata": sum(tables.values()), **{f"airflow_metadata.{t}": n for t, n in tables.items()}}


# The maintenance DAG's tasks, in order; the CLI runs all of them (or those named).
GROUPS: dict[str, Callable[[Settings, datetime, bool], dict[str, int]]] = {
    "events": prune_events,
    "features": prune_features,
    "training": prune_training,
    "monitoring": prune_monitoring,
    "stream": prune_stream,
    "airflow": prune_airflow,
}


def prune_group(group: str, settings: Settings, now: datetime | str, dry_run: bool = False) -> dict[str, Any]:
    """One group's counts, as a DAG task returns them: `{"group", "now", "dry_run", "removed": {store: n}}`."""
    if group not in GROUPS:
        raise ValueError(f"unknown retention group {group!r}: one of {sorted(GROUPS)}")
    ts = parse_as_of(now)
    removed = GROUPS[group](settings, ts, dry_run)
    log.info(
        "retention %s%s: %s",
        group,
        " (dry run)" if dry_run else "",
        ", ".join(f"{k} {v}" for k, v in removed.items()),
    )
    return {"group": group, "now": ts.isoformat(), "dry_run": dry_run, "removed": removed}


def prune(
    settings: Settings, now: datetime | str, dry_run: bool = False, groups: Iterable[str] | None = None
) -> dict[str, int]:
    """Prune every store (or the stores of `groups`) to its horizon as of `now`; counts per store."""
    counts: dict[str, int] = {}
    for group in groups or GROUPS:
        counts.update(prune_group(group, settings, now, dry_run)["removed"])
    return counts
