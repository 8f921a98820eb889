"""The compiled policy against the policy engine, and the policy builders."""

from __future__ import annotations

import numpy as np
import pytest

from freqcap.domain.evaluation.policies import (
    TIER_NAMES,
    ReplayPolicy,
    compile_policy,
    global_cap_policy,
    oracle_policy,
    penalties,
    penalty_for_distance_vec,
    true_caps,
    with_mode,
)
from freqcap.domain.events import LEVELS
from freqcap.domain.policy import PenaltyConfig, parse_policy
from freqcap.domain.policy.engine import Candidate, EntityState, decide, penalty_for_distance
from freqcap.domain.simulate import ModelParams, cap_from_curve, declared_curves

AUDIENCES = ("high_intent", "returning", "cold")
WINDOWS = ("1h", "24h", "7d")
WINDOW_US = {"1h": 3600 * 10**6, "24h": 86400 * 10**6, "7d": 7 * 86400 * 10**6}


def random_table(rng: np.random.Generator, floor: float) -> list[float]:
    """A non-increasing multiplier table in [floor, 1] of 1…12 values (the curve-shaped penalty)."""
    return sorted((float(v) for v in rng.uniform(floor, 1.0, int(rng.integers(1, 13)))), reverse=True)


def random_policy(rng: np.random.Generator, tables: bool = False) -> object:
    rules = []
    seen = set()
    for _ in range(int(rng.integers(0, 8))):
        aud = str(rng.choice(["*", *AUDIENCES]))
        tier = str(rng.choice(["*", *TIER_NAMES]))
        level = str(rng.choice(LEVELS))
        if (aud, tier, level) in seen:
            continue
        seen.add((aud, tier, level))
        windows = rng.choice(WINDOWS, size=int(rng.integers(1, 3)), replace=False)
        caps = [{"window": str(w), "max": int(rng.integers(1, 6))} for w in windows]
        mode = str(rng.choice(["soft", "hard"]))
        if tables and mode == "soft":
            for cap in caps:
                if rng.random() < 0.7:
                    cap["multipliers"] = random_table(rng, 0.05)
        rules.append({"match": {"audience": aud, "signal_tier": tier}, "level": level, "caps": caps,
                      "mode": mode})  # fmt: skip
    defaults = [
        {"level": str(lv), "caps": [{"window": str(rng.choice(WINDOWS)), "max": int(rng.integers(1, 6))}],
         "mode": str(rng.choice(["soft", "hard"]))}
        for lv in rng.choice(LEVELS, size=int(rng.integers(0, 3)), replace=False)
    ]  # fmt: skip
    penalty = {"onset": float(rng.choice([0.0, 1.0, 2.5])), "at_cap": 0.5, "floor": float(rng.choice([0.0, 0.05]))}
    return parse_policy({"version": "r", "created_at": "2026-01-01T00:00:00+00:00", "penalty": penalty,
                         "rules": rules, "defaults": defaults})  # fmt: skip


@pytest.mark.parametrize(("seed", "tables"), [(s, False) for s in range(40)] + [(s, True) for s in range(40, 70)])
def test_penalties_equal_the_engine_on_random_policies_and_states(seed, tables):
    rng = np.random.default_rng(seed)
    policy = random_policy(rng, tables)
    compiled = compile_policy(ReplayPolicy("r", policy), AUDIENCES, TIER_NAMES)
    n, k = 30, 4
    aud = rng.integers(0, len(AUDIENCES), n)
    tier = rng.integers(0, len(TIER_NAMES), n)
    # counts per (row, candidate, level, window), nested windows: 1h ≤ 24h ≤ 7d
    c1 = rng.integers(0, 4, (n, k, len(LEVELS)))
    c24 = c1 + rng.integers(0, 5, (n, k, len(LEVELS)))
    c7 = c24 + rng.integers(0, 9, (n, k, len(LEVELS)))
    counts = {WINDOW_US["1h"]: c1, WINDOW_US["24h"]: c24, WINDOW_US["7d"]: c7}
    eligible, pen = penalties(compiled, aud * len(TIER_NAMES) + tier, lambda w: counts[w], (n, k))
    from datetime import UTC, datetime

    for i in range(n):
        cands = [Candidate(f"ad{j}", f"c{j}", f"a{j}") for j in range(k)]
        states = {}
        for j in range(k):
            for li, lv in enumerate(LEVELS):
                ent = {"ad": f"ad{j}", "campaign": f"c{j}", "advertiser": f"a{j}"}[lv]
                states[(lv, ent)] = EntityState(
                    counts={3600: int(c1[i, j, li]), 86400: int(c24[i, j, li]), 7 * 86400: int(c7[i, j, li])}
                )
        decisions = decide(policy, AUDIENCES[aud[i]], TIER_NAMES[tier[i]], cands, states, datetime.now(UTC))
        assert [d.eligible for d in decisions] == list(eligible[i]), (seed, i)
        np.testing.assert_allclose([d.penalty for d in decisions], pen[i], rtol=0, atol=1e-12, err_msg=f"{seed} {i}")


