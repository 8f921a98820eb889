"""Pure description of the batch feature tables: names, keys and columns. No I/O.

Semantics: for as-of time T, tier L and window W, `imp_W` counts impressions with event_ts in
(T − W, T]; `clk_W` and `conv_W` likewise; `imp_decayed` = Σ 2^(−(T − ts)/h_L) over the tier's impressions in its
longest window; `last_imp_ts` is the latest impression in that window. Events after T never count. Calendar
windows (`freqcap.domain.calendar`): `imp_day`, `imp_week`, `imp_month` count impressions in (start, T] where start
begins T's day, ISO week or month in `features.calendar_time_zone`, and `day_start`, `week_start`, `month_start`
hold those starts (epoch seconds). Tables are sparse: a (user, entity) pair appears only if it has an event in the
tier's longest window or an impression in the current week or month.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from freqcap.config import FeaturesConfig, TierConfig, parse_duration
from freqcap.domain.calendar import PERIODS, period_starts, resolve_calendar
from freqcap.domain.policy.engine import EntityState

# Event type -> column prefix.
COUNT_PREFIXES: dict[str, str] = {"impression": "imp", "click": "clk", "conversion": "conv"}
USER_TABLE = "user"


@dataclass(frozen=True)
class TierTable:
    """One feature table keyed by (user_id, <level>_id)."""

    level: str
    name: str
    entity_column: str
    count_columns: tuple[str, ...]
    decayed_column: str = "imp_decayed"
    last_ts_column: str = "last_imp_ts"
    # Per calendar period: impressions since its start (`imp_<period>`) and that start (`<period>_start`).
    calendar_columns: tuple[str, ...] = tuple(c for p in PERIODS for c in (f"imp_{p}", f"{p}_start"))

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return (*self.count_columns, *self.calendar_columns, self.decayed_column, self.last_ts_column)


def tier_table(tier: TierConfig) -> TierTable:
    counts = tuple(f"{prefix}_{w}" for prefix in COUNT_PREFIXES.values() for w in tier.windows)
    return TierTable(
        level=tier.level, name=f"user_{tier.level}", entity_column=f"{tier.level}_id", count_columns=counts
    )


def tier_tables(config: FeaturesConfig) -> tuple[TierTable, ...]:
    """The three tier tables in hierarchy order (advertiser, campaign, ad)."""
    order = {"advertiser": 0, "campaign": 1, "ad": 2}
    return tuple(tier_table(t) for t in sorted(config.tiers, key=lambda t: order[t.level]))


def user_windows(config: FeaturesConfig) -> dict[str, int]:
    """Seconds of the user table's windows: 24 h, 7 d and the signal lookback."""
    return {
        "24h": 86400,
        "7d": 7 * 86400,
        "lookback": int(parse_duration(config.signal_lookback).total_seconds()),
    }


def all_windows(config: FeaturesConfig) -> list[int]:
    """Every window (seconds) any table needs, shortest first: the engines count each once per (user, ad)."""
    return sorted({s for t in config.tiers for s in t.window_seconds.values()} | set(user_windows(config).values()))


USER_FEATURE_COLUMNS: tuple[str, ...] = (
    "audience",
    "signal_tier",
    "imp_24h",
    "imp_7d",
    "clk_28d",
    "conv_28d",
)


@dataclass(frozen=True)
class FeatureBuild:
    """What a build wrote: one Parquet file per tier plus the user table, with row counts."""

    as_of: datetime
    paths: dict[str, Path]
    rows: dict[str, int]
    events_scanned: int
    seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServingColumns:
    """The columns read from one tier view, in request order: window counts, last impression, conversions."""

    level: str
    view: str
    join_keys: tuple[str, ...]  # as the view declares them, e.g. ("user_id", "ad_id")
    window_seconds: tuple[int, ...]
    # imp_<w>..., last_imp_ts, conv_<w>..., clk_<w>..., then imp_<period>, <period>_start per calendar period
    features: tuple[str, ...]
    zone: str = "UTC"  # the calendar periods' time zone

    def calendar(self, values: Sequence[Any], count: Callable[[Any], int]) -> dict[str, tuple[int, float]] | None:
        """Per calendar period, the batch row's (count, period start); None when the row has no calendar values."""
        n = len(self.window_seconds)
        raw = values[3 * n + 1 : 3 * n + 1 + 2 * len(PERIODS)]
        if len(raw) < 2 * len(PERIODS) or raw[1] is None:
            return None
        return {p: (count(raw[2 * i]), float(count(raw[2 * i + 1]))) for i, p in enumerate(PERIODS)}

    def state(
        self,
        values: Sequence[Any],
        count: Callable[[Any], int],
        timestamp: Callable[[Any], Any],
        t: float,
    ) -> EntityState:
        """The engine's state from the values of `features` (in order), decoded by `count` and `timestamp`; the
        calendar counts as of `t` (epoch seconds, the request time) from the batch alone (`resolve_calendar`)."""
        n = len(self.window_seconds)
        secs = self.window_seconds
        convs = dict(zip(secs, map(count, values[n + 1 : 2 * n + 1]), strict=True))
        clicks = dict(zip(secs, map(count, values[2 * n + 1 : 3 * n + 1]), strict=True))
        counts: dict[Any, int] = dict(zip(secs, map(count, values[:n]), strict=True))
        counts.update(self.calendar_counts(self.calendar(values, count), t, None))
        return EntityState(
            counts=counts,
            last_imp_ts=timestamp(values[n]),
            conversions=convs[secs[-1]],
            clicks=clicks[secs[-1]],
            click_counts=clicks,
            conversion_counts=convs,
        )

    def calendar_counts(
        self,
        batch: dict[str, tuple[int, float]] | None,
        t: float,
        stream: tuple[float, Callable[[float, float], int]] | None,
    ) -> dict[Any, int]:
        """Calendar counts keyed by (period, zone) at `t` (epoch seconds); `stream`: (batch cut-off, the stream's
        events in (lo, hi]) when the stream is usable."""
        out: dict[Any, int] = {}
        between = stream[1] if stream else None
        cutoff = stream[0] if stream else float("nan")
        for key, start_t in period_starts(t, self.zone):
            row = (*batch[key[0]], cutoff) if batch is not None else None
            out[key] = resolve_calendar(t, start_t, row, between)
        return out


def serving_columns(features: FeaturesConfig) -> tuple[tuple[str, ...], list[ServingColumns]]:
    """What `decide` reads online (and FeastReader asks Feast for): the user's audience and signal tier; per tier
    the impression count of every window, the last impression time, and the conversions and clicks of every window
    (the policy's stops and their cool-down)."""
    tiers = []
    for table in tier_tables(features):
        tier = features.tier(table.level)
        windows = tier.window_seconds
        cols = (
            *[f"imp_{w}" for w in windows],
            table.last_ts_column,
            *[f"conv_{w}" for w in windows],
            *[f"clk_{w}" for w in windows],
            *table.calendar_columns,
        )
        tiers.append(
            ServingColumns(
                level=table.level,
                view=table.name,
                join_keys=("user_id", table.entity_column),
                window_seconds=tuple(windows.values()),
                features=cols,
                zone=features.calendar_time_zone,
            )
        )
    return ("audience", "signal_tier"), tiers
