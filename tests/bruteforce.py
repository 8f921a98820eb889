"""Independent, loop-by-loop computations of freqcap's feature semantics (docs: Concepts > Features), for tests only."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

PREFIX = {"impression": "imp", "click": "clk", "conversion": "conv"}
WINDOW_SECONDS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "28d": 28 * 86400}


def calendar_starts(as_of: datetime, zone: str = "UTC") -> dict[str, datetime]:
    """Start of the day, ISO week and month holding `as_of` in `zone`; an instant exactly at a start belongs to the
    period before (periods are (start, end]). Written with plain datetime arithmetic, not freqcap's helpers."""
    tz = ZoneInfo(zone)
    out = {}
    for period in ("day", "week", "month"):
        local = as_of.astimezone(tz)
        while True:
            d = local.date()
            if period == "week":
                d -= timedelta(days=d.weekday())
            elif period == "month":
                d = d.replace(day=1)
            start = datetime(d.year, d.month, d.day, tzinfo=tz)
            if start < as_of:
                break
            local = (start - timedelta(microseconds=1)).astimezone(tz)
        out[period] = start.astimezone(UTC)
    return out


def calendar_counts(
    events: list[dict[str, Any]], t: datetime, level: str, zone: str = "UTC", upto: datetime | None = None
) -> dict[tuple[str, str], dict[str, int]]:
    """(user, <level>_id) -> {period: impressions in (start of t's period, min(t, upto)]}."""
    starts = calendar_starts(t, zone)
    end = t if upto is None else min(t, upto)
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(starts, 0))
    for row in events:
        if row["event_type"] != "impression":
            continue
        for period, start in starts.items():
            if start < row["event_ts"] <= end:
                out[(row["user_id"], row[f"{level}_id"])][period] += 1
    return {k: dict(v) for k, v in out.items()}


def tier_features(
    events: list[dict[str, Any]], as_of: datetime, level: str, half_life_seconds: float, zone: str = "UTC"
) -> dict[tuple[str, str], dict[str, Any]]:
    """(user_id, <level>_id) -> features, for events given as dicts of the event contract. A pair has a row when it
    has an event in the longest window or an impression in the current week or month (calendar, `zone`)."""
    out: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    starts = calendar_starts(as_of, zone)
    for key, counts in calendar_counts(events, as_of, level, zone).items():
        if counts["week"] or counts["month"]:
            feats = out[key]
            for period, n in counts.items():
                feats[f"imp_{period}"] = n
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
    for feats in out.values():
        for period, start in starts.items():
            feats[f"{period}_start"] = int(start.timestamp())
            feats.setdefault(f"imp_{period}", 0)
    return {k: dict(v) for k, v in out.items()}


def full_row(feats: dict[str, Any]) -> dict[str, Any]:
    """Fill in zeros for counts a pair did not have."""
    row = {f"{p}_{w}": int(feats.get(f"{p}_{w}", 0)) for p in PREFIX.values() for w in WINDOW_SECONDS}
    for period in ("day", "week", "month"):
        if f"{period}_start" in feats:
            row[f"imp_{period}"] = int(feats[f"imp_{period}"])
            row[f"{period}_start"] = int(feats[f"{period}_start"])
    row["imp_decayed"] = float(feats.get("imp_decayed", 0.0))
    row["last_imp_ts"] = feats.get("last_imp_ts")
    return row
