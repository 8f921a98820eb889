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


def test_partitions_combine_into_the_least_fresh_stream():
    from freqcap.adapters.stream.status import combine

    p0 = {
        b"fresh_at_us": b"1790000090000000",
        b"max_ts_us": b"1789999999000000",
        b"applied": b"12",
        b"late": b"1",
        b"coverage_start_us": b"1789990000000000",
        b"dead:late": b"1",
        b"owner": b"w1",
    }
    p1 = {
        b"fresh_at_us": b"1790000050000000",
        b"max_ts_us": b"1789999990000000",
        b"applied": b"5",
        b"coverage_start_us": b"1789995000000000",
        b"heartbeat_us": b"1790000099000000",
    }
    both = combine([p0, p1])
    assert both["fresh_at_us"] == 1_790_000_050_000_000  # everything is visible only up to the older one
    assert both["max_ts_us"] == 1_789_999_990_000_000 and both["coverage_start_us"] == 1_789_995_000_000_000
    assert both["applied"] == 17 and both["late"] == 1 and both["dead:late"] == 1
    assert "heartbeat_us" not in both  # p0 never wrote one: no partition-wide heartbeat
    status = status_from_hash(both, max_lag_s=30, now=1_790_000_100.0)
    assert status.stale and status.lag_seconds == 50.0  # p1 is 50 s behind, p0 only 10 s
    # A partition nobody ever consumed makes the stream stale, whatever the others say.
    assert status_from_hash(combine([p0, {}]), max_lag_s=30, now=1_790_000_091.0).stale
    assert combine([{}, {}]) == {}
