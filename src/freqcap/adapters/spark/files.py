"""Parquet in and out of Spark in freqcap's layout: event directories in, one file per table out.

Spark writes a directory of part files; the feature layout (and every reader of it: the gates, the snapshot
publisher, Feast) expects one Parquet file per table. `write_one_file` writes the parts to a scratch directory
beside the target and concatenates their row groups into the target (no re-aggregation, bounded memory: one row
group at a time), then renames it into place, so a reader never sees half a table.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def read_parquet_tree(spark: SparkSession, path: str | Path) -> DataFrame:
    """Every `*.parquet` file under a directory (or one file), as DuckDB's `**/*.parquet` glob with
    `hive_partitioning = false` reads it: no partition columns are inferred from `key=value` folder names."""
    path = Path(path)
    if path.is_file():
        return spark.read.parquet(str(path))
    if not path.is_dir():
        raise FileNotFoundError(f"Parquet path {path} does not exist")
    if not any(path.rglob("*.parquet")):
        raise FileNotFoundError(f"no Parquet files under {path}")
    return spark.read.option("recursiveFileLookup", "true").option("pathGlobFilter", "*.parquet").parquet(str(path))


def write_one_file(frame: DataFrame, target: Path) -> int:
    """Write `frame` to the single Parquet file `target` (snappy, UTC microsecond timestamps); returns its rows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.parts"
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        frame.write.mode("overwrite").option("compression", "snappy").parquet(str(scratch))
        parts = sorted(scratch.glob("part-*.parquet"))
        if not parts:  # Spark writes no part for an empty result on some plans: keep the schema anyway
            frame.limit(0).coalesce(1).write.mode("overwrite").parquet(str(scratch))
            parts = sorted(scratch.glob("part-*.parquet"))
        rows = 0
        # Spark's own schema metadata is dropped: the file is freqcap's table, not a Spark dataset.
        with pq.ParquetWriter(tmp, pq.read_schema(parts[0]).remove_metadata(), compression="snappy") as writer:
            for part in parts:
                source = pq.ParquetFile(part)
                for group in range(source.num_row_groups):
                    chunk = source.read_row_group(group)
                    rows += chunk.num_rows
                    writer.write_table(chunk.replace_schema_metadata(None))
        tmp.replace(target)
        return rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        tmp.unlink(missing_ok=True)
