"""The feature tables' SQL, written once for both engines (DuckDB and Spark SQL differ only in two functions).

The plan (`freqcap.adapters.duckdb.features`, `freqcap.adapters.spark.features`): one GROUP BY at the finest grain
(user, ad) computes every window count, one decayed sum per tier half-life and the last impression time; the
campaign and advertiser tiers are exact roll-ups of that table, because every ad belongs to exactly one campaign
and advertiser (validation enforces the hierarchy). Counts add up, decayed sums add up (each uses its own tier's
half-life), last timestamps take the max. Windows are (as_of - W, as_of] in integer microseconds. Calendar windows
(this day, week, month in `features.calendar_time_zone`) are (start, as_of]: for one as-of each start is a constant,
so they are one more age limit each; the tier tables also record each period's start (`<period>_start`, epoch
seconds) so serving can tell whether the batch's period is still the request's.

Literals are written as `CAST(x AS DOUBLE)`: a bare `2.0` is a DECIMAL in Spark SQL (and DuckDB reads both alike).
"""

from __future__ import annotations

from dataclasses import dataclass

from freqcap.config import FeaturesConfig
from freqcap.domain.calendar import PERIODS, period_start
from freqcap.domain.features import COUNT_PREFIXES, TierTable, all_windows, tier_tables, user_windows

_US = 1_000_000


@dataclass(frozen=True)
class Dialect:
    """The two functions the engines name differently: timestamp -> epoch microseconds, and back (UTC)."""

    to_us: str
    from_us: str


DUCKDB = Dialect(to_us="epoch_us", from_us="make_timestamptz")
SPARK = Dialect(to_us="unix_micros", from_us="timestamp_micros")


def _double(value: float) -> str:
    return f"CAST({float(value)!r} AS DOUBLE)"


def calendar_starts(config: FeaturesConfig, as_of_us: int) -> dict[str, int]:
    """Per calendar period, the epoch seconds of the start of the period holding the as-of (in the features' zone)."""
    as_of = as_of_us / _US
    return {p: round(period_start(as_of, p, config.calendar_time_zone)) for p in PERIODS}


def fine_grain_sql(source: str, config: FeaturesConfig, as_of_us: int, d: Dialect) -> str:
    """(user, ad) aggregates covering every tier's windows and half-lives, and the calendar periods."""
    windows = all_windows(config)
    aggs: list[str] = []
    for event_type, prefix in COUNT_PREFIXES.items():
        for w in windows:
            aggs.append(f"count(*) FILTER (WHERE event_type = '{event_type}' AND age_us < {w * _US}) AS {prefix}_{w}s")
    limits = {p: as_of_us - start * _US for p, start in calendar_starts(config, as_of_us).items()}
    for p, limit in limits.items():
        aggs.append(f"count(*) FILTER (WHERE event_type = 'impression' AND age_us < {limit}) AS imp_cal_{p}")
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
                   {d.to_us}(event_ts) AS ts_us, {as_of_us} - {d.to_us}(event_ts) AS age_us
            FROM {source}
        )
        WHERE age_us >= 0 AND age_us < {max(max(windows) * _US, *limits.values())}
        -- campaign and advertiser are functions of the ad: grouping by them too is cheaper than any_value()
        GROUP BY user_id, ad_id, campaign_id, advertiser_id
    """


def scanned_sql(fine: str, config: FeaturesConfig) -> str:
    """How many events of the longest window the (user, ad) table counts."""
    longest = all_windows(config)[-1]
    in_window = " + ".join(f"{p}_{longest}s" for p in COUNT_PREFIXES.values())
    return f"SELECT coalesce(sum({in_window}), 0) AS n FROM {fine}"


def tier_sql(table: TierTable, config: FeaturesConfig, fine: str, as_of_us: int, d: Dialect) -> str:
    """One tier from the (user, ad) table, window columns renamed to their configured labels, `event_timestamp`
    last. The ad tier *is* the fine-grained table (one row per (user, ad)): a projection, not a GROUP BY."""
    tier = config.tier(table.level)
    finest = table.level == "ad"
    agg = (lambda expr: expr) if finest else (lambda expr: f"sum({expr})")
    cols: list[str] = []
    for prefix in COUNT_PREFIXES.values():
        for label, seconds in tier.window_seconds.items():
            cols.append(f"CAST({agg(f'{prefix}_{seconds}s')} AS BIGINT) AS {prefix}_{label}")
    for p, start in calendar_starts(config, as_of_us).items():
        cols.append(f"CAST({agg(f'imp_cal_{p}')} AS BIGINT) AS imp_{p}")
        cols.append(f"CAST({start} AS BIGINT) AS {p}_start")
    cols.append(f"CAST(coalesce({agg(f'decayed_{table.level}')}, {_double(0.0)}) AS DOUBLE) AS {table.decayed_column}")
    last = f"last_imp_{table.level}" if finest else f"max(last_imp_{table.level})"
    cols.append(f"{d.from_us}({last}) AS {table.last_ts_column}")
    cols.append(f"{d.from_us}({as_of_us}) AS event_timestamp")
    longest = max(tier.window_seconds.values())
    # Active: an event in the longest window, or an impression this week or month (which may start earlier).
    activity = " + ".join([*(f"{p}_{longest}s" for p in COUNT_PREFIXES.values()), "imp_cal_week", "imp_cal_month"])
    key = table.entity_column
    group = "" if finest else f"GROUP BY user_id, {key}"
    return f"SELECT user_id, {key}, {', '.join(cols)} FROM {fine} WHERE {activity} > 0 {group}"


def user_sql(fine: str, config: FeaturesConfig, users: str | None, as_of_us: int, d: Dialect) -> str:
    """The user table: activity counts rolled up by user, the signal tier and the audience (from `users`, a
    relation with `user_id, audience`, when there is one), `event_timestamp` last."""
    w = user_windows(config)
    lb = w["lookback"]
    base = f"""
        SELECT user_id, CAST(sum(imp_{w["24h"]}s) AS BIGINT) AS imp_24h, CAST(sum(imp_{w["7d"]}s) AS BIGINT) AS imp_7d,
               CAST(sum(clk_{lb}s) AS BIGINT) AS clk_28d, CAST(sum(conv_{lb}s) AS BIGINT) AS conv_28d,
               sum(imp_{lb}s + clk_{lb}s + conv_{lb}s) AS active
        FROM {fine} GROUP BY user_id
    """
    audience, join = "'unknown'", ""
    if users is not None:
        join = f"LEFT JOIN {users} u ON u.user_id = b.user_id"
        audience = "coalesce(u.audience, 'unknown')"
    return f"""
        SELECT b.user_id, {audience} AS audience,
               CASE WHEN b.conv_28d > 0 THEN 'converter' WHEN b.clk_28d > 0 THEN 'engaged'
                    ELSE 'impression_only' END AS signal_tier,
               b.imp_24h, b.imp_7d, b.clk_28d, b.conv_28d, {d.from_us}({as_of_us}) AS event_timestamp
        FROM ({base}) b {join}
        WHERE b.active > 0
    """
