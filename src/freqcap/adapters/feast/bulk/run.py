"""The bulk writer's entry points: write published snapshots into the online store, read or forget its state.

`bulk_materialize` opens the target for the store, plans each view from the registry (`plan`), writes it
(`write_view`) and records the materialization interval in the registry as Feast's `materialize` does.
`online_state` reads the recorded state per view (serving reads the batch watermarks from it);
`clear_online_state` forgets it, so the next run rewrites in full.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from freqcap.adapters.feast.bulk.errors import UnsupportedOnlineStoreError
from freqcap.adapters.feast.bulk.plan import serving_features, view_plan
from freqcap.adapters.feast.bulk.redis_target import RedisTarget
from freqcap.adapters.feast.bulk.reports import BulkReport, BulkState, ViewReport
from freqcap.adapters.feast.bulk.sqlite_target import SqliteTarget
from freqcap.adapters.feast.bulk.target import Target
from freqcap.adapters.feast.bulk.write_view import REBUILD_SHARE, materialize_view
from freqcap.config import Settings

log = logging.getLogger(__name__)


def bulk_materialize(
    store: Any,
    settings: Settings,
    snapshots: Mapping[str, str | Path],
    as_of: datetime,
    *,
    incremental: bool = True,
    batch_rows: int = 50_000,
    verify_rows: int = 16,
    cleanup: bool = True,
    cleanup_every: timedelta = timedelta(hours=23),
    record_interval: bool = True,
    duckdb_memory_limit: str = "1GB",
    sqlite_strategy: str = "auto",
    rebuild_share: float | None = REBUILD_SHARE,
    progress: Callable[[str, int], None] | None = None,
    redis_restore: bool = True,
) -> BulkReport:
    """Write each view's published snapshot (`{view name: snapshot Parquet}`) into `store`'s online store.

    `as_of` is the snapshots' as-of time (their `event_timestamp`); a view whose recorded state is newer raises
    `StaleSnapshotError` before anything is written. Views are written one after another; each is either complete
    (and recorded) or, after an error, left without a recorded state so the next run rewrites it in full.

    `incremental=False` rewrites every row. `batch_rows` bounds memory (rows per Arrow batch; two encoded batches
    queue for the writer). `verify_rows` random rows per batch (plus edge rows) are checked against Feast's own
    conversion; 0 turns the check off. SQLite only: `cleanup` deletes entities absent from the snapshot whose last
    write is older than `as_of - settings.online_key_ttl`, at most once per `cleanup_every` of as-of time (it
    scans the view's table). `record_interval` appends the materialization interval to the Feast registry as
    `materialize` does. `duckdb_memory_limit` caps the diff/sort (DuckDB spills beyond it).

    SQLite only: `sqlite_strategy` is "upsert" (rows upserted in place, one transaction per batch), "rebuild" (the
    view's table rebuilt in one transaction: snapshot rows loaded in key order into a fresh table with Feast's own
    DDL, the rows not overwritten copied over from the old one, then swapped in) or "auto": rebuild when the share of
    snapshot rows to write is at least `rebuild_share` (a full write counts as 1.0; default `REBUILD_SHARE`, None:
    never — see there for the measurements). Redis only:
    `redis_restore` writes keys that do not exist yet as whole hashes with `RESTORE` (after a byte-level check
    against `HSET` on the live server; see `freqcap.adapters.feast.redis_dump`); False writes every row with `HSET`.
    """
    if sqlite_strategy not in ("auto", "upsert", "rebuild"):
        raise ValueError(f"sqlite_strategy must be auto, upsert or rebuild, not {sqlite_strategy!r}")
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    if batch_rows <= 0:
        raise ValueError("batch_rows must be positive")
    as_of = as_of.astimezone(UTC)
    started = time.perf_counter()
    target = open_target(store, settings)
    if isinstance(target, RedisTarget):
        target.use_restore = redis_restore
    reports: list[ViewReport] = []
    only = serving_features(settings) if settings.feast.online_features == "serving" else {}
    try:
        for name, path in snapshots.items():
            plan = view_plan(store, target, name, only.get(name))
            reports.append(
                materialize_view(
                    store,
                    settings,
                    target,
                    plan,
                    Path(path).resolve(),
                    as_of,
                    incremental=incremental,
                    batch_rows=batch_rows,
                    verify_rows=verify_rows,
                    cleanup=cleanup,
                    cleanup_every=cleanup_every,
                    duckdb_memory_limit=duckdb_memory_limit,
                    sqlite_strategy=sqlite_strategy,
                    rebuild_share=rebuild_share,
                    progress=progress,
                )
            )
            if record_interval:
                # Same bookkeeping as FeatureStore.materialize (what `feast feature-views describe` and
                # materialize_incremental read); one registry commit for the run.
                store.registry.apply_materialization(
                    plan.view, store.project, as_of - timedelta(seconds=1), as_of + timedelta(seconds=1)
                )
    finally:
        target.close()
    report = BulkReport(target.kind, store.project, as_of.isoformat(), tuple(reports), time.perf_counter() - started)
    log.info(
        "bulk materialized %d rows (%d written, %d unchanged) in %.1fs: %.0f rows/s",
        report.rows_read,
        report.rows_written,
        report.rows_skipped,
        report.seconds,
        report.rows_per_second,
    )
    return report


def online_state(store: Any, settings: Settings, views: list[str]) -> dict[str, BulkState | None]:
    """The recorded bulk state (snapshot and as-of watermark) per view; None where there is none."""
    target = open_target(store, settings)
    try:
        return {v: target.read_state(v) for v in views}
    finally:
        target.close()


def clear_online_state(store: Any, settings: Settings, views: list[str]) -> None:
    """Forget the recorded states, so the next bulk run rewrites these views in full."""
    target = open_target(store, settings)
    try:
        for v in views:
            target.clear_state(v)
    finally:
        target.close()


def open_target(store: Any, settings: Settings) -> Target:
    """The bulk target for `store`'s online store (Redis or SQLite); anything else has no bulk path."""
    online = store.config.online_store
    kind = getattr(online, "type", "")
    if kind == "redis" or type(online).__name__ == "RedisOnlineStoreConfig":
        return RedisTarget(store)
    if kind == "sqlite" or str(kind).endswith("SqliteOnlineStore"):
        return SqliteTarget(store, settings)
    raise UnsupportedOnlineStoreError(f"online store {kind!r} has no bulk path; use store.materialize")
