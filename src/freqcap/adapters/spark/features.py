"""The three feature tiers and the user table on Spark: the same tables as `freqcap.adapters.duckdb.features`.

The same SQL as the DuckDB build (`freqcap.adapters.feature_sql`, Spark's dialect): one GROUP BY at the (user, ad)
grain, the tiers and the user table rolled up from it. The (user, ad) table is cached (memory, then disk) because
four outputs read it; timestamps go through `unix_micros` / `timestamp_micros` in a UTC session
(`freqcap.adapters.spark.runtime`); the tests hold the two engines' tables equal.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from freqcap.adapters.feature_sql import SPARK, fine_grain_sql, scanned_sql, tier_sql, user_sql
from freqcap.adapters.spark.files import read_parquet_tree, write_one_file
from freqcap.config import FeaturesConfig
from freqcap.domain.features import USER_TABLE, FeatureBuild, tier_tables
from freqcap.layout import feature_table_path, users_path_for

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
_US = 1_000_000
EVENT_COLUMNS = ("event_id", "event_type", "event_ts", "user_id", "advertiser_id", "campaign_id", "ad_id")


def build_features_spark(
    spark: SparkSession,
    events: str | Path,
    as_of: datetime,
    out_dir: str | Path,
    config: FeaturesConfig,
    *,
    users: str | Path | None = None,
    deduplicate: bool = True,
) -> FeatureBuild:
    """Aggregate events (a Parquet file or directory) as of `as_of` into one Parquet file per table, on `spark`.

    The same contract as `freqcap.adapters.duckdb.features.build_features`: `deduplicate` keeps the earliest copy of
    each `event_id`; timestamps are UTC microseconds; `event_timestamp` = as_of; files at `layout.feature_table_path`.
    """
    from pyspark import StorageLevel

    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware (UTC)")
    started = time.perf_counter()
    as_of = as_of.astimezone(UTC)
    as_of_us = int(as_of.timestamp() * _US)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]  # view names private to this build (a session may run several)
    raw, fine_view, users_view = f"freqcap_events_{tag}", f"freqcap_fine_{tag}", f"freqcap_users_{tag}"
    read_parquet_tree(spark, events).select(*EVENT_COLUMNS).createOrReplaceTempView(raw)
    source = raw
    if deduplicate:  # the earliest copy of each event_id, as DuckDB's DISTINCT ON (event_id) ... ORDER BY event_ts
        source = f"""(SELECT {", ".join(EVENT_COLUMNS)} FROM (
            SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY event_ts) AS _copy FROM {raw}
        ) WHERE _copy = 1)"""
    fine = spark.sql(fine_grain_sql(source, config, as_of_us, SPARK)).persist(StorageLevel.MEMORY_AND_DISK)
    users_path = users_path_for(events, users) if Path(events).is_dir() else (Path(users) if users else None)
    try:
        fine.createOrReplaceTempView(fine_view)
        events_scanned = spark.sql(scanned_sql(fine_view, config)).collect()[0]["n"]
        paths: dict[str, Path] = {}
        rows: dict[str, int] = {}
        for table in tier_tables(config):
            path = feature_table_path(out, table.name)
            rows[table.name] = write_one_file(spark.sql(tier_sql(table, config, fine_view, as_of_us, SPARK)), path)
            paths[table.name] = path
            log.info("tier %s: %d pairs -> %s (spark)", table.name, rows[table.name], path)
        if users_path is not None:
            spark.read.parquet(str(users_path)).select("user_id", "audience").createOrReplaceTempView(users_view)
        user_query = user_sql(fine_view, config, users_view if users_path else None, as_of_us, SPARK)
        paths[USER_TABLE] = feature_table_path(out, USER_TABLE)
        rows[USER_TABLE] = write_one_file(spark.sql(user_query), paths[USER_TABLE])
    finally:
        fine.unpersist()
        for view in (raw, fine_view, users_view):
            spark.catalog.dropTempView(view)
    notes = [] if users_path else ["no users.parquet found: audience is 'unknown' for every user"]
    seconds = time.perf_counter() - started
    log.info("built %s in %.2fs (spark)", rows, seconds)
    return FeatureBuild(as_of, paths, rows, int(events_scanned or 0), seconds, notes)
