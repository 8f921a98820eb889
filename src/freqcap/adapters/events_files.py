"""Event directories as Parquet files (Hive partitions allowed): the glob that reads them, the writers, and the
retention of raw events (a file goes once its newest event is past the horizon).

Where side tables sit next to an events directory (`users.parquet`, `ads.parquet`) is `freqcap.layout`'s.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from freqcap.domain.events import ADS_SCHEMA, EVENT_SCHEMA

log = logging.getLogger(__name__)


def parquet_glob(events_dir: str | Path) -> str:
    """The DuckDB glob that matches every Parquet file under an events directory (or the file itself)."""
    path = Path(events_dir)
    if path.is_file():
        return str(path)
    if not path.is_dir():
        raise FileNotFoundError(f"events path {path} does not exist")
    return str(path / "**" / "*.parquet")


def write_events(table: pa.Table, path: str | Path) -> Path:
    """Write an event table in the contract's schema (microsecond UTC timestamps) to one Parquet file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA), path)
    return path


def write_ads(table: pa.Table, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.select(ADS_SCHEMA.names).cast(ADS_SCHEMA), path)
    return path


def newest_event_ts(path: Path) -> datetime | None:
    """The newest `event_ts` in one events Parquet file: from the row groups' statistics when every group has them,
    else by reading the column; None when the file has no such column or cannot be read (it is then kept)."""
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        if "event_ts" not in names:
            return None
        column = names.index("event_ts")
        meta = parquet.metadata
        maxima = []
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(column).statistics
            if stats is None or not stats.has_min_max:
                maxima = None
                break
            maxima.append(stats.max)
        if maxima is None:
            values = parquet.read(columns=["event_ts"]).column(0)
            maxima = [pc.max(values).as_py()]
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s: cannot read its event_ts (%s); kept", path, exc)
        return None
    found = [m for m in maxima if m is not None]
    if not found:
        return None
    newest = max(found)
    return newest if newest.tzinfo else newest.replace(tzinfo=UTC)


def prune_event_files(events_dir: Path, cutoff: datetime, dry_run: bool = False) -> int:
    """Remove the Parquet files under `events_dir` whose newest event is older than `cutoff` (any layout: Hive
    partitions or flat files); directories left empty go too. Returns the number of files."""
    events_dir = Path(events_dir)
    if not events_dir.is_dir():
        return 0
    removed = 0
    for path in sorted(events_dir.rglob("*.parquet")):
        newest = newest_event_ts(path)
        if newest is None or newest >= cutoff:
            continue
        if not dry_run:
            path.unlink()
        removed += 1
    if not dry_run:
        for folder in sorted((p for p in events_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
    if removed:
        log.info(
            "%s %d event files in %s older than %s",
            "would remove" if dry_run else "removed",
            removed,
            events_dir,
            cutoff.isoformat(),
        )
    return removed
