"""Decision-log metrics against independent loop counts over the raw JSON lines."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import datetime, timedelta

import pandas as pd
import pytest

from freqcap.adapters.decision_log import read_log_window
from freqcap.domain.monitoring.metrics import (
    cap_hit_rate_changes,
    cap_hit_rates,
    degraded_streak,
    fail_open_rates,
    in_window,
    prepare_log,
)
from tests.unit.domain.monitoring.helpers import T0, log_row, write_log


def _raw(directory) -> list[dict]:
    return [json.loads(line) for f in sorted(directory.rglob("*.jsonl")) for line in f.read_text().splitlines()]


def _in(row: dict, start: datetime, end: datetime) -> bool:
    ts = datetime.fromisoformat(row["ts"])
    return start < ts <= end


def _brute_hit_rates(rows: list[dict]) -> dict[str, tuple[float, int]]:
    """segment -> (rate, decisions), counted loop by loop (see freqcap.domain.monitoring.metrics for the definitions)."""
    decided = [r for r in rows if not r["fail_open"]]
    hits, total = defaultdict(int), defaultdict(int)
    for r in decided:
        cohort = f"cohort={r['audience']}/{r['signal_tier']}"
        for seg in ("all", cohort, f"format={r['format']}", f"hour={r['hour']}"):
            total[seg] += 1
            hits[seg] += r["hit"]
    out = {seg: (hits[seg] / total[seg], total[seg]) for seg in total}
    for level in {r["level"] for r in decided if r["level"]}:
        n_hit = sum(1 for r in decided if r["level"] == level and r["hit"])
        out[f"level={level}"] = (n_hit / len(decided), len(decided))
    return out


@pytest.fixture
def log_dir(tmp_path):
    rng = random.Random(5)
    rows = []
    # 23:00 the day before to 03:00: the window crosses a date partition.
    for _ in range(900):
        ts = T0 - timedelta(hours=1) + timedelta(seconds=rng.randrange(4 * 3600))
        kind = rng.random()
        if kind < 0.08:
            rows.append(log_row(ts, rng, fail_open=True, reason=rng.choice(["timeout", "store_error: OSError"])))
        elif kind < 0.12:
            rows.append(log_row(ts, rng, reason="stream_stale"))  # degraded, but decided from batch features
        else:
            rows.append(log_row(ts, rng))
    # Exactly on the window edges: start is out, end is in.
    rows.append(log_row(T0 - timedelta(minutes=30), rng, audience="cold"))
    rows.append(log_row(T0 + timedelta(hours=2), rng, audience="cold"))
    write_log(tmp_path / "log", rows[:500], "part-a")
    write_log(tmp_path / "log", rows[500:], "part-b")
    return tmp_path / "log"


def test_cap_hit_rates_equal_a_brute_force_count(log_dir):
    start, end = T0 - timedelta(minutes=30), T0 + timedelta(hours=2)
    frame = read_log_window(log_dir, start, end)
    raw = [r for r in _raw(log_dir) if _in(r, start, end)]
    assert len(frame) == len(raw) and len(raw) > 300
    assert frame["ts"].min() > pd.Timestamp(start) and frame["ts"].max() == pd.Timestamp(end)

    got = {r.segment: (r.value, r.support) for r in cap_hit_rates(frame)}
    want = _brute_hit_rates(raw)
    assert set(got) == set(want)
    for seg, (rate, n) in want.items():
        assert got[seg][1] == n, seg
        assert got[seg][0] == pytest.approx(rate, abs=1e-12), seg
    # stream-stale answers were decided: they count for cap hits
    assert got["all"][1] == sum(1 for r in raw if not r["fail_open"])
    levels = [v[0] for k, v in got.items() if k.startswith("level=")]
    assert sum(levels) == pytest.approx(got["all"][0])


def test_fail_open_and_degraded_rates_with_reasons(log_dir):
    start, end = T0, T0 + timedelta(hours=3)
    raw = [r for r in _raw(log_dir) if _in(r, start, end)]
    got = {(r.name, r.segment): r.value for r in fail_open_rates(read_log_window(log_dir, start, end))}
    n = len(raw)
    assert got[("fail_open_rate", "all")] == pytest.approx(sum(r["fail_open"] for r in raw) / n)
    assert got[("degraded_rate", "all")] == pytest.approx(sum(r["degraded"] for r in raw) / n)
    for reason in ("timeout", "store_error: OSError"):
        want = sum(1 for r in raw if r["fail_open"] and r["degraded_reason"] == reason) / n
        assert got[("fail_open_rate", f"reason={reason}")] == pytest.approx(want)
    stale = sum(1 for r in raw if r["degraded_reason"] == "stream_stale") / n
    assert stale > 0 and got[("degraded_rate", "reason=stream_stale")] == pytest.approx(stale)
    assert ("fail_open_rate", "reason=stream_stale") not in got


def test_logs_without_the_fail_open_field_count_degraded_as_failed_open():
    rng = random.Random(1)
    rows = [log_row(T0, rng, fail_open=True), log_row(T0, rng), log_row(T0, rng)]
    for r in rows:
        del r["fail_open"]
    frame = prepare_log(pd.DataFrame(rows))
    assert frame["fail_open"].tolist() == [True, False, False]
    assert {r.segment: r.value for r in fail_open_rates(frame)}["all"] == pytest.approx(1 / 3)


def test_cap_hit_rate_change_per_cohort(tmp_path):
    rng = random.Random(3)
    base = [log_row(T0 - timedelta(hours=5) + timedelta(minutes=i % 240), rng, audience="cold", hit_rate=0.2)
            for i in range(400)]  # fmt: skip
    cur = [log_row(T0 - timedelta(minutes=i % 59), rng, audience="cold", hit_rate=0.7) for i in range(300)]
    frame = prepare_log(pd.DataFrame(base + cur))
    current, baseline = (
        in_window(frame, T0 - timedelta(hours=1), T0),
        in_window(frame, T0 - timedelta(hours=25), T0 - timedelta(hours=1)),
    )
    changes = {r.segment: r for r in cap_hit_rate_changes(current, baseline)}
    for cohort in {f"cohort=cold/{r['signal_tier']}" for r in cur}:
        mine = [r for r in cur if f"cohort=cold/{r['signal_tier']}" == cohort]
        theirs = [r for r in base if f"cohort=cold/{r['signal_tier']}" == cohort]
        want = sum(r["hit"] for r in mine) / len(mine) - sum(r["hit"] for r in theirs) / len(theirs)
        assert changes[cohort].value == pytest.approx(want)
        assert changes[cohort].support == min(len(mine), len(theirs))
    assert changes["all"].value > 0.3  # 0.7 vs 0.2 of the decisions with a binding level, times 3/4


def test_degraded_streak_finds_when_the_trouble_began():
    rng = random.Random(2)
    rows = [log_row(T0 + timedelta(minutes=m, seconds=s), rng) for m in range(0, 120) for s in (5, 35)]
    # A lone failure at 00:40 among 30 decided ones keeps its 5-minute bucket healthy (3% < 5%).
    rows += [log_row(T0 + timedelta(minutes=40, seconds=10), rng, fail_open=True)]
    rows += [log_row(T0 + timedelta(minutes=41, seconds=s), rng) for s in range(0, 60, 3)]
    # The outage: from 01:32:30 on everything fails open.
    outage = T0 + timedelta(minutes=92, seconds=30)
    rows = [r for r in rows if datetime.fromisoformat(r["ts"]) < outage]
    failures = [log_row(outage + timedelta(seconds=20 * i), rng, fail_open=True) for i in range(100)]
    end = T0 + timedelta(hours=2, minutes=5)
    streak = degraded_streak(prepare_log(pd.DataFrame(rows + failures)), end, timedelta(minutes=5), 0.05)
    assert streak.start == pd.Timestamp(outage) and streak.ongoing
    assert streak.last == pd.Timestamp(outage + timedelta(seconds=20 * 99))
    # The outage ended at 01:50 and the buckets after it are healthy: same start, not ongoing.
    cut = T0 + timedelta(minutes=110)
    recovered = [r for r in failures if datetime.fromisoformat(r["ts"]) <= cut]
    recovered += [log_row(cut + timedelta(seconds=15 * (i + 1)), rng) for i in range(60)]
    streak = degraded_streak(prepare_log(pd.DataFrame(rows + recovered)), end, timedelta(minutes=5), 0.05)
    assert streak.start == pd.Timestamp(outage) and not streak.ongoing
    assert streak.last == max(pd.Timestamp(r["ts"]) for r in recovered if r["fail_open"])
    # Only the lone blip: no streak at all.
    assert degraded_streak(prepare_log(pd.DataFrame(rows)), end, timedelta(minutes=5), 0.05) is None
