"""Message parsing (every dead-letter reason), the micro-batch rules (dedup, lateness, counts), the pair state's
encoding, partitions."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from freqcap.adapters.feast.stream_push import StreamRowEncoder, state_blob, state_counts
from freqcap.domain.stream.batch import DUPLICATE, LATE, OK, apply_counts, judge
from freqcap.domain.stream.buckets import PairCounts, bucket_end
from freqcap.domain.stream.messages import (
    StreamEvent,
    _parse_fast,
    event_fields,
    parse_message,
    parse_message_full,
    parse_ts,
)
from freqcap.domain.stream.partitions import assignment, compare_ids, first_after, partition_of, stream_name

GOOD = {
    "event_id": "e1",
    "event_type": "impression",
    "event_ts": "2026-10-10T01:00:00+00:00",
    "user_id": "u1",
    "advertiser_id": "v0",
    "campaign_id": "c0",
    "ad_id": "ad0",
    "format": "feed",
}


def test_a_good_message_parses_from_bytes_or_text():
    ev = parse_message({k.encode(): v.encode() for k, v in GOOD.items()}, ("feed",))
    assert isinstance(ev, StreamEvent)
    assert ev.kind == "i" and ev.ts_us == int(datetime(2026, 10, 10, 1, tzinfo=UTC).timestamp() * 1e6)
    assert parse_message(GOOD) == ev


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_id": None}, "missing_event_id"),
        ({"user_id": "  "}, "missing_user_id"),
        ({"event_type": "view"}, "bad_event_type"),
        ({"event_ts": "2026-10-10 01:00:00"}, "bad_event_ts"),
        ({"event_ts": "nan"}, "bad_event_ts"),
        ({"event_ts": "1790000000000"}, "bad_event_ts"),  # milliseconds passed as seconds
        ({"ad_id": "a" * 300}, "too_long_ad_id"),
        ({"format": "billboard"}, "bad_format"),
        ({"conversion_value": "-1"}, "bad_conversion_value"),
        ({"campaign_id": b"\xc3\x28"}, "bad_encoding_campaign_id"),
    ],
)
def test_bad_messages_name_their_reason(change, reason):
    fields = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert parse_message(fields, ("feed",)) == reason


def test_the_fast_path_agrees_with_the_rules_on_random_redis_messages():
    """Messages as Redis returns them (bytes), mutated at random: `parse_message` (fast path first) gives what the
    rules checked one by one give (`parse_message_full`), event or reason; the fast path takes the common ones."""
    rng = random.Random(7)
    changes = [
        None, "", "  ", "a" * 257, "a" * 256, b"\xc3\x28", "click", "conversion", "view", "impression",
        "2026-10-10T01:00:00Z", " 2026-10-10T01:00:00+00:00", "2026-10-10 01:00:00", "1790000000.5", "nan",
        "feed", "story", "0.5", "-1", "x",
    ]  # fmt: skip
    names = [*GOOD, "conversion_value", "extra"]
    fast = 0
    for _ in range(4000):
        fields = {k.encode(): v.encode() for k, v in GOOD.items()}
        for _ in range(rng.choice([0, 0, 1, 2])):
            name, value = rng.choice(names).encode(), rng.choice(changes)
            if value is None:
                fields.pop(name, None)
            else:
                fields[name] = value if isinstance(value, bytes) else value.encode()
        for allowed in (None, ("feed",)):
            want = parse_message_full(fields, allowed)
            assert parse_message(fields, allowed) == want, (fields, allowed)
            fast += _parse_fast(fields, allowed) is not None
            if isinstance(want, str):
                assert _parse_fast(fields, allowed) is None
    assert fast > 2000  # the common message did take the fast path


def test_epoch_seconds_and_z_suffix_are_accepted():
    assert parse_ts("1790000000.5") == 1_790_000_000_500_000
    assert parse_ts("2026-10-10T01:00:00Z") == parse_ts("2026-10-10T01:00:00+00:00")


def test_event_fields_round_trip_through_parse():
    row = {**GOOD, "event_ts": datetime(2026, 10, 10, 1, 2, 3, 456789, tzinfo=UTC), "conversion_value": None}
    ev = parse_message(event_fields(row))
    assert ev.ts_us == int(row["event_ts"].timestamp() * 1_000_000)


def _ev(eid: str, minute: int) -> StreamEvent:
    return StreamEvent(eid, "i", (1_790_000_000 + minute * 60) * 1_000_000, "u", "v", "c", "a")


def test_judge_dedups_and_rejects_late_events_across_batches():
    first = judge([_ev("a", 0), _ev("b", 30), _ev("a", 0)], set(), None, 600_000_000)
    assert first.verdicts == [OK, OK, DUPLICATE] and first.new_ids == ["a", "b"]
    # Watermark is minute 30: minute 21 is within 10 minutes, minute 19 is late; b was marked by the first batch.
    second = judge([_ev("c", 21), _ev("d", 19), _ev("b", 30)], {"a", "b"}, first.watermark_us, 600_000_000)
    assert second.verdicts == [OK, LATE, DUPLICATE] and second.counts == {OK: 1, LATE: 1, DUPLICATE: 1}
    pairs: dict = {}
    apply_counts([_ev("a", 0), _ev("b", 30)], first.verdicts[:2], lambda k: pairs.setdefault(k, PairCounts()), 60)
    assert sum(pairs[("ad", "u", "a")].buckets["i"].values()) == 2


def test_verdicts_do_not_depend_on_batch_boundaries():
    """Brute force: one event at a time (a dict of seen ids and a running maximum) vs `judge` over random cuts."""
    rng = random.Random(3)
    events = [
        StreamEvent(f"e{rng.randrange(300)}", rng.choice("iicv"), (1_790_000_000 + i * 5 + rng.randint(-900, 30)) *
                    1_000_000, f"u{rng.randrange(9)}", "v", f"c{rng.randrange(2)}", f"a{rng.randrange(4)}")
        for i in range(1000)
    ]  # fmt: skip
    want, seen, wm = [], set(), None
    for ev in events:
        if ev.event_id in seen:
            want.append(DUPLICATE)
        elif wm is not None and ev.ts_us < wm - 600_000_000:
            want.append(LATE)
        else:
            seen.add(ev.event_id)
            wm = ev.ts_us if wm is None else max(wm, ev.ts_us)
            want.append(OK)
    assert {DUPLICATE, LATE, OK} <= set(want)
    got, marked, mark = [], set(), None
    i = 0
    while i < len(events):
        j = i + rng.randint(1, 120)
        out = judge(events[i:j], marked, mark, 600_000_000)
        got += out.verdicts
        marked.update(out.new_ids)
        mark = out.watermark_us
        i = j
    assert got == want and mark == wm


def test_pair_state_encoding_round_trips():
    pair = PairCounts()
    for ts in (1_790_000_001_000_000, 1_790_000_061_000_000, 1_790_003_000_999_999):
        pair.add("i", ts, 60)
    pair.add("v", 1_790_000_001_000_000, 60)
    encoder = StreamRowEncoder()
    back = state_counts(state_blob(encoder.values(pair), pair.last_imp_us))
    assert back.buckets == pair.buckets and back.last_imp_us == 1_790_003_000_999_999
    assert state_counts(state_blob(encoder.values(PairCounts()), None)).last_imp_us is None
    assert back.buckets["i"][bucket_end(1_790_000_001_000_000, 60)] == 1


def test_row_encoding_equals_feasts_with_its_memos_warm():
    """The encoder's values (memoized lists and last impressions) equal Feast's own conversion of the same row, for
    random pairs encoded in turn (shared and repeated bucket sets, zero counts, no impression, and long-lived pairs
    with many buckets and large counts), and a state marshalled into the pending log comes back equal."""
    from freqcap.adapters.feast.stream_push import PairState, RedisDirectPusher, pair_row
    from freqcap.adapters.stream.state import pack_pending, unpack_pending

    rng = random.Random(11)
    encoder = StreamRowEncoder()
    pairs = []
    for _ in range(400):
        pair = PairCounts()
        for _ in range(rng.choice([0, 1, 1, 2, 5])):
            pair.add(rng.choice("iicv"), (1_790_000_000 + rng.randrange(4) * 60 + rng.randrange(60)) * 1_000_000, 60)
        if rng.random() < 0.2 and len(pair.buckets["i"]) > 1:  # a zero count among others: left out of the row
            pair.buckets["i"][next(iter(pair.buckets["i"]))] = 0
        pairs.append(pair)
    for _ in range(100):  # long-lived pairs: more buckets than the encoder memoizes, large counts, zero counts
        pair = PairCounts()
        for _ in range(rng.randrange(5, 120)):
            pair.add(rng.choice("iicv"), (1_790_000_000 + rng.randrange(1500) * 60) * 1_000_000, 60)
        impressions = pair.buckets["i"]
        if impressions and rng.random() < 0.3:
            impressions[next(iter(impressions))] = rng.choice([0, 20_000, 1 << 40])  # beyond the counts' table
        pairs.append(pair)
    assert max(len(p.buckets["i"]) for p in pairs) > 40
    for pair in pairs + pairs[::-1]:
        row, _ = pair_row(PairState("ad", "u", "a", pair.buckets, pair.last_imp_us), 0)
        assert encoder.values(pair) == RedisDirectPusher.reference_encode(row)
    keyed = {("ad", f"u{i}", f"a:{i}"): pair for i, pair in enumerate(pairs)}
    back = unpack_pending(pack_pending("p:{p0}", keyed.items()), "p:{p0}")
    assert back == {k: (p.buckets, p.last_imp_us) for k, p in keyed.items()}


def test_partitions_route_users_stably_and_assign_every_partition_once():
    assert partition_of("anyone", 1) == 0 and stream_name("s", 0, 1) == "s"
    assert stream_name("s", 3, 4) == "s:{p3}"
    counts = [0] * 4
    for u in range(4000):
        counts[partition_of(f"user-{u}", 4)] += 1
    assert min(counts) > 800  # spread
    assert partition_of("user-7", 4) == partition_of("user-7", 4)
    plan = assignment(["w2", "w1", "w3"], 8)
    assert sorted(p for ps in plan.values() for p in ps) == list(range(8))
    assert plan["w1"] == [0, 3, 6] and plan["w3"] == [2, 5]
    assert assignment([], 4) == {}
    assert compare_ids("10-2", "9-5") == 1 and compare_ids("10-2", "10-10") == -1 and compare_ids("3-0", "3-0") == 0


def test_first_after_matches_comparing_every_id():
    """The bisection over a micro-batch's ids (ascending) against comparing each id with the last applied one, on
    random batches: ids sharing a millisecond, `last_id` inside, between, before and after them."""
    rng = random.Random(11)
    for _ in range(400):
        ms, ids = rng.randrange(1, 50), []
        for _ in range(rng.randrange(0, 30)):
            ms += rng.choice([0, 0, 1, 7])
            seq = int(ids[-1].split("-")[1]) + 1 if ids and ids[-1].startswith(f"{ms}-") else rng.randrange(3)
            ids.append(f"{ms}-{seq}")
        last = rng.choice(ids) if ids and rng.random() < 0.5 else f"{rng.randrange(0, ms + 2)}-{rng.randrange(4)}"
        expected = [i for i in ids if compare_ids(i, last) > 0]
        assert ids[first_after(ids, last) :] == expected, (ids, last)
