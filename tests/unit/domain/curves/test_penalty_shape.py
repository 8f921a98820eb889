"""The curve-shaped soft penalty: multiplier tables against a loop written from the definition, and the policy the
curves step writes with them."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from freqcap.domain.curves.core import propose_caps
from freqcap.domain.curves.policy import build_policy
from freqcap.domain.curves.shape import curve_multipliers
from freqcap.domain.policy import dump_policy, load_policy

from .test_caps_policy import RATES, _config, _curves


def brute_table(rates: list[float], floor: float, tol: float = 1e-4) -> list[float]:
    """From the definition, one count at a time: the next impression's rate over the first's, clipped to
    [floor, 1], never above an earlier multiplier; past the curve, halve the distance to the floor until within
    `tol` of it; 6 decimals, and stop at the first value at the floor."""
    out: list[float] = []
    for count in range(len(rates)):
        m = min(1.0, max(floor, rates[count] / rates[0]))
        out.append(min(m, out[-1]) if out else m)
    while out[-1] - floor > tol:
        out.append(floor + (out[-1] - floor) / 2)
    table = []
    for m in out:
        table.append(max(round(m, 6), floor))
        if table[-1] <= floor:
            break
    return table


def test_a_simple_curve_by_hand():
    # n = 1, 2, 3 convert at 2 %, 1 %, 0.5 %: the 2nd impression (one seen) at half the first's rate.
    table = curve_multipliers(np.array([0.02, 0.01, 0.005]), 0.05)
    assert table[:5] == (1.0, 0.5, 0.25, 0.15, 0.1)  # then 0.05 + 0.2/2, 0.05 + 0.2/4: the generic tail
    assert all(a >= b for a, b in pairwise(table))
    assert table[-1] - 0.05 <= 1e-4 + 1e-6


@pytest.mark.parametrize("seed", range(25))
def test_tables_equal_the_definition_on_random_curves(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    # a wear-in bump, a decline, noise that breaks monotonicity, sometimes values below the floor
    rates = 0.02 * np.exp(-rng.uniform(0.0, 0.4) * np.arange(n)) * rng.uniform(0.7, 1.3, n)
    floor = float(rng.choice([0.0, 0.05, 0.2]))
    got = curve_multipliers(rates, floor)
    want = brute_table([float(r) for r in rates], floor)
    assert got is not None
    assert len(got) == len(want)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[0] == 1.0 and min(got) >= floor


def test_no_table_without_a_positive_first_rate_and_a_hole_ends_the_curve():
    assert curve_multipliers(np.array([0.0, 0.01]), 0.05) is None
    assert curve_multipliers(np.array([math.nan, 0.01]), 0.05) is None
    assert curve_multipliers(np.array([]), 0.05) is None
    holed = curve_multipliers(np.array([0.02, 0.01, math.nan, 0.019]), 0.05)
    assert holed == tuple(brute_table([0.02, 0.01], 0.05))  # 0.019 after the hole is not read


def test_the_curve_policy_carries_each_cohorts_table_and_round_trips(tmp_path):
    published, caps = propose_caps(_curves(), ("cold", "returning"), _config(), None)
    generic = build_policy(caps)
    curve = build_policy(caps, penalty_shape="curve", published=published)
    assert curve.version != generic.version  # the same caps with another shape are another policy
    assert all(c.multipliers is None for r in (*generic.rules, *generic.defaults) for c in r.caps)
    seen = 0
    for rule in (*curve.rules, *curve.defaults):
        label = (
            "all"
            if rule.match.audience == "*"
            else f"{rule.match.audience}/{'all' if rule.match.signal_tier == '*' else rule.match.signal_tier}"
        )
        pub = published[(published["cohort"] == label) & (published["level"] == rule.level)].sort_values("n")
        assert rule.caps[0].max == int(caps.set_index("cohort").loc[label, "cap"])  # the caps are unchanged
        assert list(rule.caps[0].multipliers) == brute_table(pub["rate_smooth"].tolist(), curve.penalty.floor)
        seen += 1
    assert seen == len(generic.rules) + len(generic.defaults) > 3
    # a fallback cohort gets its parent's curve, hence its parent's table
    tables = {(r.match.audience, r.match.signal_tier): r.caps[0].multipliers for r in curve.rules}
    assert tables[("cold", "engaged")] == tables[("cold", "*")]
    defaults = {r.level: r.caps[0].multipliers for r in curve.defaults}
    assert tables[("returning", "engaged")] == defaults["ad"] != tables[("cold", "*")]  # the global curve's shape
    again = load_policy(dump_policy(curve, tmp_path / "policy.yaml"))
    assert again == curve


def test_the_curve_shape_needs_the_curves():
    _, caps = propose_caps(_curves(), ("cold", "returning"), _config(), None)
    with pytest.raises(ValueError, match="published curves"):
        build_policy(caps, penalty_shape="curve")
    with pytest.raises(ValueError, match="penalty_shape"):
        build_policy(caps, penalty_shape="steep")  # type: ignore[arg-type]


def test_rates_fixture_has_a_wear_in_bump():
    """Guards the tests above: RATES rises at n = 2, so the running minimum and the clip at 1 are exercised."""
    assert RATES[1] > RATES[0]
