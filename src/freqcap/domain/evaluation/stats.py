"""Confidence intervals (pure): over seeds (Student t on per-seed values) and for a holdout split (delta method)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int  # values (seeds) behind it

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def covers(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of per-seed values with a Student-t interval (NaN bounds with fewer than 2 finite values)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    m = float(v.mean())
    if len(v) < 2:
        return Interval(m, float("nan"), float("nan"), 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return Interval(m, m - half, m + half, len(v))


@dataclass(frozen=True)
class LiftEstimate:
    """Relative lift of the treatment's mean per user over the control's, from a user split."""

    lift: float
    low: float
    high: float
    se: float
    treated_users: int
    control_users: int
    treated_mean: float
    control_mean: float
    method: str

    def covers(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def ratio_lift(
    y: np.ndarray,
    treated: np.ndarray,
    *,
    covariate: np.ndarray | None = None,
    confidence: float = 0.95,
) -> LiftEstimate:
    """lift = mean_T / mean_C − 1 of per-user outcomes `y`, with a delta-method normal interval.

    With a `covariate` known before the split (e.g. the user's number of ad opportunities), each arm's mean is
    CUPED-adjusted: ȳ_arm − θ (x̄_arm − x̄), θ = cov(y, x) / var(x) pooled over both arms. That removes the
    variance the covariate explains and keeps the estimate unbiased, since the split is random.
    """
    y = np.asarray(y, dtype=np.float64)
    t = np.asarray(treated, dtype=bool)
    if t.all() or not t.any():
        raise ValueError("both arms need users")
    resid = y
    method = "difference in means (delta method)"
    if covariate is not None:
        x = np.asarray(covariate, dtype=np.float64)
        var_x = x.var()
        theta = float(np.cov(y, x, ddof=0)[0, 1] / var_x) if var_x > 0 else 0.0
        resid = y - theta * (x - x.mean())
        method = "CUPED on opportunities per user (delta method)"
    yt, yc = resid[t], resid[~t]
    mt, mc = float(yt.mean()), float(yc.mean())
    vt, vc = float(yt.var(ddof=1)) / len(yt), float(yc.var(ddof=1)) / len(yc)
    lift = mt / mc - 1.0
    se = float(np.sqrt(vt / mc**2 + vc * mt**2 / mc**4))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return LiftEstimate(lift, lift - z * se, lift + z * se, se, int(t.sum()), int((~t).sum()), mt, mc, method)
