"""Calendar periods against hand-worked dates (DST, ISO weeks, month ends) and `resolve_calendar` against brute force."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from freqcap.domain.calendar import period_start, resolve_calendar, zone


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("instant", "period", "tz", "start"),
    [
        ("2026-10-15T12:00:00+00:00", "day", "UTC", "2026-10-15T00:00:00+00:00"),
        ("2026-10-15T00:00:00+00:00", "day", "UTC", "2026-10-14T00:00:00+00:00"),  # on the boundary: day before
        ("2026-10-15T00:00:01+00:00", "day", "UTC", "2026-10-15T00:00:00+00:00"),
        ("2026-10-15T01:30:00+00:00", "day", "America/New_York", "2026-10-14T00:00:00-04:00"),
        ("2026-10-15T12:00:00+00:00", "week", "UTC", "2026-10-12T00:00:00+00:00"),  # a Thursday -> Monday
        ("2026-10-12T00:00:00+00:00", "week", "UTC", "2026-10-05T00:00:00+00:00"),
        ("2026-10-31T23:30:00+00:00", "month", "Europe/Berlin", "2026-11-01T00:00:00+01:00"),  # already November there
        ("2026-03-29T12:00:00+00:00", "day", "Europe/Berlin", "2026-03-29T00:00:00+01:00"),  # spring forward: 23 h
        ("2026-10-25T23:30:00+00:00", "day", "Europe/Berlin", "2026-10-26T00:00:00+01:00"),
        ("2026-10-25T12:00:00+00:00", "day", "Europe/Berlin", "2026-10-25T00:00:00+02:00"),  # fall back: 25 h day
        ("2026-12-01T05:00:00+00:00", "month", "Asia/Kolkata", "2026-12-01T00:00:00+05:30"),
    ],
)
def test_period_starts(instant, period, tz, start):
    assert period_start(_ts(instant), period, tz) == _ts(start)


def test_an_unknown_zone_is_refused_by_name():
    with pytest.raises(ValueError, match="Mars/Olympus"):
        zone("Mars/Olympus")


@pytest.mark.parametrize("seed", range(200))
def test_resolve_equals_brute_force(seed):
    rng = random.Random(seed)
    tz = rng.choice(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
    period = rng.choice(["day", "week", "month"])
    T = 1_790_000_000 - 1_790_000_000 % 3600 + rng.randrange(0, 40 * 24) * 3600  # hourly cut-offs
    events = [T - rng.uniform(0, 40 * 86400) for _ in range(rng.randrange(0, 40))]
    events += [T + rng.uniform(0, 3 * 86400) for _ in range(rng.randrange(0, 40))]
    t = T + rng.uniform(0, 3 * 86400)
    start_t = period_start(t, period, tz)
    start_T = period_start(T, period, tz)
    batch = (sum(1 for x in events if start_T < x <= T), start_T, T)

    def stream_between(lo, hi):  # the stream saw everything after the cut-off
        assert lo >= T - 1e-6, "the stream is only asked about what follows the cut-off"
        return sum(1 for x in events if lo < x <= hi)

    want = sum(1 for x in events if start_t < x <= t)
    assert resolve_calendar(t, start_t, batch, stream_between) == want
    # without the stream: never more than the truth, exact when nothing happened after the cut-off
    alone = resolve_calendar(t, start_t, batch, None)
    assert alone <= want
    assert alone == sum(1 for x in events if start_t < x <= min(t, T))
