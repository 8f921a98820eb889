"""The features pipeline as plain functions: validate -> aggregate -> check -> publish + materialize.

Each function takes and returns JSON-serializable values (paths as strings), so Airflow passes only small
XComs between tasks (a 1 M-row DataFrame through XCom cost 5 s and 79 MB of metadata DB per run: never frames).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from freqcap.adapters.duckdb.pseudonymize import pseudonymize_users_file
from freqcap.adapters.feast.bulk import bulk_materialize
from freqcap.adapters.feast.snapshots import list_snapshots, publish_snapshot
from freqcap.adapters.feast.store import apply_definitions, materialize, open_store
from freqcap.adapters.feature_engine import build_features
from freqcap.adapters.gx import validate_events
from freqcap.adapters.gx.events import CLEAN_USERS_FILE
from freqcap.adapters.gx.features import (
    FeatureGateError,
    previous_row_counts,
    record_row_counts,
    validate_feature_tables,
)
from freqcap.adapters.secrets import load_pseudonymizer
from freqcap.config import Settings
from freqcap.domain.features import FeatureBuild
from freqcap.domain.stream.seam import check_batch_cutoff
from freqcap.layout import DataLayout, ads_path_for, parse_as_of, users_path_for
from freqcap.resources import suite_path

log = logging.getLogger(__name__)


def events_dir_for(settings: Settings, events_dir: str | None = None) -> str:
    """The events directory of a run: the one given (a DAG param), else the layout's default `raw/events`."""
    return events_dir or str(DataLayout.of(settings).events_dir)


def docs_root_for(settings: Settings) -> Path | None:
    """Where gate runs publish Data Docs (the data directory's `gx/`), or None when `validation.data_docs` is off."""
    return DataLayout.of(settings).root if settings.validation.data_docs else None


def validate_events_job(
    events_dir: str,
    as_of: str,
    settings: Settings,
    ads_catalog: str | None = None,
    now: str | None = None,
    users: str | None = None,
) -> dict[str, Any]:
    """Validate raw events with Great Expectations; quarantine bad rows; fail the run above the bad-share gate.

    `now` (ISO time): the run's wall clock. Scheduled and backfilled runs pass it, so events later than `as_of`
    but not from the future are left out of the run instead of being quarantined as future-stamped.

    This is the batch ingestion edge: with `privacy.enabled` (the default) user ids become pseudonyms here, in the
    clean events, the quarantine and the reports, and the users table (`users`, default `users.parquet` beside the
    events) is copied beside the clean events with pseudonymous ids. `users_path` in the result is the users table
    the next steps must read (the copy; the raw file only when privacy is off)."""
    ts = parse_as_of(as_of)
    catalog = Path(ads_catalog) if ads_catalog else ads_path_for(events_dir)
    pseudonymizer = load_pseudonymizer(settings)
    out_dir = DataLayout.of(settings).features_run(ts).validation_dir
    report = validate_events(
        Path(events_dir),
        as_of=ts,
        config=settings.validation,
        out_dir=out_dir,
        ads_catalog=catalog,
        docs_root=docs_root_for(settings),
        now=parse_as_of(now) if now else None,
        pseudonymizer=pseudonymizer,
    )
    source_users = users_path_for(events_dir, users)
    users_path = source_users
    if pseudonymizer is not None and source_users is not None:
        users_path = out_dir / CLEAN_USERS_FILE
        pseudonymize_users_file(source_users, users_path, pseudonymizer)
    return {
        **report.to_dict(),
        "users_path": str(users_path) if users_path else None,
        "pseudonym_key": pseudonymizer.active if pseudonymizer else None,
    }


def build_features_job(clean_events: str, as_of: str, settings: Settings, users: str | None = None) -> dict[str, Any]:
    """Aggregate validated events into the three tier tables and the user table."""
    ts = parse_as_of(as_of)
    build = build_features(
        clean_events,
        ts,
        DataLayout.of(settings).features_run(ts).features_dir,
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
    """Gate: the feature tables pass `resources/gx/features.json` (Great Expectations), or the run stops before
    Feast is touched, raising `FeatureGateError` that names each failed `table.rule`.

    The report is written to the run's `features_validation.json` either way; the row-count baseline is the newest
    published run before this one (`DataLayout.row_counts`)."""
    ts = parse_as_of(build["as_of"])
    layout = DataLayout.of(settings)
    report_path = layout.features_run(ts).features_report
    previous = previous_row_counts(layout.row_counts, ts)
    try:
        report = validate_feature_tables(
            build["paths"],
            ts,
            settings.features,
            max_row_count_ratio=settings.validation.max_row_count_ratio,
            previous_rows={table: rows for table, (_, rows) in previous.items()},
            suite_path=suite_path("features.json", settings.validation.suites_dir),
            docs_root=docs_root_for(settings),
        )
    except FeatureGateError as exc:
        exc.report.write(report_path)
        raise
    report.write(report_path)
    return {
        **build,
        "checks_passed": sum(1 for o in report.outcomes if o.success),
        "checks_skipped": [o.name for o in report.outcomes if o.success is None],
        "validation_report": str(report_path),
        "data_docs": report.data_docs,
    }


def materialize_job(build: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Publish the snapshot offline, apply the Feast repo and load the snapshot into the online store.

    A backfill older than the newest published snapshot is written offline only: the online store keeps the
    newer values (SQLite would otherwise let the older write win).
    """
    ts = parse_as_of(build["as_of"])
    if settings.stream.enabled:
        # The as-of becomes the rows' cut-off at serving's batch/stream seam: it must not split a stream bucket.
        check_batch_cutoff(ts.timestamp(), int(settings.stream.seconds("bucket")))
    layout = DataLayout.of(settings)
    repo = layout.feast_repo
    root = layout.offline_root
    fb = FeatureBuild(ts, {k: Path(v) for k, v in build["paths"].items()}, build["rows"], build["events_scanned"], 0.0)
    published = publish_snapshot(fb, root)
    record_row_counts(layout.row_counts, ts, build["rows"])  # the next run's row-count baseline
    newest = max((t for t, _ in list_snapshots(root, "user_ad")), default=ts)
    started = time.perf_counter()
    store = open_store(settings, repo)
    apply_definitions(store, settings, repo)
    online_written = False
    bulk = None
    if ts >= newest:
        if settings.feast.materialization == "bulk":
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
    layout.features_run(ts).materialize_report.write_text(json.dumps(summary, indent=2))
    log.info("materialized %d rows in %.1fs", rows, seconds)
    return summary
