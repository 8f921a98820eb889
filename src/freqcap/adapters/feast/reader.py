"""Reading one user's frequency state for a set of candidates from the Feast online store (one call per request)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from freqcap.config import FeaturesConfig
from freqcap.domain.features import USER_TABLE, serving_columns, tier_tables
from freqcap.domain.policy.engine import LEVELS, Candidate, EntityState

UNKNOWN_AUDIENCE = "unknown"
DEFAULT_SIGNAL_TIER = "impression_only"


@dataclass(frozen=True)
class UserState:
    audience: str
    signal_tier: str
    states: dict[tuple[str, str], EntityState]
    # The stream was stale, down or had a gap: the counts are batch alone (the response says `stream_stale`).
    stream_stale: bool = False


class FeatureReader(Protocol):
    def read(self, user_id: str, candidates: Sequence[Candidate]) -> UserState: ...


def _as_count(value: Any) -> int:
    return int(value) if value is not None else 0


def _as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


class FeastReader:
    """User attributes plus the three tier views for the distinct (user, entity) keys, via `get_online_features`.

    One call per request: each entity row carries all join keys; Feast reads each view by its own keys, deduplicated.
    """

    def __init__(self, store: Any, features: FeaturesConfig):
        self.store = store
        self.tables = {t.level: t for t in tier_tables(features)}
        # view column -> window seconds, for the impression counts of each tier
        self.windows = {
            t.level: {f"imp_{label}": sec for label, sec in features.tier(t.level).window_seconds.items()}
            for t in self.tables.values()
        }
        self.refs = [f"{USER_TABLE}:audience", f"{USER_TABLE}:signal_tier"]
        # The columns `serving_columns` names (the fast readers read the same), per level.
        self.columns = {cols.level: cols for cols in serving_columns(features)[1]}
        for level, table in self.tables.items():
            self.refs += [f"{table.name}:{c}" for c in self.columns[level].features]

    reads_at = True  # `read` takes the request time (calendar counts)

    def read(self, user_id: str, candidates: Sequence[Candidate], at: datetime | None = None) -> UserState:
        t = at.timestamp() if at is not None else time.time()
        keys = list(dict.fromkeys((c.advertiser_id, c.campaign_id, c.ad_id) for c in candidates))
        rows = [{"user_id": user_id, "advertiser_id": v, "campaign_id": c, "ad_id": a} for v, c, a in keys]
        if not rows:
            rows = [{"user_id": user_id, "advertiser_id": "", "campaign_id": "", "ad_id": ""}]
        got = self.store.get_online_features(features=self.refs, entity_rows=rows, full_feature_names=True).to_dict()
        audience = got[f"{USER_TABLE}__audience"][0] or UNKNOWN_AUDIENCE
        signal_tier = got[f"{USER_TABLE}__signal_tier"][0] or DEFAULT_SIGNAL_TIER
        states: dict[tuple[str, str], EntityState] = {}
        for i, key in enumerate(keys):
            for level in LEVELS:
                table = self.tables[level]
                entity = key[LEVELS.index(level)]
                if (level, entity) in states:
                    continue
                cols = self.columns[level]
                values = [got[f"{table.name}__{c}"][i] for c in cols.features]
                states[(level, entity)] = cols.state(values, _as_count, _as_datetime, t)
        return UserState(audience, signal_tier, states)
