"""When an impression's outcome is known well enough to count: maturity from the learned delay distribution.

An impression's credit y counts conversions that arrive within the attribution window W after it. With a fixed
rule, only impressions older than W count; when conversions come within an hour and W is 7 days, that throws
away the last 7 days, and a young world (a new campaign: days of data) has no mature impression at all.

The EM credit (`freqcap.domain.curves.sequences.em_credit`) learns the conversion delay density f on log-spaced
bins. From it, the share of a complete window's conversions already observable for an impression of age a is

    coverage(a) = F(min(a, W)) / F(W),        F the delay CDF (piecewise linear within a bin)

An impression is **mature** once coverage(a) ≥ `share` (e.g. 0.99), i.e. older than the horizon
F⁻¹(share · F(W)), never more than W. Its credit is then divided by coverage(a) (a survival weight ≤ 1/share),
so the expected credit of a young mature impression equals that of an old one and no bias of up to 1 − share is
left in the curves. With `share` = 1 (or no learned delay: last-touch credit) the horizon is W: the fixed rule.

Caveat: delays longer than the data cannot be learnt (no impression has been observed that long); the density
there is only the EM's regularizing floor, so on data shorter than W the horizon trusts that the delays seen
are all there are. `FitConfig.maturity_share` sets the share (`curves.maturity_share` in the settings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DelayDistribution:
    """A delay CDF from a histogram: `edges_s` (seconds, increasing, edges_s[0] = 0) and `density` per second."""

    edges_s: np.ndarray
    density: np.ndarray

    @property
    def cum_mass(self) -> np.ndarray:
        """F at each edge (F(edges_s[0]) = 0), normalized so that F at the last edge is 1."""
        mass = np.maximum(self.density, 0.0) * np.diff(self.edges_s)
        total = mass.sum()
        cum = np.r_[0.0, np.cumsum(mass)]
        return cum / total if total > 0 else cum

    def cdf(self, seconds: np.ndarray | float) -> np.ndarray:
        """F(seconds), linear within each bin (the density is constant there)."""
        return np.interp(np.asarray(seconds, dtype=np.float64), self.edges_s, self.cum_mass)

    def quantile(self, q: float) -> float:
        """The smallest delay (seconds) with F ≥ q."""
        cum = self.cum_mass
        return float(np.interp(q, cum, self.edges_s)) if cum[-1] > 0 else float(self.edges_s[-1])


def horizon_seconds(delays: DelayDistribution, share: float, window_s: float) -> float:
    """Age at which an impression's window covers `share` of the delay mass within the window (≤ window_s)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"maturity share must be in (0, 1], got {share}")
    if share >= 1.0:
        return float(window_s)
    in_window = float(delays.cdf(window_s))
    if in_window <= 0:
        return float(window_s)
    return float(min(delays.quantile(share * in_window), window_s))


def coverage(delays: DelayDistribution, age_s: np.ndarray, window_s: float) -> np.ndarray:
    """Share of a complete window's conversions observable at age `age_s` (1 from the window on)."""
    in_window = float(delays.cdf(window_s))
    if in_window <= 0:
        return (np.asarray(age_s) >= window_s).astype(np.float64)
    return np.clip(delays.cdf(np.minimum(age_s, window_s)) / in_window, 0.0, 1.0)


@dataclass(frozen=True)
class Maturity:
    """Which impressions count (`mature`) and the survival weight of their credit (1 / coverage, 1 when old)."""

    mature: np.ndarray  # bool per impression
    weight: np.ndarray  # float per impression (1 where not mature: unused)
    horizon_s: float
    share: float

    @property
    def count(self) -> int:
        return int(self.mature.sum())


def fixed_maturity(imp_ts: np.ndarray, data_end_us: int, window_us: int) -> Maturity:
    """The fixed rule: older than the whole window."""
    return Maturity(imp_ts <= data_end_us - window_us, np.ones(len(imp_ts)), window_us / 1e6, 1.0)


def learned_maturity(
    imp_ts: np.ndarray, data_end_us: int, window_us: int, delays: DelayDistribution, share: float
) -> Maturity:
    """Mature once the observed part of the window covers `share` of the learned delay mass; weight 1/coverage."""
    window_s = window_us / 1e6
    horizon = horizon_seconds(delays, share, window_s)
    age_s = (data_end_us - imp_ts) / 1e6
    mature = age_s >= horizon
    cover = coverage(delays, age_s, window_s)
    weight = np.where(mature & (cover > 0), 1.0 / np.maximum(cover, 1e-12), 1.0)
    return Maturity(mature, weight, horizon, share)
