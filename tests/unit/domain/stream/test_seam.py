"""The seam's rules (freqcap.domain.stream.seam) against a brute-force count over random events.

The brute force knows only the documented rule — for window W at time t the events in (lo, t] with lo = t - W when
W is a stream window fully covered (coverage <= t - W), else lo = T - W (T the batch cut-off) — and computes it
from the raw event times; the seam computes it from bucket counts and a batch row.
"""

from __future__ import annotations

import random

import pytest

from freqcap.domain.stream.buckets import Buckets, PairCounts, bucket_end
from freqcap.domain.stream.seam import BatchRow, Seam, SeamError, StreamRow, check_batch_cutoff

B = 60
H = 3600
WINDOWS = (H, 24 * H, 7 * 24 * H, 28 * 24 * H)
ALONE = frozenset({H, 24 * H})


def _brute(times: list[float], lo: float, hi: float) -> int:
    return sum(1 for x in times if lo < x <= hi)


def _case(seed: int):
    rng = random.Random(seed)
    T = 1_790_000_000 - 1_790_000_000 % B + rng.randrange(0, 48) * 3600  # aligned cut-off
    coverage = T - rng.choice([0, 0, 0, 3600, 30 * 3600])  # the stream saw everything after coverage
    imps = [T - rng.uniform(0, 30 * 86400) for _ in range(rng.randrange(0, 40))]
    imps += [T + rng.uniform(0, 30 * 3600) for _ in range(rng.randrange(0, 40))]
    imps += [float(T)] * rng.randrange(0, 2)  # exactly at the cut-off: batch's
    convs = [T - rng.uniform(0, 30 * 86400) for _ in range(rng.randrange(0, 4))]
    convs += [T + rng.uniform(0, 30 * 3600) for _ in range(rng.randrange(0, 3))]
    t = T + rng.randrange(0, 30 * 60) * B  # bucket-aligned request times
    return T, coverage, imps, convs, t


def _stream(imps, convs, coverage, clicks=()):
    pair = PairCounts()
    for x in clicks:
        if x > coverage:
            pair.add("c", round(x * 1e6), B)
    for x in imps:
        if x > coverage:
            pair.add("i", round(x * 1e6), B)
    for x in convs:
        if x > coverage:
            pair.add("v", round(x * 1e6), B)
    return StreamRow(
        Buckets.from_mapping(pair.buckets["i"]),
        Buckets.from_mapping(pair.buckets["v"]),
        pair.last_imp_us / 1e6 if pair.last_imp_us is not None else None,
        Buckets.from_mapping(pair.buckets["c"]),
    )


@pytest.mark.parametrize("seed", range(400))
def test_resolved_counts_equal_brute_force(seed):
    T, coverage, imps, convs, t = _case(seed)
    batch = BatchRow(
        counts={w: _brute(imps, T - w, T) for w in WINDOWS},
        conversions=_brute(convs, T - WINDOWS[-1], T),
        last_imp_ts=None,
        cutoff=T,
    )
    seam = Seam(B, ALONE, coverage)
    assert seam.usable_for(batch) == (coverage <= T)
    if not seam.usable_for(batch):
        return
    got = seam.resolve(WINDOWS, batch, _stream(imps, convs, coverage), t)
    for w in WINDOWS:
        lo = t - w if (w in ALONE and coverage <= t - w) else T - w
        assert got.counts[w] == _brute(imps, lo, t), (seed, w)
    assert got.conversions == _brute(convs, T - WINDOWS[-1], t)


