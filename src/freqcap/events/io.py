"""Reading and writing event directories (Parquet files, Hive partitions allowed)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.events.schema import ADS_SCHEMA, EVENT_SCHEMA


def parquet_glob(events_dir: str | Path) -> str:
    """The DuckDB glob that matches every Parquet file under an events directory (or the file itself)."""
    path = Path(events_dir)
    if path.is_file():
        return str(path)
    if not path.is_dir():
        raise FileNotFoundError(f"events path {path} does not exist")
    return str(path / "**" / "*.parquet")


def users_path_for(events_dir: str | Path, users: str | Path | None = None) -> Path | None:
    """`users.parquet` next to the events directory (same parent folder) unless `users` names one."""
    if users is not None:
        return Path(users)
    candidate = Path(events_dir).resolve().parent / "users.parquet"
    return candidate if candidate.exists() else None


def ads_path_for(events_dir: str | Path) -> Path | None:
    """The optional ad catalog `ads.parquet` next to the events directory."""
    candidate = Path(events_dir).resolve().parent / "ads.parquet"
    return candidate if candidate.exists() else None


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
