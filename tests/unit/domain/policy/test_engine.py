"""The policy engine against hand-worked cases: hierarchy, several windows, recency, overrides, smooth penalty."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.engine import Candidate, EntityState, decide, penalty_for_distance
from freqcap.domain.policy.schema import PenaltyConfig

NOW = datetime(2026, 10, 15, 12, tzinfo=UTC)
H, D, W = 3600, 86400, 7 * 86400
PEN = {"onset": 1.0, "at_cap": 0.5, "floor": 0.05}
POLICY = parse_policy(
    {
        "version": "t",
        "created_at": "2026-10-15T00:00:00Z",
        "penalty": PEN,
        "defaults": [
            {"level": "ad", "caps": [{"window": "24h", "max": 3}, {"window": "7d", "max": 10}]},
            {"level": "campaign", "caps": [{"window": "24h", "max": 6}]},
        ],
        "rules": [
            {"match": {"audience": "high_intent"}, "level": "ad", "caps": [{"window": "24h", "max": 5}]},
            {"match": {"audience": "cold"}, "level": "ad", "mode": "hard", "caps": [{"window": "24h", "max": 2}]},
            {
                "match": {"audience": "returning"},
                "level": "ad",
                "min_gap": "30m",
                "caps": [{"window": "24h", "max": 4}],
            },
            {
                "match": {"signal_tier": "converter"},
                "level": "advertiser",
                "stop_after_conversion": True,
                "mode": "hard",
                "caps": [{"window": "28d", "max": 50}],
            },
        ],
    }
)
AD = Candidate("a1", "c1", "v1")


def _state(h1=0, d1=0, w1=0, d28=0, last=None, conv=0):
    return EntityState({H: h1, D: d1, W: w1, 28 * D: d28}, last, conv)


def _one(audience, tier, states):
    (d,) = decide(POLICY, audience, tier, [AD], states, NOW)
    return d


# (case, audience, tier, states, eligible, penalty, binding (level, window, cap, count) or kind)
CASES = [
    ("fresh user: no penalty", "returning", "engaged", {}, True, 1.0, None),
    (
        "default ad cap: 1 of 3 in 24h -> d=2 = 1+onset",
        "unknown",
        "engaged",
        {("ad", "a1"): _state(d1=1, w1=1)},
        True,
        1.0,
        ("ad", "24h", 3, 1),
    ),
    (
        "approaching: 2 of 3 -> d=1 -> 0.75",
        "unknown",
        "engaged",
        {("ad", "a1"): _state(d1=2, w1=2)},
        True,
        0.75,
        ("ad", "24h", 3, 2),
    ),
    (
        "at the cap: 3 of 3 -> d=0 -> at_cap",
        "unknown",
        "engaged",
        {("ad", "a1"): _state(d1=3, w1=3)},
        True,
        0.5,
        ("ad", "24h", 3, 3),
    ),
    (
        "one over: d=-1 -> 0.05+0.45/2",
        "unknown",
        "engaged",
        {("ad", "a1"): _state(d1=4, w1=4)},
        True,
        0.275,
        ("ad", "24h", 3, 4),
    ),
    (
        "7d window binds while 24h has room",
        "unknown",
        "engaged",
        {("ad", "a1"): _state(d1=0, w1=10)},
        True,
        0.5,
        ("ad", "7d", 10, 10),
    ),
    (
        "ad cap binds under the campaign cap",
        "unknown",
        "engaged",
        {("ad", "a1"): _state(d1=3, w1=3), ("campaign", "c1"): _state(d1=3)},
        True,
        0.5,
        ("ad", "24h", 3, 3),
    ),
    (
        "campaign cap binds when the ad is fresh",
        "unknown",
        "engaged",
        {("campaign", "c1"): _state(d1=6)},
        True,
        0.5,
        ("campaign", "24h", 6, 6),
    ),
    (
        "high_intent override: 3 in 24h is fine",
        "high_intent",
        "engaged",
        {("ad", "a1"): _state(d1=3, w1=3)},
        True,
        1.0,
        ("ad", "24h", 5, 3),
    ),
    (
        "high_intent slightly over: penalty, not a ban",
        "high_intent",
        "engaged",
        {("ad", "a1"): _state(d1=6, w1=6)},
        True,
        0.275,
        ("ad", "24h", 5, 6),
    ),
    (
        "cold hard cap: under is eligible",
        "cold",
        "engaged",
        {("ad", "a1"): _state(d1=1, w1=1)},
        True,
        1.0,
        ("ad", "24h", 2, 1),
    ),
    (
        "cold hard cap: at the cap is a ban",
        "cold",
        "engaged",
        {("ad", "a1"): _state(d1=2, w1=2)},
        False,
        0.0,
        ("ad", "24h", 2, 2),
    ),
    (
        "recency: 15 of 30 min elapsed -> floor + (1 - floor) * 0.5",
        "returning",
        "engaged",
        {("ad", "a1"): _state(d1=1, last=NOW - timedelta(minutes=15))},
        True,
        0.525,
        "min_gap",
    ),
    (
        "recency satisfied: the cap decides",
        "returning",
        "engaged",
        {("ad", "a1"): _state(d1=1, last=NOW - timedelta(minutes=45))},
        True,
        1.0,
        ("ad", "24h", 4, 1),
    ),
    (
        "converter with a conversion: stop (hard)",
        "returning",
        "converter",
        {("advertiser", "v1"): _state(d28=3, conv=1)},
        False,
        0.0,
        "stop_after_conversion",
    ),
    (
        "converter without conversion here: allowed",
        "returning",
        "converter",
        {("advertiser", "v1"): _state(d28=3)},
        True,
        1.0,
        ("ad", "24h", 4, 0),
    ),
]


@pytest.mark.parametrize(
    ("case", "audience", "tier", "states", "eligible", "penalty", "binding"), CASES, ids=[c[0] for c in CASES]
)
def test_hand_worked_cases(case, audience, tier, states, eligible, penalty, binding):
    d = _one(audience, tier, states)
    assert d.eligible is eligible, d.reason
    assert d.penalty == pytest.approx(penalty), d.reason
    if binding is None:
        assert d.binding is None or d.penalty == 1.0
    elif isinstance(binding, str):
        assert d.binding.kind == binding
    else:
        assert (d.binding.level, d.binding.window, d.binding.cap, d.binding.count) == binding, d.reason


def test_penalty_is_monotone_and_continuous_at_the_cap():
    cfg = PenaltyConfig(**PEN)
    xs = [x / 100 for x in range(-800, 500)]
    values = [penalty_for_distance(x, cfg) for x in xs]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values)), "non-decreasing in distance"
    eps = 1e-9
    for point in (0.0, 1 + cfg.onset):
        assert penalty_for_distance(point - eps, cfg) == pytest.approx(penalty_for_distance(point + eps, cfg), abs=1e-6)
    assert penalty_for_distance(-50, cfg) == pytest.approx(cfg.floor, abs=1e-9)
    assert all(cfg.floor <= v <= 1 for v in values)


def test_decisions_keep_candidate_order_and_each_entity_is_its_own():
    cands = [Candidate("a1", "c1", "v1"), Candidate("a2", "c1", "v1"), Candidate("a3", "c2", "v1")]
    states = {("ad", "a1"): _state(d1=3, w1=3), ("ad", "a3"): _state(d1=2, w1=2)}
    got = decide(POLICY, "unknown", "engaged", cands, states, NOW)
    assert [d.ad_id for d in got] == ["a1", "a2", "a3"]
    assert [d.penalty for d in got] == pytest.approx([0.5, 1.0, 0.75])
