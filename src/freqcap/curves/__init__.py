"""Exposure–response curves per cohort × level, and the caps they imply.

    from freqcap.curves import fit_curves_to_dir
    summary = fit_curves_to_dir(Path("sim/events"), Path("out"), floor=0.5)

Layout: `load` (DuckDB → arrays), `sequences` (counts, tiers, conversion credit), `estimate` (fixed-cohort
estimator, CIs), `smooth`, `caps` (floors, cap selection), `core` (the pure pipeline, fallback), `policy`,
`plots`, `crosscheck` (model vs empirical curves), `fit` (the file adapter). Each module's docstring explains
its part; `core` says what a cap means for serving.
"""

from freqcap.curves.caps import CapDecision, FloorSpec, select_cap
from freqcap.curves.core import CAP_COLUMNS, CURVE_COLUMNS, CurveFit, FitConfig, fit_curves
from freqcap.curves.crosscheck import compare_model_curves
from freqcap.curves.estimate import EstimatorParams
from freqcap.curves.fit import CurveFitSummary, fit_config_from_features, fit_curves_to_dir

__all__ = [
    "CAP_COLUMNS",
    "CURVE_COLUMNS",
    "CapDecision",
    "CurveFit",
    "CurveFitSummary",
    "EstimatorParams",
    "FitConfig",
    "FloorSpec",
    "compare_model_curves",
    "fit_config_from_features",
    "fit_curves",
    "fit_curves_to_dir",
    "select_cap",
]
