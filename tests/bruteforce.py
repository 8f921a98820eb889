"""Independent, loop-by-loop computations of freqcap's feature semantics (docs: Concepts > Features), for tests only."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

PREFIX = {"impression": "imp", "click": "clk", "conversion": "conv"}
WINDOW_SECONDS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "28d": 28 * 86400}


def tier_features(
    events: list[dict[str, Any]], as_of: datetime, level: str, half_life_seconds: float
) -> dict[tuple[str, str], dict[str, Any]]:
    """(user_id, <level>_id) -> features, for events given as dicts of the event contract."""
    out: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for row in events:
        age = (as_of - row["event_ts"]).total_seconds()
        if age < 0 or age >= WINDOW_SECONDS["28d"]:  # window is (T - W, T]
            continue
        feats = out[(row["user_id"], row[f"{level}_id"])]
        for label, seconds in WINDOW_SECONDS.items():
            feats[f"{PREFIX[row['event_type']]}_{label}"] += 1 if age < seconds else 0
        if row["event_type"] == "impression":
            feats["imp_decayed"] += 2.0 ** (-age / half_life_seconds)
            last = feats.get("last_imp_ts")
            feats["last_imp_ts"] = row["event_ts"] if last is None or row["event_ts"] > last else last
    return {k: dict(v) for k, v in out.items()}


def full_row(feats: dict[str, Any]) -> dict[str, Any]:
    """Fill in zeros for counts a pair did not have."""
    row = {f"{p}_{w}": int(feats.get(f"{p}_{w}", 0)) for p in PREFIX.values() for w in WINDOW_SECONDS}
    row["imp_decayed"] = float(feats.get("imp_decayed", 0.0))
    row["last_imp_ts"] = feats.get("last_imp_ts")
    return row
