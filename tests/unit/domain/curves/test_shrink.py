"""Empirical-Bayes shrinkage of cohort curves towards their audience's, on synthetic curves whose true ratios are
known: noise is removed where the cohorts agree, real differences between cohorts are kept, and the shrunk 95 %
intervals still cover the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from freqcap.domain.curves.shrink import MIN_COHORTS, between_cohort_variance, shrink_cohort_curves

TIERS = ("impression_only", "engaged", "converter")
ENTRY = np.array([4000.0, 400.0, 60.0])  # entry conversions per tier at n = 1: shares 0.90, 0.09, 0.01
N = 10
Z = 1.959963984540054


def _world(rng: np.random.Generator, sigma: float) -> tuple[pd.DataFrame, dict[tuple[str, int], float]]:
    """Two audiences × three tiers, one level. True log ratio of a tier: the audience's −0.08 (n − 1) plus a
    tier deviation sigma · z · (n − 1) / (N − 1); observed = true + noise of variance 1 / entry conversions
    (halving by n). The audience's observation pools its tiers weighted by their entry conversions, as the
    estimator's ratio of sums does."""
    rows, truth = [], {}
    for aud in ("a", "b"):
        dev = sigma * rng.standard_normal(len(TIERS))
        obs_n = {}
        for n in range(1, N + 1):
            entry = ENTRY / 1.25 ** (n - 1)
            true = -0.08 * (n - 1) + dev * (n - 1) / (N - 1)
            var = np.where(n == 1, 0.0, 1.0 / entry)
            obs = true + np.sqrt(var) * rng.standard_normal(len(TIERS))
            obs_n[n] = (entry, true, var, obs)
            for k, tier in enumerate(TIERS):
                truth[(f"{aud}/{tier}", n)] = float(true[k])
                rows.append(_row(f"{aud}/{tier}", "cohort", n, obs[k], var[k], entry[k]))
            s = entry / entry.sum()
            rows.append(_row(f"{aud}/all", "audience", n, float(s @ obs), float(s**2 @ var), float(entry.sum())))
    return pd.DataFrame(rows), truth


def _row(cohort: str, kind: str, n: int, log_ratio: float, var: float, entry: float) -> dict:
    first = 0.02
    rate = first * np.exp(log_ratio)
    half = Z * np.sqrt(var)
    return {
        "cohort": cohort,
        "level": "ad",
        "n": n,
        "rate": rate,
        "ci_low": rate * np.exp(-half),
        "ci_high": rate * np.exp(half),
        "support": int(entry * 20),
        "ratio": np.exp(log_ratio),
        "first_rate": first,
        "conversions": entry * np.exp(log_ratio),
        "entry_conversions": entry,
        "naive_rate": rate,
        "var_log_ratio": var,
        "cov_log_ratio_first": 0.0,
        "var_log_first": 0.0,
        "kind": kind,
    }


