"""Backfill of daily feature snapshots: what the features DAG would have published over time, in one call.

A point-in-time training set needs a snapshot of every feature table at (or shortly before) every impression.
The features DAG writes one per run; for history it never ran over, `publish_daily_snapshots` aggregates the
events as of each midnight (`build_features`), publishes the snapshot with its tombstones (`publish_snapshot`)
in ascending time order, as tombstones require, and applies the Feast definitions once at the end.
Online materialization is not part of a backfill: the training set reads the offline store only.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from freqcap.adapters.feast.snapshots import list_snapshots, publish_snapshot
from freqcap.adapters.feast.store import apply_definitions, open_store
from freqcap.adapters.feature_engine import feature_builder
from freqcap.config import Settings
from freqcap.domain.features import USER_TABLE, tier_tables
from freqcap.layout import DataLayout, offline_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillResult:
    repo_dir: Path
    published: tuple[datetime, ...]
    skipped: tuple[datetime, ...]
    rows: dict[str, int]  # table -> rows over all published snapshots (tombstones not included)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "feast_repo": str(self.repo_dir),
            "published": [t.isoformat() for t in self.published],
            "skipped": [t.isoformat() for t in self.skipped],
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }


def daily_times(start: datetime, end: datetime, every: timedelta = timedelta(days=1)) -> list[datetime]:
    """As-of times `start, start + every, ...` up to and including `end` (both aware)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if every <= timedelta(0):
        raise ValueError("every must be positive")
    out, t = [], start.astimezone(UTC)
    while t <= end:
        out.append(t)
        t += every
    return out


def publish_daily_snapshots(
    events: str | Path,
    start: datetime,
    end: datetime,
    settings: Settings,
    *,
    repo_dir: Path | None = None,
    users: str | Path | None = None,
    every: timedelta = timedelta(days=1),
    deduplicate: bool = True,
    skip_existing: bool = True,
    store: Any = None,
) -> BackfillResult:
    """Publish one snapshot of every feature table per `every` from `start` to `end` (inclusive) into the
    offline store of the Feast repo (default: the data directory's, `DataLayout.feast_repo`), then apply the
    definitions.

    `skip_existing` leaves as-of times that already have a snapshot of every table alone (a resumed backfill).
    Snapshots must be published in time order; publishing an older as-of after a newer one leaves the newer
    one's tombstones computed against the wrong predecessor, so re-run the later days too in that case.
    """
    started = time.perf_counter()
    repo = (repo_dir or DataLayout.of(settings).feast_repo).resolve()
    root = offline_root(repo)
    tables = [t.name for t in tier_tables(settings.features)] + [USER_TABLE]
    existing = {name: {ts for ts, _ in list_snapshots(root, name)} for name in tables}
    published: list[datetime] = []
    skipped: list[datetime] = []
    rows: dict[str, int] = dict.fromkeys(tables, 0)
    todo: list[datetime] = []
    for as_of in daily_times(start, end, every):
        done = skip_existing and all(as_of in existing[name] for name in tables)
        (skipped if done else todo).append(as_of)
    work = Path(tempfile.mkdtemp(prefix="freqcap-backfill-"))
    try:
        # One engine (on Spark: one session, started only when a day needs building) for the whole backfill.
        with ExitStack() as stack:
            build_features = stack.enter_context(feature_builder(settings.features)) if todo else None
            for as_of in todo:
                out = work / as_of.strftime("%Y%m%dT%H%M%SZ")
                build = build_features(events, as_of, out, users=users, deduplicate=deduplicate)
                publish_snapshot(build, root)
                for name, n in build.rows.items():
                    rows[name] = rows.get(name, 0) + n
                published.append(as_of)
                shutil.rmtree(out, ignore_errors=True)
                log.info("backfill: snapshot %s published (%s)", as_of.isoformat(), build.rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    store = store or open_store(settings, repo)
    apply_definitions(store, settings, repo)
    seconds = time.perf_counter() - started
    log.info("backfill: %d snapshots published, %d skipped in %.1fs", len(published), len(skipped), seconds)
    return BackfillResult(repo, tuple(published), tuple(skipped), rows, seconds)
