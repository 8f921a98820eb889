"""The three feature tiers and the user table on Spark: the same tables as `freqcap.adapters.duckdb.features`.

Same plan as the DuckDB build, in Spark SQL: one GROUP BY at the (user, ad) grain counts every window and sums
each tier's decayed impressions (its own half-life) in its longest window; the campaign and advertiser tiers are
roll-ups of that table (an ad belongs to one campaign and one advertiser); the user table rolls up by user. The
(user, ad) table is cached (memory, then disk) because four outputs read it. Windows are (as_of − W, as_of] in
integer microseconds, exactly as in DuckDB; the tests hold the two engines' tables equal.

Spark-specific care: literals are written as DOUBLE (a bare `2.0` is a DECIMAL in Spark SQL), and timestamps go
through `unix_micros` / `timestamp_micros` in a UTC session (`freqcap.adapters.spark.runtime`).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from freqcap.adapters.spark.files import read_parquet_tree, write_one_file
from freqcap.config import FeaturesConfig
from freqcap.domain.features import (
    COUNT_PREFIXES,
    USER_TABLE,
    FeatureBuild,
    TierTable,
    all_windows,
    tier_tables,
    user_windows,
)
from freqcap.layout import feature_table_path, users_path_for

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
_US = 1_000_000
EVENT_COLUMNS = ("event_id", "event_type", "event_ts", "user_id", "advertiser_id", "campaign_id", "ad_id")


def _double(value: float) -> str:
    return f"CAST({float(value)!r} AS DOUBLE)"


def _fine_grain_sql(source: str, config: FeaturesConfig, as_of_us: int) -> str:
    """(user, ad) aggregates covering every tier's windows and half-lives (the DuckDB build's `fine`)."""
    windows = all_windows(config)
    aggs: list[str] = []
    for event_type, prefix in COUNT_PREFIXES.items():
        for w in windows:
            aggs.append(f"count(*) FILTER (WHERE event_type = '{event_type}' AND age_us < {w * _US}) AS {prefix}_{w}s")
    for table in tier_tables(config):
        tier = config.tier(table.level)
        tier_longest = max(tier.window_seconds.values()) * _US
        in_tier = f"event_type = 'impression' AND age_us < {tier_longest}"
        decay = f"pow({_double(2.0)}, -CAST(age_us AS DOUBLE) / {_double(tier.half_life_seconds * _US)})"
        aggs.append(f"sum({decay}) FILTER (WHERE {in_tier}) AS decayed_{table.level}")
        aggs.append(f"max(ts_us) FILTER (WHERE {in_tier}) AS last_imp_{table.level}")
    return f"""
        SELECT user_id, ad_id, campaign_id, advertiser_id, {", ".join(aggs)}
        FROM (
            SELECT user_id, advertiser_id, campaign_id, ad_id, event_type,
                   unix_micros(event_ts) AS ts_us, {as_of_us} - unix_micros(event_ts) AS age_us
            FROM {source}
        )
        WHERE age_us >= 0 AND age_us < {max(windows) * _US}
        GROUP BY user_id, ad_id, campaign_id, advertiser_id
    """


def _tier_sql(table: TierTable, config: FeaturesConfig, fine: str, as_of_us: int) -> str:
    """One tier from the (user, ad) table, window columns renamed to their labels (the ad tier is a projection)."""
    tier = config.tier(table.level)
    finest = table.level == "ad"
    agg = (lambda expr: expr) if finest else (lambda expr: f"sum({expr})")
    cols: list[str] = []
    for prefix in COUNT_PREFIXES.values():
        for label, seconds in tier.window_seconds.items():
            cols.append(f"CAST({agg(f'{prefix}_{seconds}s')} AS BIGINT) AS {prefix}_{label}")
    cols.append(f"CAST(coalesce({agg(f'decayed_{table.level}')}, {_double(0.0)}) AS DOUBLE) AS {table.decayed_column}")
    last = f"last_imp_{table.level}" if finest else f"max(last_imp_{table.level})"
    cols.append(f"timestamp_micros({last}) AS {table.last_ts_column}")
    cols.append(f"timestamp_micros({as_of_us}) AS event_timestamp")
    longest = max(tier.window_seconds.values())
    activity = " + ".join(f"{p}_{longest}s" for p in COUNT_PREFIXES.values())
    key = table.entity_column
    group = "" if finest else f"GROUP BY user_id, {key}"
    return f"SELECT user_id, {key}, {', '.join(cols)} FROM {fine} WHERE {activity} > 0 {group}"


def _user_sql(fine: str, config: FeaturesConfig, users_view: str | None, as_of_us: int) -> str:
    """The user table: activity counts rolled up by user, the signal tier and the audience."""
    w = user_windows(config)
    lb = w["lookback"]
    base = f"""
        SELECT user_id, CAST(sum(imp_{w["24h"]}s) AS BIGINT) AS imp_24h, CAST(sum(imp_{w["7d"]}s) AS BIGINT) AS imp_7d,
               CAST(sum(clk_{lb}s) AS BIGINT) AS clk_28d, CAST(sum(conv_{lb}s) AS BIGINT) AS conv_28d,
               sum(imp_{lb}s + clk_{lb}s + conv_{lb}s) AS active
        FROM {fine} GROUP BY user_id
    """
    audience, join = "'unknown'", ""
    if users_view is not None:
        join = f"LEFT JOIN {users_view} u ON u.user_id = b.user_id"
        audience = "coalesce(u.audience, 'unknown')"
    return f"""
        SELECT b.user_id, {audience} AS audience,
               CASE WHEN b.conv_28d > 0 THEN 'converter' WHEN b.clk_28d > 0 THEN 'engaged'
                    ELSE 'impression_only' END AS signal_tier,
               b.imp_24h, b.imp_7d, b.clk_28d, b.conv_28d, timestamp_micros({as_of_us}) AS event_timestamp
        FROM ({base}) b {join}
        WHERE b.active > 0
    """


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
    fine = spark.sql(_fine_grain_sql(source, config, as_of_us)).persist(StorageLevel.MEMORY_AND_DISK)
    users_path = users_path_for(events, users) if Path(events).is_dir() else (Path(users) if users else None)
    try:
        fine.createOrReplaceTempView(fine_view)
        longest = all_windows(config)[-1]
        in_window = " + ".join(f"{p}_{longest}s" for p in COUNT_PREFIXES.values())
        events_scanned = spark.sql(f"SELECT coalesce(sum({in_window}), 0) AS n FROM {fine_view}").collect()[0]["n"]
        paths: dict[str, Path] = {}
        rows: dict[str, int] = {}
        for table in tier_tables(config):
            path = feature_table_path(out, table.name)
            rows[table.name] = write_one_file(spark.sql(_tier_sql(table, config, fine_view, as_of_us)), path)
            paths[table.name] = path
            log.info("tier %s: %d pairs -> %s (spark)", table.name, rows[table.name], path)
        if users_path is not None:
            spark.read.parquet(str(users_path)).select("user_id", "audience").createOrReplaceTempView(users_view)
        user_sql = _user_sql(fine_view, config, users_view if users_path else None, as_of_us)
        paths[USER_TABLE] = feature_table_path(out, USER_TABLE)
        rows[USER_TABLE] = write_one_file(spark.sql(user_sql), paths[USER_TABLE])
    finally:
        fine.unpersist()
        for view in (raw, fine_view, users_view):
            spark.catalog.dropTempView(view)
    notes = [] if users_path else ["no users.parquet found: audience is 'unknown' for every user"]
    seconds = time.perf_counter() - started
    log.info("built %s in %.2fs (spark)", rows, seconds)
    return FeatureBuild(as_of, paths, rows, int(events_scanned or 0), seconds, notes)
