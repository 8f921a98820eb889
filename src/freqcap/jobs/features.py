"""The features pipeline as plain functions: validate -> aggregate -> check -> publish + materialize.

Each function takes and returns JSON-serializable values (paths as strings), so Airflow passes only small
XComs between tasks (LIBRARY-NOTES: never DataFrames through XCom).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from freqcap.config import Settings

log = logging.getLogger(__name__)


def parse_as_of(value: str | datetime) -> datetime:
    """An ISO-8601 time (a trailing Z allowed) as an aware UTC datetime; naive values are taken as UTC."""
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)


def data_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve()


def run_dir(settings: Settings, as_of: datetime) -> Path:
    """Where one features run keeps its validation output and feature tables."""
    return data_dir(settings) / "runs" / as_of.strftime("%Y%m%dT%H%M%SZ")


def feast_repo_dir(settings: Settings) -> Path:
    return data_dir(settings) / "feast"


def default_events_dir(settings: Settings) -> Path:
    return data_dir(settings) / "raw" / "events"


def validate_events_job(
    events_dir: str, as_of: str, settings: Settings, ads_catalog: str | None = None
) -> dict[str, Any]:
    """Validate raw events with Great Expectations; quarantine bad rows; fail the run above the bad-share gate."""
    from freqcap.events.io import ads_path_for
    from freqcap.validation import validate_events

    ts = parse_as_of(as_of)
    catalog = Path(ads_catalog) if ads_catalog else ads_path_for(events_dir)
    report = validate_events(
        Path(events_dir),
        as_of=ts,
        config=settings.validation,
        out_dir=run_dir(settings, ts) / "validation",
        ads_catalog=catalog,
    )
    return report.to_dict()


def build_features_job(clean_events: str, as_of: str, settings: Settings, users: str | None = None) -> dict[str, Any]:
    """Aggregate validated events into the three tier tables and the user table."""
    from freqcap.features.build import build_features

    ts = parse_as_of(as_of)
    build = build_features(
        clean_events,
        ts,
        run_dir(settings, ts) / "features",
        settings.features,
        users=users,
        deduplicate=False,
    )
    return {
        "as_of": ts.isoformat(),
        "paths": {k: str(v) for k, v in build.paths.items()},
        "rows": build.rows,
        "events_scanned": build.events_scanned,
        "seconds": round(build.seconds, 3),
        "notes": build.notes,
    }


def check_features_job(build: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Gate: every feature-table invariant holds, or the run stops before Feast is touched."""
    from freqcap.features.checks import check_feature_tables

    results = check_feature_tables(
        {k: Path(v) for k, v in build["paths"].items()}, parse_as_of(build["as_of"]), settings.features
    )
    return {**build, "checks_passed": len(results)}


def materialize_job(build: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Publish the snapshot offline, apply the Feast repo and load the snapshot into the online store.

    A backfill older than the newest published snapshot is written offline only: the online store keeps the
    newer values (SQLite would otherwise let the older write win).
    """
    from freqcap.feast_io.snapshots import list_snapshots, publish_snapshot
    from freqcap.feast_io.store import apply_definitions, materialize, offline_root, open_store
    from freqcap.features.build import FeatureBuild

    ts = parse_as_of(build["as_of"])
    repo = feast_repo_dir(settings)
    root = offline_root(repo)
    fb = FeatureBuild(ts, {k: Path(v) for k, v in build["paths"].items()}, build["rows"], build["events_scanned"], 0.0)
    published = publish_snapshot(fb, root)
    newest = max((t for t, _ in list_snapshots(root, "user_ad")), default=ts)
    started = time.perf_counter()
    store = open_store(settings, repo)
    apply_definitions(store, settings, repo)
    online_written = False
    bulk = None
    if ts >= newest:
        if settings.feast.materialization == "bulk":
            from freqcap.feast_io.bulk import bulk_materialize

            bulk = bulk_materialize(store, settings, published, ts).to_dict()
        else:
            materialize(store, ts - timedelta(seconds=1), ts + timedelta(seconds=1))
        online_written = True
    else:
        log.warning("as_of %s is older than the newest snapshot %s: offline only", ts, newest)
    seconds = time.perf_counter() - started
    rows = sum(build["rows"].values())
    summary = {
        "as_of": ts.isoformat(),
        "feast_repo": str(repo),
        "online_store": settings.feast.online.kind,
        "snapshots": {k: str(v) for k, v in published.items()},
        "online_written": online_written,
        "materialization": settings.feast.materialization,
        "bulk": bulk,
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds else None,
    }
    (run_dir(settings, ts) / "materialize.json").write_text(json.dumps(summary, indent=2))
    log.info("materialized %d rows in %.1fs", rows, seconds)
    return summary
