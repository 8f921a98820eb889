"""The decision for an id-less request (`anonymous_verdict`) against a brute-force computation straight from the
policy document, against the engine's own decisions for a capped user, and on hand-computed examples."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings

from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.anonymous import anonymous_decisions, anonymous_verdict, expected_cap_penalty
from freqcap.domain.policy.engine import Candidate, Decision, EntityState, decide
from freqcap.domain.policy.schema import policy_document
from tests.unit.domain.policy.test_engine_compiled import TIERS, WINDOWS, policies

NOW = datetime(2026, 10, 15, 12, tzinfo=UTC)
LEVEL_ORDER = ("advertiser", "campaign", "ad")


def _penalty_by_hand(distance: int, onset: float, at_cap: float, floor: float) -> float:
    """The multiplier of the engine's docstring, written out again: 1 well under, linear to at_cap, then halving."""
    if distance >= 1 + onset:
        return 1.0
    if distance >= 0:
        return at_cap + (1 - at_cap) * distance / (1 + onset)
    return floor + (at_cap - floor) * 2.0**distance


def _rules_for(doc: dict, audience: str, tier: str, level: str) -> list[dict]:
    """The rules of the document that apply, by the schema's matching rule (most specific, else the defaults)."""
    matching = []
    for rule in doc["rules"]:
        match = rule.get("match", {})
        a, t = match.get("audience", "*"), match.get("signal_tier", "*")
        if rule["level"] == level and a in ("*", audience) and t in ("*", tier):
            matching.append(((a != "*") * 2 + (t != "*"), rule))
    if matching:
        return [max(matching, key=lambda m: m[0])[1]]
    return [r for r in doc["defaults"] if r["level"] == level]


def brute_force(doc: dict) -> tuple[float, set[tuple[str, str, int]]]:
    """(lowest expected multiplier over every cohort and cap, the caps that reach it): each impression a capped
    user can get (count seen 0..cap−1) priced with the multiplier, averaged; hard caps never exclude within."""
    pen = doc["penalty"]
    named = {r.get("match", {}).get("audience", "*") for r in doc["rules"]} - {"*"}
    audiences = [*named, "an-audience-no-rule-names"]
    results = []
    for audience in audiences:
        for tier in TIERS:
            for level in LEVEL_ORDER:
                for rule in _rules_for(doc, audience, tier, level):
                    for cap in rule["caps"]:
                        c = cap["max"]
                        table = cap.get("multipliers")
                        if rule.get("mode", "soft") == "hard":
                            mult = 1.0
                        elif table is not None:  # the curve-shaped penalty: the table by count, its last past the end
                            prices = [table[seen] if seen < len(table) else table[-1] for seen in range(c)]
                            mult = sum(prices) / len(prices)
                        else:
                            prices = [
                                _penalty_by_hand(c - seen, pen["onset"], pen["at_cap"], pen["floor"])
                                for seen in range(c)
                            ]
                            mult = sum(prices) / len(prices)
                        results.append((mult, (level, cap["window"], c)))
    if not results:
        return 1.0, set()
    lowest = min(m for m, _ in results)
    return lowest, {who for m, who in results if abs(m - lowest) < 1e-9}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_anonymous_verdict_equals_brute_force(policy):
    doc = policy_document(policy)
    expected, binding_caps = brute_force(doc)
    got = anonymous_verdict(policy)
    assert got.eligible is True
    assert got.penalty == pytest.approx(expected, abs=1e-6)
    if got.binding is None:
        assert binding_caps == set()
    else:
        b = got.binding
        assert (b.level, b.window, b.cap) in binding_caps
        assert b.count == pytest.approx((b.cap - 1) / 2) and got.distance_to_cap == pytest.approx((b.cap + 1) / 2)


@pytest.mark.parametrize("cap", [1, 2, 3, 5, 12])
@pytest.mark.parametrize("audience", ["cold", "someone-else"])
@pytest.mark.parametrize("table", [None, [1.0, 0.8, 0.5, 0.25]])
def test_the_penalty_is_the_engines_average_over_a_capped_users_impressions(cap, audience, table):
    """One soft cap (generic, or curve-shaped by a table): the engine's penalty for an identified user at each
    count 0..cap−1, averaged."""
    spec = {"window": "24h", "max": cap} | ({} if table is None else {"multipliers": table})
    policy = parse_policy(
        {
            "version": "one-cap",
            "created_at": "2026-10-01T00:00:00Z",
            "defaults": [{"level": "ad", "caps": [spec]}],
        }
    )
    ad = Candidate("a1", "c1", "v1")
    engine = [
        decide(policy, audience, "engaged", [ad], {("ad", "a1"): EntityState({WINDOWS["24h"]: seen})}, NOW)[0].penalty
        for seen in range(cap)
    ]
    assert anonymous_verdict(policy).penalty == pytest.approx(sum(engine) / cap, abs=1e-6)


def test_hand_computed_example():
    """Default penalty shape (onset 1, at_cap 0.5): a cap of 2 prices its impressions 1 and 0.75 (mean 0.875), a
    cap of 6 five at 1 and one at 0.75 (0.958); a rule for `cold` with a cap of 1 prices its only one at 0.75."""
    doc = {
        "version": "hand",
        "created_at": "2026-10-01T00:00:00Z",
        "defaults": [
            {"level": "campaign", "caps": [{"window": "24h", "max": 6}]},
            {"level": "ad", "caps": [{"window": "1h", "max": 2}, {"window": "7d", "max": 4}]},
        ],
    }
    v = anonymous_verdict(parse_policy(doc))
    assert v.penalty == 0.875 and (v.binding.level, v.binding.window, v.binding.cap) == ("ad", "1h", 2)
    assert v.binding.count == 0.5 and v.distance_to_cap == 1.5
    doc["rules"] = [{"match": {"audience": "cold"}, "level": "advertiser", "caps": [{"window": "7d", "max": 1}]}]
    v = anonymous_verdict(parse_policy(doc))
    assert v.penalty == 0.75 and v.binding.level == "advertiser" and v.audience == "cold"
    # A hard cap never excludes within the cap: it does not lower the price.
    doc["rules"][0]["mode"] = "hard"
    assert anonymous_verdict(parse_policy(doc)).penalty == 0.875
    assert expected_cap_penalty(3, hard=True, penalty=parse_policy(doc).penalty) == 1.0


def test_no_caps_no_penalty_and_every_candidate_alike():
    empty = parse_policy({"version": "none", "created_at": "2026-10-01T00:00:00Z"})
    assert anonymous_verdict(empty).penalty == 1.0 and anonymous_verdict(empty).binding is None
    policy = parse_policy(
        {
            "version": "p",
            "created_at": "2026-10-01T00:00:00Z",
            "defaults": [{"level": "ad", "caps": [{"window": "24h", "max": 3}]}],
        }
    )
    cands = [Candidate(f"a{i}", f"c{i % 2}", "v1") for i in range(5)]
    out = anonymous_decisions(policy, cands)
    assert [d.ad_id for d in out] == [c.ad_id for c in cands]
    assert {(d.penalty, d.distance_to_cap, d.binding, d.reason) for d in out} == {
        (out[0].penalty, 2.0, out[0].binding, out[0].reason)
    }
    assert anonymous_verdict(policy) is anonymous_verdict(policy)  # computed once per policy
    v = anonymous_verdict(policy)
    assert out == [Decision(c.ad_id, True, v.penalty, 2.0, v.binding, v.reason) for c in cands]  # real Decisions
