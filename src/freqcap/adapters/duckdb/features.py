"""Batch aggregation of the three feature tiers with DuckDB, in one scan of the events.

How: one GROUP BY at the finest grain (user, ad) computes every window count, one decayed sum per tier
half-life and the last impression time; the campaign and advertiser tiers are exact roll-ups of that table,
because every ad belongs to exactly one campaign and advertiser (validation enforces the hierarchy).
Counts add up, decayed sums add up (each uses its own tier's half-life), last timestamps take the max.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from freqcap.adapters.events_files import parquet_glob
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

log = logging.getLogger(__name__)
_US = 1_000_000


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fine_grain_sql(source: str, config: FeaturesConfig, as_of_us: int) -> str:
    """(user, ad) aggregates covering every tier's windows and half-lives."""
    tiers = tier_tables(config)
    windows = all_windows(config)
    longest = max(windows)
    aggs: list[str] = []
    for event_type, prefix in COUNT_PREFIXES.items():
        for w in windows:
            aggs.append(f"count(*) FILTER (WHERE event_type = '{event_type}' AND age_us < {w * _US}) AS {prefix}_{w}s")
    for table in tiers:
        tier = config.tier(table.level)
        tier_longest = max(tier.window_seconds.values()) * _US
        aggs.append(
            f"sum(pow(2.0, -age_us / {tier.half_life_seconds * _US!r})) "
            f"FILTER (WHERE event_type = 'impression' AND age_us < {tier_longest}) AS decayed_{table.level}"
        )
        aggs.append(
            f"max(ts_us) FILTER (WHERE event_type = 'impression' AND age_us < {tier_longest}) AS last_imp_{table.level}"
        )
    return f"""
        SELECT user_id, ad_id, campaign_id, advertiser_id, {", ".join(aggs)}
        FROM (
            SELECT user_id, advertiser_id, campaign_id, ad_id, event_type,
                   epoch_us(event_ts) AS ts_us, {as_of_us} - epoch_us(event_ts) AS age_us
            FROM {source}
        )
        WHERE age_us >= 0 AND age_us < {longest * _US}
        -- campaign and advertiser are functions of the ad: grouping by them too is cheaper than any_value()
        GROUP BY user_id, ad_id, campaign_id, advertiser_id
    """


def _tier_sql(table: TierTable, config: FeaturesConfig, fine: str) -> str:
    """Roll the (user, ad) table up to one tier, renaming window columns to their configured labels.

    The ad tier *is* the fine-grained table (one row per (user, ad)), so it is a projection, not a GROUP BY.
    """
    tier = config.tier(table.level)
    finest = table.level == "ad"
    agg = (lambda expr: expr) if finest else (lambda expr: f"sum({expr})")
    cols: list[str] = []
    for prefix in COUNT_PREFIXES.values():
        for label, seconds in tier.window_seconds.items():
            cols.append(f"{agg(f'{prefix}_{seconds}s')}::BIGINT AS {prefix}_{label}")
    cols.append(f"coalesce({agg(f'decayed_{table.level}')}, 0.0)::DOUBLE AS {table.decayed_column}")
    last = f"last_imp_{table.level}" if finest else f"max(last_imp_{table.level})"
    cols.append(f"make_timestamptz({last}) AS {table.last_ts_column}")
    longest = max(tier.window_seconds.values())
    activity = " + ".join(f"{p}_{longest}s" for p in COUNT_PREFIXES.values())
    key = table.entity_column
    if finest:
        return f"SELECT user_id, {key}, {', '.join(cols)} FROM {fine} WHERE {activity} > 0"
    return f"""
        SELECT user_id, {key}, {", ".join(cols)}
        FROM {fine}
        WHERE {activity} > 0
        GROUP BY user_id, {key}
    """


