"""The stream status as serving and monitoring read it: lag and staleness from the worker's status hash."""

from __future__ import annotations

from freqcap.adapters.stream.status import status_from_hash


def test_fresh_stream_reports_its_lag():
    now = 1_790_000_100.0
    raw = {b"fresh_at_us": b"1790000090000000", b"max_ts_us": b"1789999999000000", b"applied": b"12", b"late": b"1"}
    status = status_from_hash(raw, max_lag_s=30, now=now)
    assert status.lag_seconds == 10.0 and not status.stale
    assert status.counters["applied"] == 12 and status.counters["late"] == 1 and status.counters["pushed"] == 0
    assert status.watermark.timestamp() == 1_789_999_999.0


def test_stream_is_stale_past_max_lag_or_never_caught_up():
    assert status_from_hash({"fresh_at_us": "1790000000000000"}, max_lag_s=30, now=1_790_000_031.0).stale
    never = status_from_hash({"heartbeat_us": "1790000000000000"}, max_lag_s=30, now=1_790_000_001.0)
    assert never.stale and never.lag_seconds is None
    assert status_from_hash({"fresh_at_us": "junk"}, max_lag_s=30).stale
