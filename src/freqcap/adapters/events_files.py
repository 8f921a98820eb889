"""Event directories as Parquet files (Hive partitions allowed): the glob that reads them, the writers.

Where side tables sit next to an events directory (`users.parquet`, `ads.parquet`) is `freqcap.layout`'s.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.domain.events import ADS_SCHEMA, EVENT_SCHEMA


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
