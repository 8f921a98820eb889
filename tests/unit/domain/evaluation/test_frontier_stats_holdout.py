"""Equal-volume interpolation, reserve matching, intervals and the holdout assignment (pure parts)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from freqcap.domain.evaluation.frontier import FrontierPoint, interpolate, match_volume, nearest_gap, reserve_for_volume
from freqcap.domain.evaluation.holdout import holdout_assignment, holdout_unit
from freqcap.domain.evaluation.stats import mean_ci, ratio_lift


def pts(*xy):
    return [FrontierPoint(0.0, float(x), float(y), float(y) / 2) for x, y in xy]


# ---------------------------------------------------------------------------------------------- interpolation


def test_interpolation_between_bracketing_runs():
    p = pts((100, 50), (80, 44), (60, 36))
    assert interpolate(p, 100) == 50
    assert interpolate(p, 90) == pytest.approx(47.0)
    assert interpolate(p, 65) == pytest.approx(36 + 8 * 5 / 20)
    assert interpolate(p, 90, "expected_conversions") == pytest.approx(23.5)


def test_interpolation_below_the_lowest_run_uses_the_two_lowest_runs():
    p = pts((100, 50), (80, 44))
    assert interpolate(p, 78) == pytest.approx(44 - 6 * 2 / 20)  # the line through (80, 44) and (100, 50)
    assert interpolate(pts((100, 50)), 50) == pytest.approx(25.0)  # one run: through the origin


def test_interpolation_above_the_natural_volume_is_not_made():
    assert np.isnan(interpolate(pts((100, 50), (80, 44)), 100.5))
    assert np.isnan(interpolate([], 10))


def test_interpolation_matches_a_brute_force_line_on_random_frontiers():
    rng = np.random.default_rng(3)
    for _ in range(200):
        xs = np.sort(rng.uniform(1, 100, 5))
        ys = np.sqrt(xs) * 10
        v = rng.uniform(xs[0], xs[-1])
        j = int(np.searchsorted(xs, v))
        expect = ys[j - 1] + (v - xs[j - 1]) * (ys[j] - ys[j - 1]) / (xs[j] - xs[j - 1]) if xs[j] != v else ys[j]
        assert interpolate(pts(*zip(xs, ys, strict=True)), v) == pytest.approx(expect)


def test_nearest_gap():
    assert nearest_gap(pts((100, 1), (81, 1)), 80) == pytest.approx(1 / 80)
    assert nearest_gap(pts((100, 1)), 100) == 0


# ---------------------------------------------------------------------------------------------- reserve search


def test_reserve_for_volume_keeps_that_many_values():
    rng = np.random.default_rng(0)
    v = np.r_[rng.lognormal(size=1000), np.zeros(50)]  # zeros: ineligible opportunities never count
    for k in (1, 10, 500, 999):
        r = reserve_for_volume(v, k)
        assert int((v >= r).sum()) == k
    assert reserve_for_volume(v, 1000) == 0.0
    assert reserve_for_volume(v, 5000) == 0.0


def test_match_volume_lands_within_tolerance_despite_state_effects():
    """A replay whose fill at a reserve is a bit higher than the prediction (users are fresher with fewer ads)."""
    rng = np.random.default_rng(1)
    values = rng.lognormal(size=20_000)
    calls = []

    def run(reserve):
        calls.append(reserve)
        kept = values >= reserve
        # fewer impressions leave users fresher: best values rise by up to 8 % as volume falls
        boosted = values * (1 + 0.08 * (1 - kept.mean()))
        kept = boosted >= reserve
        return FrontierPoint(reserve, float(kept.sum()), float(kept.sum()) / 2), boosted

    natural = run(0.0)
    calls.clear()
    for target in (18_000, 12_000, 6_000):
        new = match_volume(run, [natural], target, tolerance=0.01, max_runs=4)
        assert new, "at least one run"
        assert abs(new[-1][0].impressions - target) <= 0.01 * target
    assert len(calls) <= 12
    assert match_volume(run, [natural], 25_000) == []  # above the natural volume: nothing to run


# ---------------------------------------------------------------------------------------------- intervals


def test_mean_ci_is_the_student_t_interval():
    v = [1.0, 2.0, 4.0, 7.0]
    iv = mean_ci(v, 0.95)
    half = stats.t.ppf(0.975, 3) * np.std(v, ddof=1) / 2
    assert (
        iv.mean == pytest.approx(3.5) and iv.low == pytest.approx(3.5 - half) and iv.high == pytest.approx(3.5 + half)
    )
    assert np.isnan(mean_ci([1.0]).low)
    assert mean_ci([1.0, float("nan"), 3.0]).n == 2


def test_ratio_lift_covers_the_true_lift_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered = 0
    covered_cuped = 0
    se, se_cuped = [], []
    trials = 300
    for _ in range(trials):
        x = rng.gamma(1.0, 50.0, 4000)  # opportunities per user
        base = rng.poisson(0.02 * x).astype(float)
        treated = rng.random(4000) < 0.8
        y = np.where(treated, rng.poisson(0.02 * 1.1 * x), base)
        truth = 0.1
        est = ratio_lift(y, treated)
        cup = ratio_lift(y, treated, covariate=x)
        covered += est.low <= truth <= est.high
        covered_cuped += cup.low <= truth <= cup.high
        se.append(est.se)
        se_cuped.append(cup.se)
    assert 0.91 <= covered / trials <= 0.99
    assert 0.91 <= covered_cuped / trials <= 0.99
    assert np.mean(se_cuped) < 0.8 * np.mean(se)  # the covariate explains most of the variance here


def test_ratio_lift_needs_both_arms():
    with pytest.raises(ValueError):
        ratio_lift(np.ones(5), np.ones(5, dtype=bool))


# ---------------------------------------------------------------------------------------------- holdout


def test_holdout_assignment_is_stable_and_independent_of_other_users():
    ids = [f"u{i:07d}" for i in range(5000)]
    a = holdout_assignment(ids, 0.1)
    assert np.array_equal(a, holdout_assignment(ids, 0.1))
    perm = np.random.default_rng(0).permutation(len(ids))
    assert np.array_equal(holdout_assignment([ids[i] for i in perm], 0.1), a[perm])
    assert np.array_equal(holdout_assignment(ids[:100], 0.1), a[:100])
    # a larger share only adds users: the 10 % holdout is inside the 20 % one
    b = holdout_assignment(ids, 0.2)
    assert (b | ~a).all()


@pytest.mark.parametrize("share", [0.02, 0.1, 0.5])
def test_holdout_share_is_the_requested_share(share):
    n = 100_000
    held = holdout_assignment((f"u{i}" for i in range(n)), share)
    sd = np.sqrt(share * (1 - share) / n)
    assert abs(held.mean() - share) < 4 * sd


def test_holdout_salts_give_independent_splits():
    ids = [f"u{i}" for i in range(50_000)]
    a = holdout_assignment(ids, 0.5, "one")
    b = holdout_assignment(ids, 0.5, "two")
    assert abs((a & b).mean() - 0.25) < 0.01
    u = holdout_unit(ids)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    with pytest.raises(ValueError):
        holdout_assignment(ids, 1.0)
