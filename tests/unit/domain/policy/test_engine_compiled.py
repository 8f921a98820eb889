"""The compiled engine (`decide`: lookup tables per policy, each state and verdict combination judged once per
request) against the reference semantics (`decide_reference`: each candidate on its own, straight from the policy)
on generated policies, users and candidates: the decisions are equal, field for field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.engine import (
    LEVELS,
    Candidate,
    EntityState,
    compile_policy,
    decide,
    decide_reference,
)

NOW = datetime(2026, 10, 15, 12, tzinfo=UTC)
WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
AUDIENCES = ["cold", "returning", "high_intent"]  # "elsewhere" (no rule names it) is drawn too
TIERS = ["impression_only", "engaged", "converter"]


def _caps():
    return st.lists(
        st.tuples(st.sampled_from(sorted(WINDOWS)), st.integers(1, 6)), min_size=1, max_size=3, unique_by=lambda c: c[0]
    ).map(lambda caps: [{"window": w, "max": m} for w, m in caps])


def _rule(match):
    return (
        st.fixed_dictionaries(
            {
                "match": match,
                "level": st.sampled_from(LEVELS),
                "caps": _caps(),
                "mode": st.sampled_from(["soft", "hard"]),
                "stop_after_conversion": st.booleans(),
                "stop_after_click": st.booleans(),
            },
            optional={"min_gap": st.sampled_from(["10m", "30m", "2h"])},
        )
        .map(_with_cooldown)
        .flatmap(_with_tables)
    )


def _table():
    """A non-increasing multiplier table at or above every floor the policies draw (0.2 at most)."""
    return st.lists(st.sampled_from([1.0, 0.9, 0.75, 0.5, 0.3, 0.2]), min_size=1, max_size=8).map(
        lambda v: sorted(v, reverse=True)
    )


def _with_tables(rule):
    """Some caps of soft rules carry a multiplier table (the curve-shaped penalty)."""
    if rule["mode"] != "soft":
        return st.just(rule)
    tables = st.tuples(*(st.one_of(st.none(), _table()) for _ in rule["caps"]))
    return tables.map(
        lambda ts: {
            **rule,
            "caps": [c if t is None else {**c, "multipliers": t} for c, t in zip(rule["caps"], ts, strict=True)],
        }
    )


def _with_cooldown(rule):
    """A cool-down on some rules with a stop (a window the states count clicks and conversions over)."""
    if (rule["stop_after_click"] or rule["stop_after_conversion"]) and rule["caps"][0]["max"] % 2:
        rule = {**rule, "stop_cooldown": "24h"}
    return rule


@st.composite
def policies(draw):
    floor = draw(st.sampled_from([0.0, 0.05, 0.2]))
    at_cap = draw(st.sampled_from([0.2, 0.5, 1.0]))
    specific = st.fixed_dictionaries(
        {}, optional={"audience": st.sampled_from(AUDIENCES), "signal_tier": st.sampled_from(TIERS)}
    )
    rules = draw(st.lists(_rule(specific), max_size=6, unique_by=lambda r: (str(r["match"]), r["level"])))
    seen, unique = set(), []
    for r in rules:  # one rule per (audience, tier, level), as the schema demands
        key = (r["match"].get("audience", "*"), r["match"].get("signal_tier", "*"), r["level"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return parse_policy(
        {
            "version": "p",
            "created_at": "2026-10-01T00:00:00Z",
            "penalty": {"onset": draw(st.sampled_from([0.0, 1.0, 2.5])), "at_cap": at_cap, "floor": floor},
            "defaults": draw(st.lists(_rule(st.just({})), max_size=4)),  # several defaults per level allowed
            "rules": unique,
        }
    )


def _state():
    counts = st.fixed_dictionaries({sec: st.integers(0, 90) for sec in WINDOWS.values()})
    last = st.one_of(st.none(), st.integers(-600, 3 * 3600).map(lambda s: NOW - timedelta(seconds=s)))
    by_window = st.fixed_dictionaries({sec: st.integers(0, 2) for sec in WINDOWS.values()})
    return st.builds(
        EntityState,
        counts,
        last,
        st.integers(0, 2),
        st.integers(0, 2),
        click_counts=by_window,
        conversion_counts=by_window,
    )


@st.composite
def requests(draw):
    n_adv, n_camp = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    cands = [
        Candidate(
            f"ad{draw(st.integers(0, 12))}", f"c{draw(st.integers(0, n_camp))}", f"v{draw(st.integers(0, n_adv))}"
        )
        for _ in range(draw(st.integers(0, 25)))
    ]
    shared = draw(_state())  # one state object handed for many entities, as the fast reader does for "never shown"
    states = {}
    for cand in cands:
        for level in LEVELS:
            key = (level, cand.entity(level))
            choice = draw(st.sampled_from(["missing", "shared", "own"]))
            if choice == "shared":
                states[key] = shared
            elif choice == "own":
                states[key] = draw(_state())
    audience = draw(st.sampled_from([*AUDIENCES, "elsewhere"]))
    return audience, draw(st.sampled_from(TIERS)), cands, states


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), requests())
def test_compiled_decisions_equal_the_reference(policy, request):
    audience, tier, cands, states = request
    assert decide(policy, audience, tier, cands, states, NOW) == decide_reference(
        policy, audience, tier, cands, states, NOW
    )


def test_counts_far_beyond_the_cap_and_the_tabulated_distances():
    policy = parse_policy(
        {
            "version": "p",
            "created_at": "2026-10-01T00:00:00Z",
            "defaults": [{"level": "ad", "caps": [{"window": "24h", "max": 3}]}],
        }
    )
    cands = [Candidate(f"a{n}", "c", "v") for n in range(0, 400, 7)]
    states = {("ad", c.ad_id): EntityState({86400: int(c.ad_id[1:])}) for c in cands}
    assert decide(policy, "x", "engaged", cands, states, NOW) == decide_reference(
        policy, "x", "engaged", cands, states, NOW
    )


def test_a_missing_window_count_raises_on_both_paths():
    policy = parse_policy(
        {
            "version": "p",
            "created_at": "2026-10-01T00:00:00Z",
            "defaults": [{"level": "ad", "caps": [{"window": "7d", "max": 3}]}],
        }
    )
    states = {("ad", "a"): EntityState({86400: 1})}
    for engine in (decide, decide_reference):
        with pytest.raises(KeyError, match="604800s window"):
            engine(policy, "x", "engaged", [Candidate("a", "c", "v")], states, NOW)


def test_the_compiled_tables_are_built_once_per_policy_and_cover_every_cohort():
    policy = parse_policy(
        {
            "version": "p",
            "created_at": "2026-10-01T00:00:00Z",
            "rules": [{"match": {"audience": "cold"}, "level": "ad", "caps": [{"window": "24h", "max": 1}]}],
        }
    )
    compiled = compile_policy(policy)
    assert compile_policy(policy) is compiled
    # Audiences no rule names share one cohort; the named one has its own.
    assert compiled.cohort("warm", "engaged") is compiled.cohort("anything", "converter")
    assert compiled.cohort("cold", "engaged") is not compiled.cohort("warm", "engaged")


def test_a_multiplier_table_sets_the_soft_multiplier_by_count_on_both_paths():
    """The table read by count (past its end: its last value), the strictest of table and generic caps wins."""
    table = [1.0, 0.8, 0.45, 0.2]
    policy = parse_policy(
        {
            "version": "p",
            "created_at": "2026-10-01T00:00:00Z",
            "rules": [{"level": "ad", "caps": [{"window": "24h", "max": 3, "multipliers": table}]}],
            "defaults": [{"level": "campaign", "caps": [{"window": "7d", "max": 6}]}],
        }
    )
    pen = policy.penalty
    cands = [Candidate(f"a{n}", f"c{n}", "v") for n in range(9)]
    states = {}
    for n in range(9):
        states[("ad", f"a{n}")] = EntityState({86400: n})
        states[("campaign", f"c{n}")] = EntityState({7 * 86400: n})
    want = []
    for n in range(9):
        ad = table[min(n, len(table) - 1)]
        d = 6 - n  # the campaign default: the generic shape, written out from the documented formula
        if d >= 1 + pen.onset:
            camp = 1.0
        elif d >= 0:
            camp = pen.at_cap + (1 - pen.at_cap) * d / (1 + pen.onset)
        else:
            camp = pen.floor + (pen.at_cap - pen.floor) * 2.0**d
        want.append(round(min(ad, camp), 6))
    for engine in (decide, decide_reference):
        got = engine(policy, "x", "engaged", cands, states, NOW)
        assert [d.penalty for d in got] == want, engine.__name__
        assert [d.binding.level for d in got][:4] == ["ad", "ad", "ad", "ad"]
    # the generic campaign cap binds once it falls below the table (count 8: 0.05 + 0.45/4 < 0.2; 7: 0.275 > 0.2)
    assert [d.binding.level for d in decide(policy, "x", "engaged", cands, states, NOW)][7:] == ["ad", "campaign"]
    assert decide(policy, "x", "engaged", cands, states, NOW) == decide_reference(
        policy, "x", "engaged", cands, states, NOW
    )
