"""Calendar windows: "this day", "this week", "this month" in an IANA time zone, beside the rolling windows. Pure.

A calendar count at time `t` counts the events in `(start, t]`, where `start` is the beginning of the period that
holds `t`: local midnight (day), local midnight of Monday (ISO week) or local midnight of the 1st (month), in the
configured zone (DST handled by the zone's rules: a local day may last 23 or 25 hours). Periods are half-open at
the start like the rolling windows `(t − W, t]` and the stream's buckets `(e − b, e]`, so an event exactly at local
midnight belongs to the day that ends there. The batch stores, per period, the count as of its cut-off `T` and the
start of `T`'s period; serving adds what happened since (`resolve_calendar`).

A calendar window is keyed by `(period, zone)` in the engine's per-window counts (rolling windows by their length in
seconds): a policy whose zone differs from the features' has no count for its calendar caps.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIODS: tuple[str, ...] = ("day", "week", "month")
CalendarKey = tuple[str, str]  # (period, IANA zone)


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; ValueError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc


def calendar_key(period: str, zone_name: str) -> CalendarKey:
    if period not in PERIODS:
        raise ValueError(f"calendar period must be one of {PERIODS}, got {period!r}")
    return (period, zone_name)


def period_start(t: float, period: str, zone_name: str) -> float:
    """Epoch seconds of the start of the period holding the instant `t` (epoch seconds): an instant exactly at a
    start belongs to the period before it."""
    tz = zone(zone_name)
    local = datetime.fromtimestamp(t, UTC).astimezone(tz)
    start = _local_start(local, period)
    if start.timestamp() >= t:  # exactly on the boundary: (start, end] puts it in the previous period
        start = _local_start((start - timedelta(seconds=1)).astimezone(tz), period)
    return start.timestamp()


@lru_cache(maxsize=1024)
def period_starts(t: float, zone_name: str) -> tuple[tuple[CalendarKey, float], ...]:
    """((period, zone), start) for every period at `t`: the same for every pair of a request, so computed once per
    request time (a zone conversion costs microseconds; a request has hundreds of pairs)."""
    return tuple((calendar_key(p, zone_name), period_start(t, p, zone_name)) for p in PERIODS)


def _local_start(local: datetime, period: str) -> datetime:
    day = local.date()
    if period == "week":
        day = day - timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    elif period != "day":
        raise ValueError(f"calendar period must be one of {PERIODS}, got {period!r}")
    # Local midnight as an aware time (fold=0: the first one if a transition repeats it).
    naive = datetime(day.year, day.month, day.day)
    return naive.replace(tzinfo=local.tzinfo).astimezone(UTC).astimezone(local.tzinfo)


def resolve_calendar(
    t: float,
    start_t: float,
    batch: tuple[int, float, float] | None,
    stream_between: Callable[[float, float], int] | None,
) -> int:
    """The count in `(start_t, t]` for one period.

    `batch`: (count, start of the batch's period, batch cut-off T) or None (no row: no event up to the cut-off);
    `stream_between(lo, hi)`: the stream's events in `(lo, hi]`, or None without a usable stream (then what happened
    after the cut-off is unknown and not counted, as for the rolling windows).
    * same period as the batch (`batch start == start_t`): the batch count plus the stream after `T`;
    * the batch is from an earlier period: only the stream since `start_t` (the batch's events are all before it);
    * the request is before the batch's period (a replay into the past): the batch count, nothing newer is known.
    """
    if batch is None:
        return stream_between(start_t, t) if stream_between is not None else 0
    count, batch_start, cutoff = batch
    if abs(batch_start - start_t) < 1e-6:
        return int(count) + (stream_between(cutoff, t) if stream_between is not None else 0)
    if batch_start < start_t:
        return stream_between(start_t, t) if stream_between is not None else 0
    return int(count)
