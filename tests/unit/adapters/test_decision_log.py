"""The decision log on its own: hit semantics, whole-request sampling, the bounded buffer, date partitions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from freqcap.adapters.decision_log import FIELDS, DecisionLog, decision_rows, is_hit, read_decision_log
from freqcap.domain.policy.engine import Binding, Candidate, Decision

CANDS = [Candidate("a1", "c1", "v1"), Candidate("a2", "c1", "v1"), Candidate("a3", "c2", "v1")]


def _decision(ad, level, cap, count, kind="cap"):
    distance = None if kind != "cap" else float(cap - count)
    return Decision(ad, True, 0.5, distance, Binding(level, "24h", cap, count, kind), "r")


@pytest.mark.parametrize(
    ("decision", "hit"),
    [
        (_decision("a", "ad", 3, 2), False),  # one impression left
        (_decision("a", "ad", 3, 3), True),  # at the cap: the next one exceeds it
        (_decision("a", "campaign", 3, 7), True),  # beyond
        (_decision("a", "ad", 1, 1, kind="min_gap"), True),  # recency binds only while active
        (_decision("a", "ad", 1, 1, kind="stop_after_conversion"), True),
        (Decision("a", True, 1.0, None, None, "no cap applies"), False),
    ],
)
def test_hit_is_reaching_the_binding_constraint(decision, hit):
    assert is_hit(decision) is hit


def test_rows_carry_cohort_and_binding_but_no_user():
    ts = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2)))  # 01:30 UTC the next day
    decisions = [
        _decision("a1", "ad", 2, 2),
        _decision("a2", "campaign", 5, 1),
        Decision("a3", True, 1.0, None, None, ""),
    ]
    rows = decision_rows(
        ts=ts,
        fmt="feed",
        audience="sports",
        signal_tier="engaged",
        policy_version="p9",
        candidates=CANDS,
        decisions=decisions,
    )
    assert [r["ad_id"] for r in rows] == ["a1", "a2", "a3"]
    assert {r["date"] for r in rows} == {"2026-03-02"} and {r["hour"] for r in rows} == {1}
    assert [r["hit"] for r in rows] == [True, False, False]
    assert [r["level"] for r in rows] == ["ad", "campaign", None]
    assert rows[0]["cap"] == 2 and rows[0]["count"] == 2 and rows[0]["distance_to_cap"] == 0.0
    assert all(set(r) == set(FIELDS) for r in rows)
    assert not any("user" in k for r in rows for k in r)


def test_failed_open_requests_are_logged_as_degraded_without_cohort():
    rows = decision_rows(
        ts=datetime(2026, 3, 1, 12, tzinfo=UTC),
        fmt="story",
        audience="x",
        signal_tier="engaged",
        policy_version="p1",
        candidates=CANDS,
        decisions=None,
        degraded_reason="timeout",
    )
    assert all(r["degraded"] and r["degraded_reason"] == "timeout" for r in rows)
    assert all(r["audience"] is None and r["penalty"] == 1.0 and not r["hit"] for r in rows)


def test_sampling_is_per_request_at_the_configured_rate(tmp_path):
    log = DecisionLog(tmp_path, sample_rate=0.2, seed=3)
    n = 20_000
    sampled = sum(log.sample() for _ in range(n))
    # binomial(20000, 0.2): sd ≈ 57; 5 sd either side
    assert abs(sampled - 0.2 * n) < 5 * (n * 0.2 * 0.8) ** 0.5
    assert not any(DecisionLog(tmp_path, sample_rate=0.0).sample() for _ in range(1000))
    assert all(DecisionLog(tmp_path, sample_rate=1.0).sample() for _ in range(1000))
    with pytest.raises(ValueError):
        DecisionLog(tmp_path, sample_rate=1.5)


def _rows(n, day):
    ts = datetime(2026, 3, day, 10, tzinfo=UTC)
    cands = [Candidate(f"a{i}", "c", "v") for i in range(n)]
    return decision_rows(
        ts=ts,
        fmt="feed",
        audience="a",
        signal_tier="engaged",
        policy_version="p",
        candidates=cands,
        decisions=[Decision(c.ad_id, True, 1.0, None, None, "") for c in cands],
    )


def test_full_buffer_drops_and_counts_instead_of_blocking(tmp_path):
    log = DecisionLog(tmp_path, sample_rate=1.0, max_pending=10)
    log.record(_rows(6, 1))
    log.record(_rows(6, 1))  # would exceed 10: dropped whole
    log.record(_rows(4, 1))
    assert (log.dropped, log.sampled_requests) == (6, 3)
    assert log.flush() == 10 and log.written == 10


def test_flush_writes_one_complete_file_per_date(tmp_path):
    log = DecisionLog(tmp_path / "log", sample_rate=1.0, flush_seconds=0.05)
    log.start()
    log.record(_rows(3, 1))
    log.record(_rows(2, 2))
    log.close()  # stops the flusher and writes what is left
    files = sorted((tmp_path / "log").rglob("*"))
    parts = [f for f in files if f.is_file()]
    assert {p.parent.name for p in parts} == {"date=2026-03-01", "date=2026-03-02"}
    assert not [p for p in parts if p.name.endswith(".tmp")]
    lines = [json.loads(line) for p in parts for line in p.read_text().splitlines()]
    assert len(lines) == 5 and all(list(r) == list(FIELDS) for r in lines)
    frame = read_decision_log(tmp_path / "log")
    assert len(frame) == 5 and list(frame.columns) == list(FIELDS)
    assert read_decision_log(tmp_path / "empty").empty
