"""Properties of the engine over generated policies and states (hypothesis), each checked against a computation
written here from the documented formulas (engine module docstring), not against the engine's own helpers:

* monotone: one more impression in any window never raises the multiplier, never makes an ineligible ad eligible;
* continuous (soft rules): one impression more moves the multiplier by at most the penalty's largest step, one
  second more since the last impression by at most (1 − floor)/min_gap — no cliff at the cap or at the gap;
* strictest wins: the multiplier is the minimum over every constraint of every rule that applies at each level.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freqcap.config import parse_duration
from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.engine import LEVELS, Candidate, EntityState, decide

NOW = datetime(2026, 10, 15, 12, tzinfo=UTC)
WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
AD = Candidate("a", "c", "v")
ENTITY = {"advertiser": "v", "campaign": "c", "ad": "a"}


@st.composite
def policies(draw, soft_only=False):
    floor = draw(st.sampled_from([0.0, 0.05, 0.2]))
    at_cap = draw(st.sampled_from([0.2, 0.5, 1.0]))
    modes = ["soft"] if soft_only else ["soft", "hard"]
    rules = []
    for level in draw(st.lists(st.sampled_from(LEVELS), min_size=1, max_size=3, unique=True)):
        caps = draw(
            st.lists(
                st.tuples(st.sampled_from(sorted(WINDOWS)), st.integers(1, 8)),
                min_size=1,
                max_size=3,
                unique_by=lambda c: c[0],
            )
        )
        rule = {
            "level": level,
            "caps": [{"window": w, "max": m} for w, m in caps],
            "mode": draw(st.sampled_from(modes)),
        }
        if draw(st.booleans()):
            rule["min_gap"] = draw(st.sampled_from(["10m", "30m", "2h"]))
        if not soft_only:
            rule["stop_after_click"] = draw(st.booleans())
            rule["stop_after_conversion"] = draw(st.booleans())
        rules.append(rule)
    return parse_policy(
        {
            "version": "p",
            "created_at": "2026-10-01T00:00:00Z",
            "penalty": {"onset": draw(st.sampled_from([0.0, 1.0, 2.5])), "at_cap": at_cap, "floor": floor},
            "defaults": rules,
        }
    )


def _states():
    counts = st.fixed_dictionaries({sec: st.integers(0, 15) for sec in WINDOWS.values()})
    last = st.one_of(st.none(), st.integers(0, 3 * 3600).map(lambda s: NOW - timedelta(seconds=s)))
    one = st.builds(EntityState, counts, last, st.integers(0, 1), st.integers(0, 1))
    return st.fixed_dictionaries({level: one for level in LEVELS})


def _decide(policy, states, now=NOW):
    (d,) = decide(policy, "any", "engaged", [AD], {(lv, ENTITY[lv]): s for lv, s in states.items()}, now)
    return d


def _mult(d: float, onset: float, at_cap: float, floor: float) -> float:
    """The documented soft-cap multiplier for d impressions left."""
    if d >= 1 + onset:
        return 1.0
    if d >= 0:
        return at_cap + (1 - at_cap) * d / (1 + onset)
    return floor + (at_cap - floor) * 2.0**d


def _expected(policy, states, now=NOW):
    """(eligible, multiplier): every constraint of every rule at every level, the lowest wins; a hard one breached
    makes the ad ineligible."""
    pen = policy.penalty
    eligible, lowest = True, 1.0
    for rule in policy.defaults:
        state = states[rule.level]
        hard = rule.mode == "hard"
        values = []
        for cap in rule.caps:
            d = cap.max - state.counts[cap.window_seconds]
            values.append((d >= 1) if hard else _mult(d, pen.onset, pen.at_cap, pen.floor))
        if rule.min_gap and state.last_imp_ts is not None:
            elapsed = (now - state.last_imp_ts).total_seconds()
            gap = parse_duration(rule.min_gap).total_seconds()
            if elapsed < gap:
                values.append(False if hard else pen.floor + (1 - pen.floor) * elapsed / gap)
        if (rule.stop_after_click and state.clicks) or (rule.stop_after_conversion and state.conversions):
            values.append(False if hard else pen.floor)
        for v in values:
            if v is False:
                eligible = False
            elif v is not True:
                lowest = min(lowest, v)
    return eligible, (0.0 if not eligible else round(lowest, 6))


COMMON = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(policies(), _states())
def test_strictest_constraint_wins(policy, states):
    d = _decide(policy, states)
    assert (d.eligible, d.penalty) == pytest.approx(_expected(policy, states), abs=1e-6)


@COMMON
@given(policies(), _states(), st.sampled_from(LEVELS), st.sampled_from(sorted(WINDOWS.values())))
def test_one_more_impression_never_raises_the_multiplier(policy, states, level, window):
    before = _decide(policy, states)
    bumped = dict(states)
    s = states[level]
    bumped[level] = EntityState({**s.counts, window: s.counts[window] + 1}, s.last_imp_ts, s.conversions, s.clicks)
    after = _decide(policy, bumped)
    assert after.penalty <= before.penalty + 1e-9
    assert before.eligible or not after.eligible


@COMMON
@given(policies(soft_only=True), _states(), st.sampled_from(LEVELS), st.sampled_from(sorted(WINDOWS.values())))
def test_one_more_impression_moves_a_soft_multiplier_by_a_bounded_step(policy, states, level, window):
    pen = policy.penalty
    # the largest step of the documented curve: the linear part's slope, or the first step beyond the cap
    step = max((1 - pen.at_cap) / (1 + pen.onset), (pen.at_cap - pen.floor) / 2)
    s = states[level]
    bumped = {**states, level: EntityState({**s.counts, window: s.counts[window] + 1}, s.last_imp_ts)}
    assert abs(_decide(policy, states).penalty - _decide(policy, bumped).penalty) <= step + 1e-6


@COMMON
@given(policies(soft_only=True), _states(), st.integers(1, 120))
def test_time_moves_a_soft_multiplier_continuously(policy, states, seconds):
    """No cliff at the end of a min_gap: `seconds` later the multiplier moved by at most (1 − floor)·δ/gap."""
    gaps = [parse_duration(r.min_gap).total_seconds() for r in policy.defaults if r.min_gap]
    bound = (1 - policy.penalty.floor) * seconds / min(gaps) if gaps else 0.0
    now, later = _decide(policy, states), _decide(policy, states, NOW + timedelta(seconds=seconds))
    assert later.penalty >= now.penalty - 1e-6  # waiting never makes it stricter
    assert later.penalty - now.penalty <= bound + 1e-6
