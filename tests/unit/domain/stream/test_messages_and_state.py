"""Message parsing (every dead-letter reason) and the in-memory state's dedup / lateness rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from freqcap.adapters.stream.state import DUPLICATE, LATE, OK, MemoryState
from freqcap.domain.stream.messages import StreamEvent, event_fields, parse_message, parse_ts

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


def test_epoch_seconds_and_z_suffix_are_accepted():
    assert parse_ts("1790000000.5") == 1_790_000_000_500_000
    assert parse_ts("2026-10-10T01:00:00Z") == parse_ts("2026-10-10T01:00:00+00:00")


def test_event_fields_round_trip_through_parse():
    row = {**GOOD, "event_ts": datetime(2026, 10, 10, 1, 2, 3, 456789, tzinfo=UTC), "conversion_value": None}
    ev = parse_message(event_fields(row))
    assert ev.ts_us == int(row["event_ts"].timestamp() * 1_000_000)


def _ev(eid: str, minute: int) -> StreamEvent:
    return StreamEvent(eid, "i", (1_790_000_000 + minute * 60) * 1_000_000, "u", "v", "c", "a")


def test_memory_state_dedups_and_rejects_late_events():
    state = MemoryState(bucket_s=60, lateness_s=600)
    assert state.apply([_ev("a", 0), _ev("b", 30), _ev("a", 0)]) == [OK, OK, DUPLICATE]
    # Watermark is minute 30: minute 21 is within 10 minutes, minute 19 is late.
    assert state.apply([_ev("c", 21), _ev("d", 19), _ev("b", 30)]) == [OK, LATE, DUPLICATE]
    pair = state.pairs[("ad", "u", "a")]
    assert sum(pair.buckets["i"].values()) == 3
