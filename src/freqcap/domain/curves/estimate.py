"""The survivorship-robust curve estimator and its confidence intervals (pure numpy/pandas, no I/O).

For a group of users (a cohort audience/tier, an audience, everyone), a level and n ≥ 1, over *mature*
impressions (whose attribution window is complete) whose run started fresh (see below):

    ratio(n) = Σ_{i : n_i = n} y_i  /  Σ_{i : n_i = n} y_entry(i)
    rate(n)  = first_rate × ratio(n),        first_rate = Σ_{n_i = 1} y_i / #{n_i = 1}

y_i is the conversion credit of impression i and entry(i) the first impression of i's 28-day window (the same
user and entity). **Fixed cohort at every n**: the n-th impressions are compared with the first impressions of
exactly the same (user, entity) pairs, so a heavy, intent-ful user who reaches n = 20 is compared with their own
first exposure, never with the light users who stopped at 1 (grouping by final count, or pooling everyone who
reached n, biases the curve upwards at high n). `rate(n)` then reads as "the conversion rate the group's
first exposures would have at the n-th exposure". Only impressions whose entry is itself a first exposure
(n = 1: the pair had no impression in the 28 days before its entry) are used, so the comparison point is
always a fresh exposure; with data shorter than the window that is every impression.

Confidence intervals (95 % by default) are on the log scale, from a delta-method variance that is
cluster-robust over users (a user's impressions are not independent): with per-user sums a_u (credit at n),
b_u (entry credit), c_u (first-exposure credit) and d_u (first exposures),

    Var(log rate(n)) ≈ Σ_u (a_u/A − b_u/B + c_u/C − d_u/D)²

(capitals: group totals), plus the variance of the EM credit assignment (Σ w(1 − w) over the credited
conversions, divided by A² and B²). A point with no credited conversion (under half of one: EM credit is a sum
of fractions, never exactly 0) gets [0, first_rate × 3.69 / B] (the exact Poisson upper bound for zero events).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from freqcap.domain.curves.smooth import unimodal_fit

ZERO_CREDIT = 0.5  # credited conversions at a point below which it is treated as having none


@dataclass(frozen=True)
class EstimatorParams:
    max_n: int = 60
    min_support: int = 100  # n-th impressions needed at a point
    min_entry_conversions: float = 15.0  # credited conversions at those pairs' first exposures
    confidence: float = 0.95
    # weight of the EM assignment variance Σ w(1 − w) in the CI (see the module docstring)
    credit_variance_weight: float = 0.5


@dataclass(frozen=True)
class GroupedInput:
    """Per-impression inputs of one level, already restricted to usable impressions."""

    user: np.ndarray  # int user code
    group: np.ndarray  # int group code (0 … n_groups − 1)
    n: np.ndarray  # int rank in window (1 … max_n)
    y: np.ndarray  # float credit of the impression
    y_entry: np.ndarray  # float credit of its entry impression
    n_groups: int
    y_var: np.ndarray | None = None  # assignment variance of y (EM credit), added to the CI's variance
    y_entry_var: np.ndarray | None = None


def _zero_upper(confidence: float) -> float:
    return float(-np.log((1.0 - confidence) / 2.0))  # 3.69 for 95 %


def estimate_curves(inp: GroupedInput, params: EstimatorParams) -> pd.DataFrame:
    """One row per (group, n) with support: group, n, rate, ci_low, ci_high, support, ratio, first_rate,
    conversions, entry_conversions, naive_rate and the variance terms of log rate. Rows stop at the first n without enough support."""
    max_n = params.max_n
    keep = (inp.n >= 1) & (inp.n <= max_n)
    user = inp.user[keep].astype(np.int64)
    cell = inp.group[keep].astype(np.int64) * max_n + (inp.n[keep].astype(np.int64) - 1)
    a = inp.y[keep].astype(np.float64)
    b = inp.y_entry[keep].astype(np.float64)
    n_cells = inp.n_groups * max_n
    if len(user) == 0:
        return _empty()
    # per (user, cell) sums, rows ordered by (user, group, n)
    key = user * n_cells + cell
    order = np.argsort(key, kind="stable")
    key = key[order]
    start = np.r_[True, key[1:] != key[:-1]]
    row = np.cumsum(start) - 1
    a_uc = np.bincount(row, weights=a[order])
    b_uc = np.bincount(row, weights=b[order])
    k_uc = np.bincount(row).astype(np.float64)
    key_uc = key[start]
    u_uc = key_uc // n_cells
    c_uc = key_uc % n_cells
    g_uc = c_uc // max_n
    n_uc = c_uc % max_n + 1
    A = np.bincount(c_uc, weights=a_uc, minlength=n_cells)
    B = np.bincount(c_uc, weights=b_uc, minlength=n_cells)
    K = np.bincount(c_uc, weights=k_uc, minlength=n_cells)
    # first-exposure sums of each (user, group): the first row of each (user, group) block has n = 1 when the
    # group's pairs start fresh (entries are first exposures)
    ug = u_uc * inp.n_groups + g_uc
    block_start = np.r_[True, ug[1:] != ug[:-1]]
    first_row = np.maximum.accumulate(np.where(block_start, np.arange(len(ug)), 0))
    is_first = n_uc[first_row] == 1
    c_u = np.where(is_first, a_uc[first_row], 0.0)
    d_u = np.where(is_first, k_uc[first_row], 0.0)
    C = A.reshape(inp.n_groups, max_n)[:, 0]
    D = K.reshape(inp.n_groups, max_n)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(C[g_uc] > 0, c_u / C[g_uc], 0.0) - np.where(D[g_uc] > 0, d_u / D[g_uc], 0.0)
        x = np.where(A[c_uc] > 0, a_uc / A[c_uc], 0.0) - np.where(B[c_uc] > 0, b_uc / B[c_uc], 0.0)
    s_xx = np.bincount(c_uc, weights=x * x, minlength=n_cells)
    if inp.y_var is not None and inp.y_entry_var is not None:
        # credit assignment uncertainty: Var(A)/A² + Var(B)/B², assignments treated as independent
        va = np.bincount(cell, weights=inp.y_var[keep], minlength=n_cells)
        vb = np.bincount(cell, weights=inp.y_entry_var[keep], minlength=n_cells)
        with np.errstate(divide="ignore", invalid="ignore"):
            extra = np.where(A > 0, va / A**2, 0.0) + np.where(B > 0, vb / B**2, 0.0)
        s_xx += params.credit_variance_weight * extra
    s_xz = np.bincount(c_uc, weights=x * z, minlength=n_cells)
    s_zz = np.bincount(g_uc[block_start], weights=z[block_start] ** 2, minlength=inp.n_groups)
    var = s_xx + 2.0 * s_xz + np.repeat(s_zz, max_n)
    zq = float(stats.norm.ppf(0.5 + params.confidence / 2.0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(B > 0, A / B, np.nan)
        first = np.repeat(np.where(D > 0, C / D, np.nan), max_n)
        rate = first * ratio
        half = zq * np.sqrt(np.maximum(var, 0.0))
        lo = rate * np.exp(-half)
        hi = rate * np.exp(half)
        # under half a credited conversion counts as none: EM credit is never exactly 0, and the log-scale
        # interval of a sliver (A → 0) explodes to [0, 1], dragging the whole smoothed band up with it
        zero = (A < ZERO_CREDIT) & (B > 0)
        lo = np.where(zero, 0.0, lo)
        hi = np.minimum(np.where(zero, first * _zero_upper(params.confidence) / B, hi), 1.0)  # a rate ≤ 1
        naive = np.where(K > 0, A / K, np.nan)
    frame = pd.DataFrame(
        {
            "group": np.repeat(np.arange(inp.n_groups), max_n),
            "n": np.tile(np.arange(1, max_n + 1), inp.n_groups),
            "rate": rate,
            "ci_low": lo,
            "ci_high": hi,
            "support": K.astype(np.int64),
            "ratio": ratio,
            "first_rate": first,
            "conversions": A,
            "entry_conversions": B,
            "naive_rate": naive,
            # the terms of Var(log rate): the within-pair ratio's, its covariance with the first-exposure
            # rate's, and the first-exposure rate's (see `freqcap.domain.curves.shrink`)
            "var_log_ratio": s_xx,
            "cov_log_ratio_first": s_xz,
            "var_log_first": np.repeat(s_zz, max_n),
        }
    )
    ok = (frame["support"] >= params.min_support) & (frame["entry_conversions"] >= params.min_entry_conversions)
    # contiguous from n = 1: stop at the first point without enough support
    run = ok.groupby(frame["group"]).cummin()
    return frame[run].reset_index(drop=True)


def _empty() -> pd.DataFrame:
    cols = ["group", "n", "rate", "ci_low", "ci_high", "support", "ratio", "first_rate", "conversions"]
    extra = ["entry_conversions", "naive_rate", "var_log_ratio", "cov_log_ratio_first", "var_log_first"]
    return pd.DataFrame({c: [] for c in [*cols, *extra]})


def smooth_curve(curve: pd.DataFrame, max_peak: int = 4) -> pd.DataFrame:
    """Add rate_smooth, ci_low_smooth, ci_high_smooth: unimodal (rise, then only fall) weighted fits of one
    group's curve, weights = the entry conversions behind each point (∝ 1 / variance of the ratio)."""
    out = curve.sort_values("n").copy()
    w = np.maximum(out["entry_conversions"].to_numpy(dtype=np.float64), 1e-9)
    for col in ("rate", "ci_low", "ci_high"):
        out[f"{col}_smooth"] = unimodal_fit(out[col].to_numpy(dtype=np.float64), w, max_peak)[0] if len(out) else []
    return out
