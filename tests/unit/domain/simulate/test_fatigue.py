"""The vectorized exposure counts (both code paths) against a brute-force double loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from freqcap.domain.simulate.fatigue import exposure_counts, group_order
from freqcap.domain.simulate.params import response_multiplier


def _random_groups(seed: int, n: int = 3000, days: float = 30.0):
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 40, n)
    entity = rng.zipf(1.5, n) % 7
    t = rng.random(n) * days
    by_time = np.lexsort((t, user))  # the model's input order: (user, time)
    user, entity, t = user[by_time], entity[by_time], t[by_time]
    order, starts = group_order(user * 7 + entity)
    return t[order], starts


def _brute_force(t: np.ndarray, starts: np.ndarray, half_life: float) -> tuple[list[int], list[float]]:
    bounds = [*starts.tolist(), len(t)]
    counts, n_eff = [], []
    for lo, hi in itertools.pairwise(bounds):
        for i in range(lo, hi):
            counts.append(i - lo + 1)
            n_eff.append(1.0 + sum(2.0 ** (-(t[i] - t[j]) / half_life) for j in range(lo, i)))
    return counts, n_eff


@pytest.mark.parametrize("half_life", [0.05, 0.75, 7.0])  # 600, 40 and ~4 half-lives over 30 days
@pytest.mark.parametrize("limit", [None, 0.0])  # default dispatch; 0 forces the rank-major recurrence
def test_exposure_counts_match_double_loop(half_life: float, limit: float | None) -> None:
    t, starts = _random_groups(seed=int(half_life * 100))
    kwargs = {} if limit is None else {"max_cumsum_half_lives": limit}
    counts, n_eff = exposure_counts(t, half_life, starts, **kwargs)
    bf_counts, bf_n_eff = _brute_force(t, starts, half_life)
    assert counts.tolist() == bf_counts
    assert np.allclose(n_eff, bf_n_eff, rtol=1e-12, atol=1e-12)


def test_long_spans_do_not_overflow() -> None:
    """600 days at a 0.1-day half-life: 2^6000 would overflow float64; the exact recurrence takes over."""
    t = np.array([0.0, 0.05, 600.0, 600.1])
    counts, n_eff = exposure_counts(t, 0.1, np.array([0]))
    assert counts.tolist() == [1, 2, 3, 4]
    assert np.all(np.isfinite(n_eff))
    assert np.allclose(n_eff, [1.0, 1.0 + 2**-0.5, 1.0, 1.0 + 2**-1.0])


def test_response_multiplier_shape() -> None:
    n = np.arange(1, 31, dtype=float)
    g = response_multiplier(n, alpha=0.1, kappa=5.0, beta=2.0)
    assert g[0] == 1.0 and g[1] > 1.0  # wear-in at n = 2
    assert np.all(np.diff(g[1:]) < 0)  # then monotone wear-out
    assert np.isclose(response_multiplier(6.0, 0.0, 5.0, 2.0), 0.5)  # halved at n = 1 + kappa
