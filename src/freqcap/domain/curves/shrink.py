"""Empirical-Bayes shrinkage of cohort curves towards their audience's curve (pure numpy/pandas).

A cohort (audience × signal tier) with few pairs reaching n has a noisy within-pair ratio there, and one noisy
point moves its cap by several exposures. Its audience (`<audience>/all`, the cohort's parent) measures the same
quantity on more pairs. At each level and n ≥ 2, with p the parent:

    d = log ratio_c(n) − log ratio_p(n)
    v = Var(log ratio_c) − Var(log ratio_p)      the cohort's pairs are part of the parent's, so Var(d) ≈ v_c − v_p
    Var(true d) = σ²(n) · a_c                   a_c = (1 − s_c)² + Σ_{k ≠ c} s_k²
    σ²(n) = max(0, (Σ d²/v − k) / Σ a/v)         over the k cohorts (every audience) with a point at n
    B = σ² a_c / (σ² a_c + v)
    log ratio~ = log ratio_p + B · d,   Var(log ratio~) = min(B · v + v_p, v_c)

The parent's ratio is the cohorts' ratios weighted by their shares s_k of its entry conversions (the
denominators), so a cohort's true deviation from its parent is a share of its deviation from its siblings: a
cohort that is most of its audience deviates little from it even when the tiers differ. σ² is how much the
cohorts' true ratios differ from each other at n (a moment estimator: E[Σ d²/v] = k + σ² Σ a/v when the
deviations are centred on the parent); the share of the audience's entry conversions beyond its cohorts' own
points counts as one more sibling. Noise shrinks, heterogeneity stays: a cohort whose deviation is large against
its own variance keeps its own curve (B → 1), a noisy one borrows its audience's shape (B → 0), and when the
cohorts do differ σ² grows and little is shrunk. σ² is made non-decreasing in n (a running maximum): deviations
accumulate over exposures, and the high n where few cohorts have points keep the largest σ² seen before — the
conservative side, less shrinkage. Where σ² cannot be estimated yet (fewer than `MIN_COHORTS` cohorts), nothing
is shrunk.

The cohort keeps its own first-exposure rate: rate~ = first_rate_c × ratio~, and the CI is on the log scale with
Var(log first) + 2 B Cov(log ratio_c, log first) + Var(log ratio~). Points with no credited conversion (under
`ZERO_CREDIT`), in the cohort or its parent, are left as they are. The cohort's own estimates stay in `rate_own`,
`ci_low_own`, `ci_high_own`; `shrinkage` is the weight 1 − B given to the audience.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from freqcap.domain.curves.estimate import ZERO_CREDIT, smooth_curve

MIN_COHORTS = 3  # cohorts with a point at n needed to estimate σ²(n)
ALL = "all"


def between_cohort_variance(n: np.ndarray, d: np.ndarray, v: np.ndarray, a: np.ndarray, max_n: int) -> np.ndarray:
    """σ²(n) for n = 1 … max_n (index n − 1) from deviations d with sampling variances v and prior factors a of
    one level's cohorts: the moment estimate at each n with at least MIN_COHORTS cohorts, then a running maximum;
    inf until the first estimable n (no shrinkage where the heterogeneity is unknown)."""
    tau2 = np.full(max_n, np.nan)
    for k in range(2, max_n + 1):
        sel = n == k
        if sel.sum() >= MIN_COHORTS:
            w = 1.0 / v[sel]
            q = float(np.sum(w * d[sel] ** 2))
            tau2[k - 1] = max(0.0, (q - int(sel.sum())) / float(np.sum(w * a[sel])))
    out = np.full(max_n, np.inf)
    seen = -np.inf
    for i, t in enumerate(tau2):
        if np.isfinite(t):
            seen = max(seen, t)
        if np.isfinite(seen):
            out[i] = seen
    return out


def shrink_cohort_curves(curves: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Every cohort curve (kind "cohort") shrunk towards its audience's at each level (see the module docstring)
    and smoothed again; audiences and everyone unchanged. Needs the estimator's variance columns."""
    if curves.empty or not (curves["kind"] == "cohort").any():
        return curves
    out = curves.copy()
    for col in ("rate", "ci_low", "ci_high"):
        out[f"{col}_own"] = out[col]
    out["shrinkage"] = 0.0
    cohort = out["kind"] == "cohort"
    parent_label = out["cohort"].str.split("/").str[0] + "/" + ALL
    cols = ["level", "n", "ratio", "var_log_ratio", "conversions", "entry_conversions"]
    parents = out.loc[out["kind"] == "audience", ["cohort", *cols]]
    keyed = out.loc[cohort, cols].assign(parent=parent_label[cohort], row=out.index[cohort])
    m = keyed.merge(
        parents.rename(columns={"cohort": "parent"}), on=["parent", "level", "n"], suffixes=("", "_p"), how="inner"
    )
    v = (m["var_log_ratio"] - m["var_log_ratio_p"]).to_numpy(dtype=np.float64)
    a = _prior_factor(m)
    usable = (
        (m["n"] >= 2)
        & (m["conversions"] >= ZERO_CREDIT)
        & (m["conversions_p"] >= ZERO_CREDIT)
        & (m["ratio"] > 0)
        & (m["ratio_p"] > 0)
        & (v > 0)
    ).to_numpy()
    m = m[usable]
    v, a = v[usable], a[usable]
    d = np.log(m["ratio"].to_numpy(dtype=np.float64)) - np.log(m["ratio_p"].to_numpy(dtype=np.float64))
    n = m["n"].to_numpy(dtype=np.int64)
    max_n = int(out["n"].max())
    b = np.ones(len(m))
    for level in m["level"].unique():
        sel = (m["level"] == level).to_numpy()
        prior = between_cohort_variance(n[sel], d[sel], v[sel], a[sel], max_n)[n[sel] - 1] * a[sel]
        with np.errstate(invalid="ignore"):  # inf / inf where σ² is unknown: those keep B = 1
            b[sel] = np.where(np.isinf(prior), 1.0, prior / (prior + v[sel]))
    rows = m["row"].to_numpy()
    log_ratio = np.log(m["ratio_p"].to_numpy(dtype=np.float64)) + b * d
    # shrinking only adds information: never wider than the cohort's own
    var_ratio = np.minimum(b * v + m["var_log_ratio_p"].to_numpy(dtype=np.float64), m["var_log_ratio"].to_numpy())
    first = out.loc[rows, "first_rate"].to_numpy(dtype=np.float64)
    var = (
        out.loc[rows, "var_log_first"].to_numpy(dtype=np.float64)
        + 2.0 * b * out.loc[rows, "cov_log_ratio_first"].to_numpy(dtype=np.float64)
        + var_ratio
    )
    half = float(stats.norm.ppf(0.5 + confidence / 2.0)) * np.sqrt(np.maximum(var, 0.0))
    ratio = np.exp(log_ratio)
    out.loc[rows, "ratio"] = ratio
    out.loc[rows, "rate"] = first * ratio
    out.loc[rows, "ci_low"] = first * ratio * np.exp(-half)
    out.loc[rows, "ci_high"] = np.minimum(first * ratio * np.exp(half), 1.0)
    out.loc[rows, "shrinkage"] = 1.0 - b
    frames = []
    for _, g in out.groupby(["cohort", "level"], sort=False):
        frames.append(smooth_curve(g) if g["kind"].iloc[0] == "cohort" else g)
    return pd.concat(frames, ignore_index=True)


def _prior_factor(m: pd.DataFrame) -> np.ndarray:
    """a_c = (1 − s_c)² + Σ_{k ≠ c} s_k² per row of the cohort–parent table, s_k = the cohort's share of its parent's
    entry conversions at that level and n; the parent's share not covered by its cohorts' points is one more
    sibling."""
    share = (m["entry_conversions"] / m["entry_conversions_p"]).clip(0.0, 1.0)
    key = [m["parent"], m["level"], m["n"]]
    total = share.groupby(key).transform("sum")
    squares = (share**2).groupby(key).transform("sum")
    rest = (1.0 - total).clip(lower=0.0)
    return ((1.0 - share) ** 2 + squares - share**2 + rest**2).to_numpy(dtype=np.float64)