def test_penalty_lookup_equals_the_engine_formula():
    for cfg in (PenaltyConfig(), PenaltyConfig(onset=0.0, at_cap=0.3, floor=0.0), PenaltyConfig(onset=2.5)):
        d = np.arange(-100, 10)
        ref = [penalty_for_distance(float(x), cfg) for x in d]
        np.testing.assert_allclose(penalty_for_distance_vec(d, cfg), ref, rtol=0, atol=1e-15)
        compiled = compile_policy(
            ReplayPolicy("g", global_cap_policy(10, mode="soft").model_copy(update={"penalty": cfg})), AUDIENCES
        )
        counts = (10 - d)[:, None, None] * np.ones((1, 1, 3), dtype=np.int64)  # campaign count → distance d
        _, pen = penalties(compiled, np.zeros(len(d), dtype=np.int64), lambda w, c=counts: c, (len(d), 1))
        np.testing.assert_allclose(pen[:, 0], np.round(ref, 6), rtol=0, atol=1e-12)


def test_multiplier_tables_are_read_by_count_per_level():
    """One cohort, the ad level with a table, the campaign level generic: the penalty is the smaller of the ad
    table at the ad count and the generic shape at the campaign distance, from the definitions."""
    table = [1.0, 0.9, 0.6, 0.35, 0.2]
    policy = parse_policy({"version": "t", "created_at": "2026-01-01T00:00:00+00:00",
                           "rules": [{"match": {"audience": "cold"}, "level": "ad",
                                      "caps": [{"window": "24h", "max": 4, "multipliers": table}]}],
                           "defaults": [{"level": "campaign", "caps": [{"window": "24h", "max": 5}]}]})  # fmt: skip
    compiled = compile_policy(ReplayPolicy("t", policy), AUDIENCES)
    ad, camp = np.meshgrid(np.arange(0, 120), np.arange(0, 12), indexing="ij")
    ad, camp = ad.ravel(), camp.ravel()
    counts = np.zeros((len(ad), 1, 3), dtype=np.int64)
    counts[:, 0, LEVELS.index("ad")], counts[:, 0, LEVELS.index("campaign")] = ad, camp
    cold = AUDIENCES.index("cold") * len(TIER_NAMES)
    for cohort, uses_table in ((cold, True), (0, False)):  # high_intent: no rule, only the campaign default
        _, pen = penalties(compiled, np.full(len(ad), cohort), lambda w: counts, (len(ad), 1))
        want = [
            round(min(table[min(a, 4)] if uses_table else 1.0, penalty_for_distance(5 - c, policy.penalty)), 6)
            for a, c in zip(ad, camp, strict=True)
        ]
        np.testing.assert_allclose(pen[:, 0], want, rtol=0, atol=1e-12)


def test_multiplier_tables_need_raw_counts():
    policy = parse_policy({"version": "t", "created_at": "2026-01-01T00:00:00+00:00",
                           "defaults": [{"level": "ad", "caps": [{"window": "24h", "max": 4,
                                                                  "multipliers": [1.0, 0.5]}]}]})  # fmt: skip
    compiled = compile_policy(ReplayPolicy("t", policy, counts="effective"), AUDIENCES)
    with pytest.raises(ValueError, match="integer"):
        penalties(compiled, np.zeros(2, dtype=np.int64), lambda w: np.full((2, 1, 3), 1.5), (2, 1))


def test_min_gap_is_rejected_not_ignored():
    policy = parse_policy({"version": "g", "created_at": "2026-01-01T00:00:00+00:00",
                           "defaults": [{"level": "ad", "caps": [{"window": "24h", "max": 3}], "min_gap": "30m"}]})  # fmt: skip
    with pytest.raises(ValueError, match="min_gap"):
        compile_policy(ReplayPolicy("g", policy), AUDIENCES)


def test_with_mode_switches_every_rule_and_keeps_the_caps():
    policy = oracle_policy(ModelParams(), 0.5, "soft")
    hard = with_mode(policy, "hard")
    assert {r.mode for r in hard.rules} == {"hard"}
    assert [(r.match, r.level, r.caps) for r in hard.rules] == [(r.match, r.level, r.caps) for r in policy.rules]


def test_with_mode_hard_drops_the_multiplier_tables_and_keeps_the_maxima():
    doc = oracle_policy(ModelParams(), 0.5, "soft").model_dump(mode="json")
    doc["rules"][0]["caps"][0]["multipliers"] = [1.0, 0.5]
    curve = parse_policy(doc)
    hard = with_mode(curve, "hard")
    assert all(c.multipliers is None for r in hard.rules for c in r.caps)
    assert [c.max for r in hard.rules for c in r.caps] == [c.max for r in curve.rules for c in r.caps]


def test_oracle_caps_are_the_simulators_true_caps():
    params = ModelParams()
    curves = declared_curves(params)
    caps = true_caps(params, 0.6)
    for aud in params.audience_names():
        for lv in LEVELS:
            assert caps[aud][lv] == cap_from_curve(curves[aud][lv]["marginal_rate"], 0.6)
    policy = oracle_policy(params, 0.6)
    for rule in policy.rules:
        assert rule.caps[0].max == max(caps[rule.match.audience][rule.level], 1)
    compiled = compile_policy(ReplayPolicy("o", policy, counts="effective"), params.audience_names())
    assert not compiled.uses_tier


def test_global_cap_binds_only_its_level():
    compiled = compile_policy(ReplayPolicy("g", global_cap_policy(3, level="campaign", window="24h")), AUDIENCES)
    assert len(compiled.constraints) == 1
    c = compiled.constraints[0]
    assert c.hard and c.window_us == WINDOW_US["24h"]
    assert (c.max_by_cohort[:, LEVELS.index("campaign")] == 3).all()
    assert compiled.levels_with_window(WINDOW_US["24h"]) == {"campaign"}
