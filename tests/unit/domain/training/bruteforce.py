"""Loop-by-loop, as-of computations of one training row, for the point-in-time tests only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.bruteforce import full_row, tier_features

LEVELS = ("advertiser", "campaign", "ad")
US = timedelta(microseconds=1)


def latest_snapshot(snapshots: list[datetime], t: datetime, ttl: timedelta) -> datetime | None:
    """The snapshot a point-in-time join must use for an impression at `t`: the latest ≤ t − 1 µs within ttl."""
    asof = t - US
    eligible = [s for s in snapshots if s <= asof]
    if not eligible or asof - max(eligible) > ttl:
        return None
    return max(eligible)


def user_features(events: list[dict[str, Any]], as_of: datetime, user_id: str) -> dict[str, Any]:
    """The user table's columns as of `as_of` (zeros and `impression_only` for a user absent from it)."""

    def count(kind: str, seconds: int) -> int:
        return sum(
            1
            for e in events
            if e["user_id"] == user_id
            and e["event_type"] == kind
            and 0 <= (as_of - e["event_ts"]).total_seconds() < seconds
        )

    conv, clk = count("conversion", 28 * 86400), count("click", 28 * 86400)
    tier = "converter" if conv else "engaged" if clk else "impression_only"
    return {
        "imp_24h": count("impression", 86400),
        "imp_7d": count("impression", 7 * 86400),
        "clk_28d": clk,
        "conv_28d": conv,
        "signal_tier": tier,
    }


def expected_features(
    events: list[dict[str, Any]], row: dict[str, Any], as_of: datetime, half_lives: dict[str, float]
) -> dict[str, Any]:
    """Every Feast-joined column of a training row, computed from the raw events as of `as_of`."""
    out: dict[str, Any] = {}
    for level in LEVELS:
        feats = tier_features(events, as_of, level, half_lives[level]).get((row["user_id"], row[f"{level}_id"]), {})
        full = full_row(feats)
        for col in ("imp_24h", "imp_7d", "imp_28d", "clk_28d", "conv_28d", "imp_decayed"):
            out[f"user_{level}__{col}"] = full[col]
    user = user_features(events, as_of, row["user_id"])
    out["signal_tier"] = user.pop("signal_tier")
    out.update({f"user__{k}": v for k, v in user.items()})
    return out


def expected_exact(
    events: list[dict[str, Any]], row: dict[str, Any], lookback: timedelta = timedelta(days=28)
) -> dict[str, Any]:
    """n_<level> and hours_since_last_<level> for the impression `row` (strictly earlier impressions only)."""
    t = row["impression_ts"]
    out: dict[str, Any] = {}
    for level in LEVELS:
        earlier = [
            e["event_ts"]
            for e in events
            if e["event_type"] == "impression"
            and e["user_id"] == row["user_id"]
            and e[f"{level}_id"] == row[f"{level}_id"]
            and t - lookback < e["event_ts"] < t
        ]
        out[f"n_{level}"] = len(earlier) + 1
        out[f"hours_since_last_{level}"] = (t - max(earlier)).total_seconds() / 3600 if earlier else None
    return out


def expected_labels(
    events: list[dict[str, Any]], row: dict[str, Any], conv_window: timedelta, click_window: timedelta
) -> dict[str, int | None]:
    t = row["impression_ts"]

    def hit(kind: str, window: timedelta) -> int:
        return int(
            any(
                e["event_type"] == kind
                and e["user_id"] == row["user_id"]
                and e["ad_id"] == row["ad_id"]
                and t <= e["event_ts"] < t + window
                for e in events
            )
        )

    def attributed() -> int:
        """A conversion of the ad within the window with no later impression of the ad before it."""
        for c in events:
            if not (
                c["event_type"] == "conversion"
                and c["user_id"] == row["user_id"]
                and c["ad_id"] == row["ad_id"]
                and t <= c["event_ts"] < t + conv_window
            ):
                continue
            later = any(
                e["event_type"] == "impression"
                and e["user_id"] == row["user_id"]
                and e["ad_id"] == row["ad_id"]
                and t < e["event_ts"] <= c["event_ts"]
                for e in events
            )
            if not later:
                return 1
        return 0

    def first_conversion_us() -> int | None:
        """Time (µs) of the first conversion of the ad at or after t, when it is within the window."""
        times = [
            e["event_ts"]
            for e in events
            if e["event_type"] == "conversion" and e["user_id"] == row["user_id"] and e["ad_id"] == row["ad_id"]
            if e["event_ts"] >= t
        ]
        first = min(times, default=None)
        if first is None or first >= t + conv_window:
            return None
        return (first - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)

    return {
        "conversion_us": first_conversion_us(),
        "label_conversion": hit("conversion", conv_window),
        "label_attributed_conversion": attributed(),
        "label_click": hit("click", click_window),
    }
