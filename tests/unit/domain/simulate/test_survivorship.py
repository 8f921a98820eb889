"""Survivorship: heavy users are more intent-ful, so naive curves differ from fixed-cohort curves.

Sampling error is estimated with a Poisson bootstrap over users (a user's impressions are not independent).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.unit.domain.simulate.helpers import LEVELS

COHORT_K = {"advertiser": 10, "campaign": 8, "ad": 6}
N_BOOT = 300


def _per_user_sums(frame: pd.DataFrame, mask: pd.Series, users: pd.Index) -> np.ndarray:
    """[users, 2]: conversions and impressions of the masked rows, per user."""
    sub = frame[mask].groupby("user_id")["converted"].agg(["sum", "size"])
    return sub.reindex(users, fill_value=0).to_numpy(dtype=np.float64)


def _bootstrap(stat, parts: list[np.ndarray], seed: int = 0) -> tuple[float, float]:
    """Point estimate and bootstrap SE of stat(*rates), rates = conversions / impressions per part."""

    def rates(weights: np.ndarray) -> list[np.ndarray]:
        return [(weights @ p[:, 0]) / (weights @ p[:, 1]) for p in parts]

    point = stat(*rates(np.ones((1, len(parts[0])))))[0]
    weights = np.random.default_rng(seed).poisson(1.0, size=(N_BOOT, len(parts[0]))).astype(np.float64)
    return float(point), float(np.std(stat(*rates(weights)), ddof=1))


@pytest.mark.parametrize("level", LEVELS)
def test_heavy_exposure_cohorts_have_higher_baseline(boosted_frame, level: str) -> None:
    frame, _ = boosted_frame
    k = COHORT_K[level]
    n = frame[f"bf_count_{level}"]
    first_all = frame.loc[n == 1, "baseline"].mean()
    first_cohort = frame.loc[(n == 1) & (frame[f"final_{level}"] >= k), "baseline"].mean()
    assert first_cohort > 1.2 * first_all


@pytest.mark.parametrize("level", LEVELS)
def test_naive_marginal_curve_is_biased_upwards(boosted_frame, level: str) -> None:
    """Rate of the n-th exposure over everyone who reached n, relative to n = 1, declines less than a fixed
    cohort's: the population at n = 1 includes the light, less intent-ful users."""
    frame, _ = boosted_frame
    k = COHORT_K[level]
    n = frame[f"bf_count_{level}"]
    in_cohort = frame[f"final_{level}"] >= k
    users = pd.Index(frame["user_id"].unique())
    parts = [
        _per_user_sums(frame, in_cohort & (n == k), users),  # the n = K exposure (same rows for both curves)
        _per_user_sums(frame, in_cohort & (n == 1), users),  # cohort's first exposure
        _per_user_sums(frame, n == 1, users),  # everyone's first exposure
    ]
    gap, se = _bootstrap(lambda r_k, r_c1, r_a1: r_k / r_a1 - r_k / r_c1, parts)
    assert gap > 3 * se and gap > 0.05, (gap, se)


@pytest.mark.parametrize("level", LEVELS)
def test_curve_grouped_by_final_count_is_biased_upwards(boosted_frame, level: str) -> None:
    """Conversion rate of pairs grouped by their final exposure count (K..3K vs 1), relative, stays far
    above the fixed cohort's relative rate at the K-th exposure."""
    frame, _ = boosted_frame
    k = COHORT_K[level]
    n = frame[f"bf_count_{level}"]
    final = frame[f"final_{level}"]
    users = pd.Index(frame["user_id"].unique())
    parts = [
        _per_user_sums(frame, final.between(k, 3 * k), users),  # naive: heavy pairs, all their impressions
        _per_user_sums(frame, final == 1, users),  # naive: pairs seen once
        _per_user_sums(frame, (final >= k) & (n == k), users),  # cohort at n = K
        _per_user_sums(frame, (final >= k) & (n == 1), users),  # cohort at n = 1
    ]
    gap, se = _bootstrap(lambda heavy, once, c_k, c_1: heavy / once - c_k / c_1, parts)
    assert gap > 3 * se and gap > 0.1, (gap, se)