def _user_sql(fine: str, config: FeaturesConfig, users_path: Path | None) -> str:
    """User-level features rolled up from the (user, ad) table: activity counts and the signal tier."""
    w = user_windows(config)
    base = f"""
        SELECT user_id, sum(imp_{w["24h"]}s)::BIGINT AS imp_24h, sum(imp_{w["7d"]}s)::BIGINT AS imp_7d,
               sum(clk_{w["lookback"]}s)::BIGINT AS clk_28d, sum(conv_{w["lookback"]}s)::BIGINT AS conv_28d,
               sum(imp_{w["lookback"]}s + clk_{w["lookback"]}s + conv_{w["lookback"]}s) AS active
        FROM {fine} GROUP BY user_id
    """
    audience, join = "'unknown'", ""
    if users_path is not None:
        join = f"LEFT JOIN read_parquet({_sql_str(str(users_path))}) u USING (user_id)"
        audience = "coalesce(u.audience, 'unknown')"
    return f"""
        SELECT b.user_id, {audience} AS audience,
               CASE WHEN b.conv_28d > 0 THEN 'converter' WHEN b.clk_28d > 0 THEN 'engaged'
                    ELSE 'impression_only' END AS signal_tier,
               b.imp_24h, b.imp_7d, b.clk_28d, b.conv_28d
        FROM ({base}) b {join}
        WHERE b.active > 0
    """


def _copy(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> int:
    """Write a query to Parquet (snappy: ~25% faster to write than zstd here); returns the rows written."""
    return con.execute(f"COPY ({query}) TO {_sql_str(str(path))} (FORMAT parquet)").fetchall()[0][0]


def build_features(
    events: str | Path,
    as_of: datetime,
    out_dir: str | Path,
    config: FeaturesConfig,
    *,
    users: str | Path | None = None,
    deduplicate: bool = True,
    con: duckdb.DuckDBPyConnection | None = None,
) -> FeatureBuild:
    """Aggregate events (a Parquet file or directory) as of `as_of` into one Parquet file per tier.

    `deduplicate` drops repeated `event_id`s (keeping the earliest); pass False for events that already went
    through validation, which deduplicates. Output timestamps are UTC microseconds; `event_timestamp` = as_of.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware (UTC)")
    started = time.perf_counter()
    as_of = as_of.astimezone(UTC)
    as_of_us = int(as_of.timestamp() * _US)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    own = con is None
    con = con or duckdb.connect()
    try:
        con.execute(f"SET threads = {config.threads}")
        con.execute(f"SET memory_limit = {_sql_str(config.memory_limit)}")
        con.execute("SET preserve_insertion_order = false")
        glob = parquet_glob(events)
        columns = "event_id, event_type, event_ts, user_id, advertiser_id, campaign_id, ad_id"
        raw = f"(SELECT {columns} FROM read_parquet({_sql_str(glob)}, hive_partitioning = false))"
        # Dedup keeps the earliest copy of each event_id.
        dedup = f"(SELECT DISTINCT ON (event_id) * FROM {raw} ORDER BY event_id, event_ts)"
        source = dedup if deduplicate else raw
        con.execute(f"CREATE OR REPLACE TEMP TABLE fine AS {_fine_grain_sql(source, config, as_of_us)}")
        longest = all_windows(config)[-1]
        in_window = " + ".join(f"{p}_{longest}s" for p in COUNT_PREFIXES.values())
        events_scanned = con.sql(f"SELECT coalesce(sum({in_window}), 0) FROM fine").fetchall()[0][0]
        ts_literal = f"make_timestamptz({as_of_us})"
        paths: dict[str, Path] = {}
        rows: dict[str, int] = {}
        for table in tier_tables(config):
            path = feature_table_path(out, table.name)
            query = f"SELECT *, {ts_literal} AS event_timestamp FROM ({_tier_sql(table, config, 'fine')})"
            rows[table.name] = _copy(con, query, path)
            paths[table.name] = path
            log.info("tier %s: %d pairs -> %s", table.name, rows[table.name], path)
        users_path = users_path_for(events, users) if Path(events).is_dir() else (Path(users) if users else None)
        user_query = f"SELECT *, {ts_literal} AS event_timestamp FROM ({_user_sql('fine', config, users_path)})"
        user_path = feature_table_path(out, USER_TABLE)
        rows[USER_TABLE] = _copy(con, user_query, user_path)
        paths[USER_TABLE] = user_path
        con.execute("DROP TABLE fine")
    finally:
        if own:
            con.close()
    notes = [] if users_path else ["no users.parquet found: audience is 'unknown' for every user"]
    seconds = time.perf_counter() - started
    log.info("built %s in %.2fs", rows, seconds)
    return FeatureBuild(as_of, paths, rows, int(events_scanned or 0), seconds, notes)
