"""The point-in-time feature join of the training set on Spark: what DuckDB's ASOF JOIN (and Feast's
`get_historical_features`) does, for data that does not fit one machine.

For each view and each impression at t: the latest snapshot row of the same entity key with
event_timestamp ≤ t − 1 µs, dropped when older than the ttl (Feast's rule). Spark has no ASOF join; the
equivalent is one pass per view over the union of probes (impressions, at t − 1 µs) and snapshot rows, partitioned
by the entity key and ordered by time, where each probe takes the last snapshot row before it (`last(...,
ignorenulls)` over a running window). A snapshot row sorts before a probe at the same microsecond, so "at or
before" holds exactly. The views' columns are then joined back onto the impressions by event_id.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from freqcap.adapters.spark.files import read_parquet_tree, write_one_file
from freqcap.adapters.spark.runtime import spark_session
from freqcap.adapters.spark.training_impressions import spark_impressions
from freqcap.config import SparkConfig
from freqcap.domain.training.config import ConversionModelConfig
from freqcap.layout import offline_root

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
_US = 1_000_000
# `_probe` numbers the impressions: event ids need not be unique when deduplication is off.
PROBE_COLUMNS = ("_probe", "event_id", "user_id", "advertiser_id", "campaign_id", "ad_id", "ts_us")


def view_keys(view: str) -> list[str]:
    """The entity key of a feature view: `user` is keyed by user; `user_<level>` by (user, <level>_id)."""
    return ["user_id"] if view == "user" else ["user_id", f"{view.removeprefix('user_')}_id"]


def _view_asof(
    spark: SparkSession, probes: DataFrame, snapshot_dir: Path, view: str, feats: list[str], ttl_us: int, stamp: bool
) -> DataFrame:
    """_probe + `<view>__<feature>` (+ `<view>__snapshot_ts`) for every probe, null where no fresh snapshot."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = view_keys(view)
    snaps = read_parquet_tree(spark, snapshot_dir)
    snap_time = F.unix_micros(F.col("event_timestamp"))
    snap_rows = snaps.select(
        *keys,
        F.lit(None).cast("long").alias("_probe"),
        snap_time.alias("_t"),
        F.lit(0).alias("_side"),  # snapshots first at equal times: a snapshot at t − 1 µs is "at or before"
        F.struct(*[F.col(f) for f in feats], snap_time.alias("_snap_us")).alias("_row"),
    )
    probe_rows = probes.select(
        *keys,
        "_probe",
        (F.col("ts_us") - 1).alias("_t"),
        F.lit(1).alias("_side"),
        F.lit(None).cast(snap_rows.schema["_row"].dataType).alias("_row"),
    )
    running = Window.partitionBy(*keys).orderBy("_t", "_side").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    matched = (
        snap_rows.unionByName(probe_rows)
        .withColumn("_match", F.last("_row", ignorenulls=True).over(running))
        .where(F.col("_side") == 1)
    )
    fresh = F.col("_match._snap_us") >= F.col("_t") - ttl_us
    cols = [F.when(fresh, F.col(f"_match.{f}")).alias(f"{view}__{f}") for f in feats]
    if stamp:
        cols.append(F.when(fresh, F.timestamp_micros(F.col("_match._snap_us"))).alias(f"{view}__snapshot_ts"))
    return matched.select("_probe", *cols)


def spark_asof_join(
    spark: SparkSession,
    probes_path: Path,
    repo_dir: Path,
    refs: tuple[str, ...],
    ttl: timedelta,
    out_path: Path,
    snapshot_ts: bool = False,
) -> int:
    """Write event_id + one column per ref (`view__feature`) for every impression in `probes_path` (Parquet with
    `PROBE_COLUMNS`) to the single Parquet file `out_path`; returns its rows. Columns as `duckdb.training_set.
    asof_join` makes them, so the rest of the training set build is shared."""
    started = time.perf_counter()
    ttl_us = int(ttl.total_seconds() * _US)
    probes = read_parquet_tree(spark, probes_path).select(*PROBE_COLUMNS)
    views = sorted({r.partition(":")[0] for r in refs})
    joined = probes.select("_probe", "event_id")
    for view in views:
        feats = [r.partition(":")[2] for r in refs if r.partition(":")[0] == view]
        part = _view_asof(spark, probes, offline_root(repo_dir) / view, view, feats, ttl_us, snapshot_ts)
        joined = joined.join(part, on="_probe", how="left")
    rows = write_one_file(joined.drop("_probe"), out_path)
    log.info("spark point-in-time join: %d rows, %d views in %.1fs", rows, len(views), time.perf_counter() - started)
    return rows


def spark_join(
    con: duckdb.DuckDBPyConnection,
    spark_config: SparkConfig,
    repo_dir: Path,
    refs: tuple[str, ...],
    ttl: timedelta,
    work_dir: Path,
    table: str = "imps",
    out: str = "feats",
    snapshot_ts: bool = False,
) -> None:
    """DuckDB table `out` (event_id + one column per ref), as `duckdb.training_set.asof_join` makes it, computed
    on Spark: the impressions of DuckDB table `table` go to Spark as Parquet and the joined columns come back.
    Scratch files live in `work_dir` (beside the training set: they are as large as the impressions)."""
    scratch = Path(tempfile.mkdtemp(prefix=".spark-join-", dir=work_dir))
    try:
        probes, joined = scratch / "probes.parquet", scratch / "joined.parquet"
        con.execute(
            f"COPY (SELECT row_number() OVER () AS _probe, event_id, user_id, advertiser_id, campaign_id, ad_id, ts_us "
            f"FROM {table}) TO '{probes}' (FORMAT parquet)"
        )
        with spark_session(spark_config) as spark:
            spark_asof_join(spark, probes, repo_dir, refs, ttl, joined, snapshot_ts)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT * FROM read_parquet('{joined}')")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def spark_impressions_into(
    con: duckdb.DuckDBPyConnection,
    spark_config: SparkConfig,
    events: str | Path,
    config: ConversionModelConfig,
    window: tuple[datetime, datetime, datetime],
    work_dir: Path,
    deduplicate: bool = True,
    table: str = "imps",
) -> int:
    """DuckDB table `table` as `duckdb.training_set.create_impressions` makes it, computed on Spark
    (`freqcap.adapters.spark.training_impressions`): `window` is (start, end, horizon). Returns its rows."""
    start, end, horizon = window
    scratch = Path(tempfile.mkdtemp(prefix=".spark-imps-", dir=work_dir))
    try:
        path = scratch / "imps.parquet"
        with spark_session(spark_config) as spark:
            spark_impressions(spark, events, config, start, end, horizon, path, deduplicate)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM read_parquet('{path}')")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
