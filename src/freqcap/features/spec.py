"""Pure description of the batch feature tables: names, keys and columns. No I/O.

Semantics (DESIGN.md): for as-of time T, tier L and window W, `imp_W` counts impressions with event_ts in
(T − W, T]; `clk_W` and `conv_W` likewise; `imp_decayed` = Σ 2^(−(T − ts)/h_L) over the tier's impressions in its
longest window; `last_imp_ts` is the latest impression in that window. Events after T never count. Tables are
sparse: a (user, entity) pair appears only if it has an event in the tier's longest window.
"""

from __future__ import annotations

from dataclasses import dataclass

from freqcap.config import FeaturesConfig, TierConfig

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

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return (*self.count_columns, self.decayed_column, self.last_ts_column)


def tier_table(tier: TierConfig) -> TierTable:
    counts = tuple(f"{prefix}_{w}" for prefix in COUNT_PREFIXES.values() for w in tier.windows)
    return TierTable(
        level=tier.level, name=f"user_{tier.level}", entity_column=f"{tier.level}_id", count_columns=counts
    )


def tier_tables(config: FeaturesConfig) -> tuple[TierTable, ...]:
    """The three tier tables in hierarchy order (advertiser, campaign, ad)."""
    order = {"advertiser": 0, "campaign": 1, "ad": 2}
    return tuple(tier_table(t) for t in sorted(config.tiers, key=lambda t: order[t.level]))


USER_FEATURE_COLUMNS: tuple[str, ...] = (
    "audience",
    "signal_tier",
    "imp_24h",
    "imp_7d",
    "clk_28d",
    "conv_28d",
)