def _errors(sigma: float, seeds: range) -> pd.DataFrame:
    out = []
    for seed in seeds:
        curves, truth = _world(np.random.default_rng(seed), sigma)
        shrunk = shrink_cohort_curves(curves)
        c = shrunk[(shrunk["kind"] == "cohort") & (shrunk["n"] >= 2)]
        true = np.array([truth[(coh, n)] for coh, n in zip(c["cohort"], c["n"], strict=True)])
        out.append(
            pd.DataFrame(
                {
                    "tier": c["cohort"].str.split("/").str[1].to_numpy(),
                    "own": np.log(c["rate_own"] / c["first_rate"]).to_numpy() - true,
                    "shrunk": np.log(c["rate"] / c["first_rate"]).to_numpy() - true,
                    "covered": (
                        (c["ci_low"] <= 0.02 * np.exp(true)) & (0.02 * np.exp(true) <= c["ci_high"])
                    ).to_numpy(),
                    "narrower": (
                        c["ci_high"] / c["ci_low"] <= c["ci_high_own"] / c["ci_low_own"] * (1 + 1e-9)
                    ).to_numpy(),
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def test_noise_is_removed_where_cohorts_agree() -> None:
    """No true difference between tiers: the small tiers' errors shrink by more than half (mean squared), the
    large tier (90 % of its audience) is as good as before, and the intervals still cover."""
    e = _errors(0.0, range(200))
    small = e[e["tier"] != "impression_only"]
    assert (small["shrunk"] ** 2).mean() < 0.5 * (small["own"] ** 2).mean()
    big = e[e["tier"] == "impression_only"]
    assert (big["shrunk"] ** 2).mean() <= 1.05 * (big["own"] ** 2).mean()
    assert e["covered"].mean() >= 0.93
    assert e["narrower"].all()


def test_real_differences_between_cohorts_are_kept() -> None:
    """Tiers truly differ (deviations of sd 0.8 at n = 10, far above the small tiers' noise at low n): the
    shrunk curves are not worse than the cohorts' own (mean squared error) and still cover at about 95 % on
    average. The smallest tier, pulled towards an audience it truly differs from, is covered less often (the
    known price of empirical Bayes: nominal on average over cohorts, not for each one)."""
    e = _errors(0.8, range(200))
    assert (e["shrunk"] ** 2).mean() <= 1.05 * (e["own"] ** 2).mean()
    assert e["covered"].mean() >= 0.9
    assert e.groupby("tier")["covered"].mean().min() >= 0.8


def test_between_cohort_variance_against_hand_computation() -> None:
    """σ²(n) = max(0, (Σ d²/v − k) / Σ a/v) at each n with ≥ MIN_COHORTS cohorts, then a running maximum; inf
    before the first estimable n."""
    n = np.array([2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5])
    d = np.array([0.5, 0.1, 0.3, -0.2, 0.1, 0.0, 0.01, -0.01, 0.9, -0.8, 0.7])
    v = np.array([0.1, 0.1, 0.05, 0.02, 0.04, 0.1, 0.1, 0.1, 0.2, 0.1, 0.3])
    a = np.array([1.0, 0.5, 0.9, 0.3, 0.8, 1.0, 1.0, 1.0, 0.7, 0.6, 0.9])
    assert MIN_COHORTS == 3
    got = between_cohort_variance(n, d, v, a, 6)
    at3 = (0.3**2 / 0.05 + 0.2**2 / 0.02 + 0.1**2 / 0.04 - 3) / (0.9 / 0.05 + 0.3 / 0.02 + 0.8 / 0.04)
    at5 = (0.9**2 / 0.2 + 0.8**2 / 0.1 + 0.7**2 / 0.3 - 3) / (0.7 / 0.2 + 0.6 / 0.1 + 0.9 / 0.3)
    assert got[0] == np.inf and got[1] == np.inf  # n = 1, and n = 2 with only two cohorts
    assert got[2] == pytest.approx(max(at3, 0.0))
    assert got[3] == pytest.approx(max(at3, 0.0))  # n = 4's estimate is 0: the running maximum keeps n = 3's
    assert got[4] == pytest.approx(max(at3, at5))
    assert got[5] == pytest.approx(max(at3, at5))  # no cohort at n = 6: carried forward


def test_variance_terms_add_up_to_the_estimators_interval() -> None:
    """The shrinkage reads the estimator's variance terms: together they are the variance of log rate behind the
    CI (away from the zero-event bound and the cap at rate 1), and the ratio's term is 0 at n = 1 without credit
    variance (the entry is the impression itself)."""
    from freqcap.domain.curves.estimate import EstimatorParams, GroupedInput, estimate_curves

    rng = np.random.default_rng(11)
    users = 3000
    k = rng.integers(1, 6, users)  # impressions per pair
    user = np.repeat(np.arange(users), k)
    n = np.concatenate([np.arange(1, m + 1) for m in k])
    p = 0.08 * 0.85 ** (n - 1) * np.repeat(rng.gamma(2.0, 0.5, users), k)
    y = (rng.random(len(n)) < p).astype(float)
    first = np.flatnonzero(n == 1)
    y_entry = y[first][user]
    est = estimate_curves(
        GroupedInput(user, np.zeros(len(n), dtype=np.int64), n, y, y_entry, 1), EstimatorParams(min_support=50)
    )
    var = est["var_log_ratio"] + 2 * est["cov_log_ratio_first"] + est["var_log_first"]
    ok = (est["conversions"] >= 0.5) & (est["ci_high"] < 1.0)
    assert ok.sum() >= 4
    assert np.log(est["ci_high"] / est["rate"])[ok].to_numpy() == pytest.approx(Z * np.sqrt(var[ok].to_numpy()))
    assert est.loc[est["n"] == 1, "var_log_ratio"].iloc[0] == pytest.approx(0.0, abs=1e-12)
