"""Exposure–response curves per cohort × level, and the caps they imply.

    from freqcap.domain.curves import fit_curves
    fit = fit_curves(events, fit_config_from_features(features, floor=FloorSpec("relative", 0.5)))  # pure

Layout: `sequences` (counts, tiers, conversion credit), `estimate` (fixed-cohort estimator, CIs), `smooth`,
`caps` (floors, cap selection), `core` (the pure pipeline, fallback), `policy`, `crosscheck` (model vs
empirical curves). Each module's docstring explains its part; `core` says what a cap means for serving.
Reading events is `freqcap.adapters.duckdb.curve_events`, plots `freqcap.adapters.reports.curves`, and
`freqcap.jobs.curves.fit_curves_to_dir` runs the whole fit from an events directory to files.
"""

from freqcap.domain.curves.caps import CapDecision, FloorSpec, select_cap
from freqcap.domain.curves.core import (
    CAP_COLUMNS,
    CURVE_COLUMNS,
    CurveFit,
    FitConfig,
    fit_config_from_features,
    fit_curves,
)
from freqcap.domain.curves.crosscheck import compare_model_curves
from freqcap.domain.curves.estimate import EstimatorParams

__all__ = [
    "CAP_COLUMNS",
    "CURVE_COLUMNS",
    "CapDecision",
    "CurveFit",
    "EstimatorParams",
    "FitConfig",
    "FloorSpec",
    "compare_model_curves",
    "fit_config_from_features",
    "fit_curves",
    "select_cap",
]
