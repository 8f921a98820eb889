"""Cross-check a model-based curve (e.g. from the XGBoost conversion model) against the empirical curves.

    flags = compare_model_curves(model_df, "out/curves.parquet")   # or a curves DataFrame
    flags[flags["flagged"]]

`model` has columns cohort, level, n, rate. For every cohort × level both have, the model's rate is compared
with the empirical CI at each n the empirical curve supports. A 95 % interval misses the truth about 1 time in
20, so a few misses are expected; the pair is flagged when the model falls outside the CI at more than
`max_outside_share` of the points (and at least `min_outside` of them), or when the caps they imply at the
same floor differ by more than `max_cap_gap` exposures (when a floor is given).

`empirical_points(curves)` turns a fit's own curves into the same shape, so that one empirical curve can be
compared with another by the same rule: the yardstick for a model trained on part of the data (the empirical
curves of that part against those of all of it).

Each flagged pair is also split into its **level** and its **shape**, because the two call for different fixes.
`level_log_ratio` / `level_outside` compare the model's first-exposure rate with the empirical one (n = 1): a
model whose calibration for the cohort is off. `shape_outside` / `shape_flagged` re-anchor the model's curve at
the empirical first-exposure rate (model × empirical rate(1) / model rate(1)) and apply the same rule to the
points n ≥ 2: the exposure response itself, what a cap is read from, with the level taken out. The re-anchored
point is compared with the rate's CI, which also carries the first rate's sampling variance (a little wider than
the ratio's own). A pair flagged only by level has the empirical curve's shape at another height.

Only curves with enough support are compared: an empirical curve that is its parent's (`fallback` other than
`none`: the cohort had too little support for its own) is listed with `compared` False and never flagged, and
a model point resting on fewer than `min_model_support` rows (the model curve's `support`, when it has one)
is left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from freqcap.domain.curves.caps import leading_above
from freqcap.domain.curves.smooth import monotone_tail


def empirical_points(curves: pd.DataFrame) -> pd.DataFrame:
    """A fit's own curves (not its fallbacks to a parent's) as a "model" curve for `compare_model_curves`: cohort,
    level, n, rate and support (each point's rows)."""
    own = curves
    if "fallback" in curves.columns:
        own = curves[curves["fallback"].fillna("none") == "none"]
    return own[["cohort", "level", "n", "rate", "support"]].reset_index(drop=True)


def compare_model_curves(
    model: pd.DataFrame,
    empirical: pd.DataFrame | str | Path,
    *,
    max_outside_share: float = 0.2,
    min_outside: int = 2,
    relative_floor: float | None = None,
    max_cap_gap: int = 1,
    min_model_support: int = 30,
) -> pd.DataFrame:
    """One row per cohort × level present in both: points, outside (model outside the CI), share_outside,
    mean_log_ratio (model vs empirical, >0: model higher), max_abs_z, cap_empirical, cap_model, flagged,
    reason, compared, and the split into level (level_log_ratio, level_outside) and shape (shape_points,
    shape_outside, shape_flagged; see the module docstring). Pairs present only on one side are listed with
    flagged=True and a reason."""
    if not isinstance(empirical, pd.DataFrame):
        empirical = pd.read_parquet(empirical)
    borrowed: set[tuple[str, str]] = set()
    if "fallback" in empirical.columns:
        own = empirical["fallback"].fillna("none") == "none"
        borrowed = set(map(tuple, empirical.loc[~own, ["cohort", "level"]].drop_duplicates().to_numpy()))
        empirical = empirical[own]
    if "support" in model.columns:
        model = model[(model["support"] >= min_model_support) & model["rate"].notna()]
    need = {"cohort", "level", "n", "rate"}
    if missing := need - set(model.columns):
        raise ValueError(f"model curve lacks columns {sorted(missing)}")
    emp = empirical[["cohort", "level", "n", "rate", "ci_low", "ci_high", "support"]]
    if "rate_smooth" in empirical.columns:
        emp = emp.assign(rate_smooth=empirical["rate_smooth"])
    merged = emp.merge(model[["cohort", "level", "n", "rate"]], on=["cohort", "level", "n"], suffixes=("", "_model"))
    rows = []
    keys_emp = set(map(tuple, emp[["cohort", "level"]].drop_duplicates().to_numpy()))
    keys_model = set(map(tuple, model[["cohort", "level"]].drop_duplicates().to_numpy()))
    for key, g in merged.groupby(["cohort", "level"], sort=True):
        g = g.sort_values("n")
        outside = (g["rate_model"] < g["ci_low"]) | (g["rate_model"] > g["ci_high"])
        with np.errstate(divide="ignore", invalid="ignore"):
            se = (np.log(g["ci_high"]) - np.log(g["ci_low"])) / (2 * 1.959964)
            z = (np.log(g["rate_model"]) - np.log(g["rate"])) / se
            log_ratio = np.log(g["rate_model"] / g["rate"])
        z = z[np.isfinite(z)]
        log_ratio = log_ratio[np.isfinite(log_ratio)]
        n_out = int(outside.sum())
        share = n_out / len(g) if len(g) else 0.0
        reasons = []
        if n_out >= min_outside and share > max_outside_share:
            reasons.append(f"model outside the empirical CI at {n_out} of {len(g)} exposures")
        split = _level_and_shape(g, min_outside, max_outside_share)
        cap_e = cap_m = None
        if relative_floor is not None:
            emp_curve = g["rate_smooth"].to_numpy() if "rate_smooth" in g else g["rate"].to_numpy()
            model_curve = monotone_tail(g["rate_model"].to_numpy(), np.ones(len(g)))
            cap_e = leading_above(emp_curve, relative_floor * emp_curve[0])
            cap_m = leading_above(model_curve, relative_floor * model_curve[0])
            if abs(cap_e - cap_m) > max_cap_gap:
                reasons.append(f"implied caps differ: model {cap_m}, empirical {cap_e}")
        rows.append(
            {
                "cohort": key[0],
                "level": key[1],
                "points": len(g),
                "outside": n_out,
                "share_outside": share,
                "mean_log_ratio": float(log_ratio.mean()) if len(log_ratio) else np.nan,
                "max_abs_z": float(np.abs(z).max()) if len(z) else np.nan,
                "cap_empirical": cap_e,
                "cap_model": cap_m,
                "flagged": bool(reasons),
                "reason": "; ".join(reasons),
                "compared": True,
                **split,
            }
        )
    for key in sorted(borrowed):
        rows.append(
            {
                "cohort": key[0],
                "level": key[1],
                "points": 0,
                "flagged": False,
                "reason": "empirical curve is a fallback to its parent's: too little support to compare",
                "compared": False,
                **_NOT_COMPARED,
            }
        )
    for key in sorted((keys_emp ^ keys_model) - borrowed):
        side = "empirical" if key in keys_emp else "model"
        rows.append(
            {
                "cohort": key[0],
                "level": key[1],
                "points": 0,
                "flagged": True,
                "reason": f"only in {side}",
                "compared": True,
                **_NOT_COMPARED,
            }
        )
    return pd.DataFrame(rows)


# the level and shape columns of a pair that is not compared (or only on one side, or has no n = 1 point)
_NOT_COMPARED = {
    "level_log_ratio": np.nan,
    "level_outside": False,
    "shape_points": 0,
    "shape_outside": 0,
    "shape_flagged": False,
}


def _level_and_shape(g: pd.DataFrame, min_outside: int, max_outside_share: float) -> dict[str, object]:
    """The pair's level (the model's first-exposure rate against the empirical one and its CI) and its shape (the
    model re-anchored at the empirical first rate, points n ≥ 2, by the same rule); see the module docstring.
    Without a first-exposure point on both sides neither is known (NaN level, no shape points)."""
    out: dict[str, object] = dict(_NOT_COMPARED)
    first = g[g["n"] == 1]
    if first.empty or not (first["rate"].iloc[0] > 0 and first["rate_model"].iloc[0] > 0):
        return out
    emp_first, model_first = float(first["rate"].iloc[0]), float(first["rate_model"].iloc[0])
    later = g[g["n"] >= 2]
    anchored = later["rate_model"] * (emp_first / model_first)
    n_out = int(((anchored < later["ci_low"]) | (anchored > later["ci_high"])).sum())
    share = n_out / len(later) if len(later) else 0.0
    out.update(
        level_log_ratio=float(np.log(model_first / emp_first)),
        level_outside=bool(not first["ci_low"].iloc[0] <= model_first <= first["ci_high"].iloc[0]),
        shape_points=len(later),
        shape_outside=n_out,
        shape_flagged=bool(n_out >= min_outside and share > max_outside_share),
    )
    return out