@pytest.mark.parametrize("seed", range(200))
def test_clicks_and_conversions_per_window_equal_brute_force(seed):
    """What the stops and their cool-down read: clicks (conversions) per window, by the same rules as impressions."""
    T, coverage, clicks, convs, t = _case(seed)
    batch = BatchRow(
        counts=dict.fromkeys(WINDOWS, 0),
        conversions=_brute(convs, T - WINDOWS[-1], T),
        last_imp_ts=None,
        cutoff=T,
        click_counts={w: _brute(clicks, T - w, T) for w in WINDOWS},
        conversion_counts={w: _brute(convs, T - w, T) for w in WINDOWS},
    )
    seam = Seam(B, ALONE, coverage)
    if not seam.usable_for(batch):
        return
    got = seam.resolve(WINDOWS, batch, _stream([], convs, coverage, clicks), t)
    for w in WINDOWS:
        lo = t - w if (w in ALONE and coverage <= t - w) else T - w
        assert got.click_counts[w] == _brute(clicks, lo, t), (seed, w)
        assert got.conversion_counts[w] == _brute(convs, lo, t), (seed, w)
    assert got.clicks == got.click_counts[WINDOWS[-1]]


@pytest.mark.parametrize("seed", range(100))
def test_pairs_without_a_batch_row_count_the_stream_window(seed):
    rng = random.Random(seed)
    T = 1_790_000_000 - 1_790_000_000 % B
    imps = [T + rng.uniform(0, 30 * 3600) for _ in range(rng.randrange(1, 30))]  # all after the batch
    t = T + rng.randrange(0, 30 * 60) * B
    seam = Seam(B, ALONE, T)
    assert seam.usable_for(None, missing_cutoff=T)
    got = seam.resolve(WINDOWS, None, _stream(imps, [], T), t)
    for w in WINDOWS:
        assert got.counts[w] == _brute(imps, t - w, t)


def test_an_event_exactly_at_the_cutoff_is_counted_once():
    T = 1_790_000_000 - 1_790_000_000 % B
    imps = [float(T)]  # batch has it (ts <= T); the stream may also have seen it
    batch = BatchRow({w: 1 for w in WINDOWS}, 0, None, T)
    pair = PairCounts()
    pair.add("i", T * 1_000_000, B)
    stream = StreamRow(Buckets.from_mapping(pair.buckets["i"]), Buckets(), float(T))
    got = Seam(B, ALONE, T - 3600).resolve(WINDOWS, batch, stream, T + 1800)
    assert got.counts[7 * 24 * H] == _brute(imps, T - 7 * 24 * H, T + 1800) == 1


def test_stream_with_a_gap_after_the_batch_is_unusable():
    assert not Seam(B, ALONE, coverage_start=1020.0).usable_for(BatchRow({}, 0, None, cutoff=960.0))


def test_a_gap_is_seen_for_a_pair_without_a_batch_row():
    """Review finding: no batch row means "no event up to the view's cut-off", so a stream that starts after that
    cut-off has a gap for this pair too (its events in between are in neither side)."""
    seam = Seam(B, ALONE, coverage_start=1020.0)
    assert not seam.usable_for(None, missing_cutoff=960.0)
    assert seam.usable_for(None, missing_cutoff=1020.0)
    # the cut-off unknown: a gap cannot be ruled out
    assert not seam.usable_for(None)


@pytest.mark.parametrize("seed", range(60))
def test_a_pair_without_a_batch_row_never_hides_lost_events(seed):
    """Events between the batch cut-off and the stream's coverage are counted by no one: the seam must either
    refuse the stream (serving flags `stream_stale`) or count exactly what brute force counts."""
    rng = random.Random(seed)
    T = 1_790_000_000 - 1_790_000_000 % B
    coverage = T + rng.choice([0, 3600, 5 * 3600])
    imps = [T + rng.uniform(0, 30 * 3600) for _ in range(rng.randrange(1, 30))]  # all after the batch
    t = T + 30 * 3600
    seam = Seam(B, ALONE, coverage)
    if seam.usable_for(None, missing_cutoff=T):
        got = seam.resolve(WINDOWS, None, _stream(imps, [], coverage), t)
        for w in WINDOWS:
            assert got.counts[w] == _brute(imps, t - w, t), (seed, w)


