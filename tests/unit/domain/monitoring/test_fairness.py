"""The fairness audit's effective cap (the most impressions within the curve's window a policy's caps allow)
against a brute force: greedy serving on an hourly grid (earliest feasible hour first, which is optimal for rolling
caps), counting what fits in the last 28 days."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from freqcap.domain.monitoring.fairness import effective_cap, fairness_audit
from freqcap.domain.policy import parse_policy

HOUR = 3600
W = 28 * 24 * HOUR


def _policy(caps: list[dict]) -> object:
    return parse_policy(
        {
            "version": "t",
            "created_at": "2026-10-01T00:00:00Z",
            "defaults": [],
            "rules": [{"match": {"audience": "cold"}, "level": "ad", "caps": caps}] if caps else [],
        }
    )


def _brute(caps: list[tuple[int, int]]) -> int:
    """Serve at most one impression per hour whenever every rolling cap (window, max) allows it, for 3 × 28 days;
    the most impressions found in any 28-day span."""
    times: list[int] = []
    horizon = 3 * W
    for t in range(0, horizon, HOUR):
        if all(sum(1 for s in times if s > t - w) < m for w, m in caps):
            times.append(t)
    return max(sum(1 for s in times if t - W < s <= t) for t in range(0, horizon, HOUR))


@pytest.mark.parametrize(
    "caps",
    [
        [("28d", 5)],
        [("1d", 2)],
        [("5d", 3)],
        [("1d", 2), ("7d", 9)],
        [("56d", 4)],
        [("12h", 1), ("28d", 40)],
    ],
)
def test_effective_cap_is_what_greedy_serving_fits_in_the_window(caps):
    policy = _policy([{"window": w, "max": m} for w, m in caps])
    seconds = {"h": HOUR, "d": 24 * HOUR}
    brute = _brute([(int(w[:-1]) * seconds[w[-1]], m) for w, m in caps])
    assert effective_cap(policy, "cold", "engaged", "ad", W) == brute


def test_an_uncapped_cohort_is_reported_as_far_above_its_curve():
    caps = pd.DataFrame([{"cohort": "cold/engaged", "level": "ad", "cap": 3, "window": "28d", "kind": "cohort",
                          "support": 500, "censored": False, "cap_low": 2, "cap_high": 4, "fallback": "none"}])  # fmt: skip
    imps = pd.DataFrame(columns=["user_id", "ad_id", "audience", "signal_tier"])
    table, rows = fairness_audit(imps, _policy([]), caps)
    assert table[0]["uncapped"] and table[0]["policy_cap"] is None
    assert [r.name for r in rows] == ["cap_to_curve_ratio"] and rows[0].value > 2 and math.isfinite(rows[0].value)


def test_cohorts_without_a_usable_curve_are_left_out():
    base = {"level": "ad", "window": "28d", "kind": "cohort", "support": 500, "censored": False, "fallback": "none"}
    caps = pd.DataFrame(
        [
            {**base, "cohort": "cold/engaged", "cap": 3, "cap_low": 2, "cap_high": 4, "usable": True},
            {**base, "cohort": "cold/converter", "cap": 0, "cap_low": 0, "cap_high": 0, "usable": False},
        ]
    )
    imps = pd.DataFrame(columns=["user_id", "ad_id", "audience", "signal_tier"])
    table, _ = fairness_audit(imps, _policy([{"window": "28d", "max": 3}]), caps)
    assert [r["cohort"] for r in table] == ["cold/engaged"] and table[0]["ratio"] == 1.0
