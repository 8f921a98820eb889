"""A unit's counting in C (`_counts.c`) against a brute-force count of the same events, and against the domain's
Python functions it replaces (`unit_keys`, `count_unit`): same pairs, counters, pruning and changed order; bad
input raises before anything changes."""

from __future__ import annotations

import copy
import random
from collections import Counter

import pytest

from freqcap.adapters.stream.counting import UnitCounter, count_unit, unit_keys
from freqcap.domain.stream.batch import DUPLICATE, LATE, OK
from freqcap.domain.stream.buckets import PairCounts
from freqcap.domain.stream.messages import StreamEvent

HOUR = 3600
T0 = 1_790_000_000


@pytest.fixture(scope="module")
def native(compiled):
    return compiled("freqcap.adapters.stream._counts")


def _unit(rng: random.Random, n: int, span_us: int = 3 * 86_400 * 10**6):
    users = [f"u{i}-é" for i in range(rng.randint(1, 12))]
    events, verdicts = [], []
    for i in range(n):
        # Times on and beside bucket edges, before the epoch too (the ceiling of a negative quotient).
        ts = rng.choice([T0 * 10**6 + rng.randrange(span_us), T0 * 10**6 + HOUR * 10**6 * rng.randrange(72),
                         -rng.randrange(10**10), 0, 1])  # fmt: skip
        events.append(StreamEvent(f"e{i}", rng.choice("iicv"), ts, rng.choice(users), f"a{rng.randrange(3)}",
                                  f"c{rng.randrange(5)}", f"d{rng.randrange(9)}"))  # fmt: skip
        verdicts.append(rng.choice([OK, OK, OK, DUPLICATE, LATE]))
    return events, verdicts


def _cache(rng: random.Random, keys) -> dict:
    cache = {}
    for key in keys:
        pair = PairCounts()
        for kind in "icv":
            for _ in range(rng.choice([0, 0, 1, 3])):
                pair.buckets[kind][T0 + HOUR * rng.randrange(-100, 72)] = rng.choice([1, 2, 1 << 70])
        pair.last_imp_us = rng.choice([None, T0 * 10**6 + rng.randrange(86_400 * 10**6)])
        cache[key] = pair
    return cache


def _brute(events, verdicts, cache, width, horizon):
    """Every applied event counted once in each of its three pairs, from the states before, by arithmetic alone."""
    added, last, order = Counter(), {}, []
    for ev, verdict in zip(events, verdicts, strict=True):
        if verdict != OK:
            continue
        width_us = width * 10**6
        end = (ev.ts_us // width_us + (ev.ts_us % width_us != 0)) * width  # the bucket (end - width, end]
        for level, entity in (("advertiser", ev.advertiser_id), ("campaign", ev.campaign_id), ("ad", ev.ad_id)):
            key = (level, ev.user_id, entity)
            if key not in order:
                order.append(key)
            added[key, ev.kind, end] += 1
            if ev.kind == "i":
                last[key] = max(last.get(key, ev.ts_us), ev.ts_us)
    expected = {}
    for key, pair in cache.items():
        buckets = {kind: dict(b) for kind, b in pair.buckets.items()}
        if key in order:
            for (k, kind, end), n in added.items():
                if k == key:
                    buckets[kind][end] = buckets[kind].get(end, 0) + n
            buckets = {kind: {e: n for e, n in b.items() if e >= horizon} for kind, b in buckets.items()}
        imp = pair.last_imp_us
        if key in last:
            imp = last[key] if imp is None else max(imp, last[key])
        expected[key] = (buckets, imp)
    return expected, order


def _state(cache):
    return {k: (p.buckets, p.last_imp_us) for k, p in cache.items()}


@pytest.mark.parametrize("seed", range(40))
def test_c_counting_equals_a_brute_force_count_and_the_python_functions(native, seed):
    rng = random.Random(seed)
    events, verdicts = _unit(rng, rng.choice([0, 1, 5, 60, 400]))
    keys = native.unit_keys(events, verdicts)
    assert keys == unit_keys(events, verdicts)
    cache = _cache(rng, dict.fromkeys(keys))
    reference = copy.deepcopy(cache)
    width = rng.choice([60, HOUR, 86_400])
    horizon = rng.choice([0, T0 + HOUR * rng.randrange(-50, 80)])
    expected, order = _brute(events, verdicts, cache, width, horizon)

    changed = native.apply(events, verdicts, keys, cache, width, horizon)

    assert changed == order
    assert _state(cache) == expected
    assert count_unit(events, verdicts, keys, reference, width, horizon) == order
    assert _state(reference) == expected


def test_an_event_time_beyond_64_bits_takes_the_python_path_and_changes_nothing_first(native):
    events = [
        StreamEvent("e0", "i", T0 * 10**6, "u", "a", "c", "d"),
        StreamEvent("e1", "i", 1 << 70, "u", "a", "c", "d"),
    ]
    verdicts = [OK, OK]
    keys = native.unit_keys(events, verdicts)
    cache = {k: PairCounts() for k in keys}
    with pytest.raises(OverflowError):
        native.apply(events, verdicts, keys, cache, HOUR, 0)
    assert all(p == PairCounts() for p in cache.values())  # nothing counted before the check
    assert UnitCounter().count(events, verdicts, keys, cache, HOUR, 0) == keys[:3]
    assert cache[keys[0]].buckets["i"] == {T0 - T0 % HOUR + HOUR: 1, (1 << 70) // (HOUR * 10**6) * HOUR + HOUR: 1}
    assert cache[keys[0]].last_imp_us == 1 << 70


def test_bad_input_raises_before_any_pair_changes(native):
    good = StreamEvent("e0", "i", T0 * 10**6, "u", "a", "c", "d")
    keys = native.unit_keys([good], [OK])
    cache = {k: PairCounts() for k in keys}
    for events, verdicts in (
        ([good, good._replace(user_id=7)], [OK, OK]),  # a user id that is not str
        ([good, good._replace(ts_us="1")], [OK, OK]),  # a time that is not int
        ([good, ("too", "short")], [OK, OK]),
        ([good], [OK, OK]),  # lengths differ
        ([good, good], [OK, "0"]),
    ):
        with pytest.raises(TypeError):
            native.apply(events, verdicts, keys + keys, cache, HOUR, 0)
        with pytest.raises(TypeError):
            native.unit_keys(events, verdicts)
    with pytest.raises(TypeError):  # keys that are not these events' pairs
        native.apply([good], [OK], keys[:2], cache, HOUR, 0)
    assert all(p == PairCounts() for p in cache.values())
    with pytest.raises(KeyError):  # a pair that was not loaded: a bug in the caller, never skipped
        native.apply([good], [OK], keys, {}, HOUR, 0)
    with pytest.raises(RuntimeError):
        native.apply([good], [OK], keys, dict.fromkeys(keys, PairCounts(buckets=[])), HOUR, 0)


def test_a_duplicate_or_late_event_counts_nowhere(native):
    events = [StreamEvent(f"e{i}", "i", T0 * 10**6, "u", "a", "c", "d") for i in range(2)]
    assert native.unit_keys(events, [DUPLICATE, LATE]) == []
    assert native.apply(events, [DUPLICATE, LATE], [], {}, HOUR, 0) == []