@pytest.mark.parametrize("seed", range(60))
def test_a_cutoff_inside_a_bucket_never_loses_stream_events(seed):
    """Review finding: a batch cut-off that is not a multiple of the bucket splits a bucket; its events after the
    cut-off must not be dropped. The seam either refuses the stream for that row or counts exactly."""
    rng = random.Random(seed)
    T = 1_790_000_000 - 1_790_000_000 % B + rng.randrange(1, B)  # not a whole bucket
    imps = [T - rng.uniform(0, 3 * 86400) for _ in range(rng.randrange(0, 20))]
    imps += [T + rng.uniform(0, 2 * B) for _ in range(rng.randrange(1, 20))]  # many in the straddling bucket
    t = T - T % B + 4 * 3600
    batch = BatchRow({w: _brute(imps, T - w, T) for w in WINDOWS}, 0, None, cutoff=T)
    seam = Seam(B, ALONE, T - 3600)
    if seam.usable_for(batch):
        got = seam.resolve(WINDOWS, batch, _stream(imps, [], T - 3600), t)
        for w in WINDOWS:
            lo = t - w if (w in ALONE and t - w >= T - 3600) else T - w
            assert got.counts[w] == _brute(imps, lo, t), (seed, w)


def test_a_misaligned_cutoff_is_refused_where_it_is_set():
    with pytest.raises(SeamError, match=r"stream\.bucket"):
        check_batch_cutoff(1_790_000_000 - 1_790_000_000 % B + 30, B)
    check_batch_cutoff(1_790_000_000 - 1_790_000_000 % B, B)  # aligned: fine


def test_bucket_end_is_the_ceiling_and_boundaries_belong_to_the_earlier_bucket():
    assert bucket_end(60_000_000, 60) == 60
    assert bucket_end(60_000_001, 60) == 120
    assert bucket_end(1, 60) == 60
    # (60, 180]: buckets 120 = (60, 120] and 180 = (120, 180]; not 60 = (0, 60].
    assert Buckets((60, 120, 180), (1, 2, 3)).total_between(60, 180, 60) == 2 + 3


def test_events_after_the_request_time_are_not_counted():
    """A replay asks about t while the stream already holds later events (t aligned to the bucket)."""
    T = 1_790_000_000 - 1_790_000_000 % B
    t = T + 7200
    imps = [t - 30.0, float(t), t + 0.5, t + 30.0, t + 60.0, t + 61.0]
    got = Seam(B, ALONE, T).resolve(WINDOWS, None, _stream(imps, [], T), t)
    assert got.counts[H] == _brute(imps, t - H, t) == 2


@pytest.mark.parametrize("seed", range(300))
def test_calendar_counts_equal_brute_force(seed):
    """This day / week / month at t: every impression in (start of t's period, t], counted from the batch's period
    count and start plus the stream — across day, week and month boundaries and in zones with DST."""
    from datetime import UTC, datetime

    from tests.bruteforce import calendar_starts

    rng = random.Random(seed)
    zone = rng.choice(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
    T = 1_790_000_000 - 1_790_000_000 % 3600 + rng.randrange(0, 60 * 24) * 3600  # hourly cut-offs over two months
    coverage = T - rng.choice([0, 3600, 20 * 3600])
    imps = [T - rng.uniform(0, 35 * 86400) for _ in range(rng.randrange(0, 40))]
    imps += [T + rng.uniform(0, 24 * 3600) for _ in range(rng.randrange(0, 40))]
    imps += [float(p.timestamp()) for p in calendar_starts(datetime.fromtimestamp(T, UTC), zone).values()]  # on edges
    t = T + rng.randrange(0, 24 * 60) * B

    def starts(at):
        return {p: s.timestamp() for p, s in calendar_starts(datetime.fromtimestamp(at, UTC), zone).items()}

    at_T = starts(T)
    batch = BatchRow(
        counts={w: _brute(imps, T - w, T) for w in WINDOWS},
        conversions=0,
        last_imp_ts=None,
        cutoff=T,
        calendar={p: (_brute(imps, s, T), s) for p, s in at_T.items()},
    )
    seam = Seam(B, ALONE, coverage)
    got = seam.resolve(WINDOWS, batch, _stream(imps, [], coverage), t, zone)
    for p, s in starts(t).items():
        assert got.counts[(p, zone)] == _brute(imps, s, t), (seed, zone, p)
