"""The conversion model: point-in-time training set (Feast), Great Expectations gate, XGBoost, model-based curve.

    backfill.publish_daily_snapshots   daily feature snapshots over a date range (what the features DAG would have)
    dataset.build_training_set         one row per impression: features as of 1 µs before it, exact exposure
                                       indices, context, conversion/click labels within their windows
    validate.validate_training_set     monitoring/gx/training.json; raises TrainingValidationError naming rules
    model.train_model                  time split, integer-encoded inputs, QuantileDMatrix + xgb.train (hist),
                                       ROC-AUC / PR-AUC / log loss / ECE overall and per audience
    curve.model_curve                  predicted rate as n varies at one level, per cohort × level
    jobs                               the same steps as JSON-in/JSON-out functions for the training DAG

MLflow tracking, registration and the champion gate live in `freqcap.adapters.mlflow`. Heavy libraries (Feast, XGBoost,
MLflow, Great Expectations) are imported inside the functions that need them.
"""

from typing import Any

from freqcap.domain.training.config import ConversionModelConfig, ModelConfigError, load_model_config

_LAZY = {
    "TrainingDataError": "freqcap.adapters.duckdb.training_set",
    "TrainingSet": "freqcap.adapters.duckdb.training_set",
    "build_training_set": "freqcap.adapters.duckdb.training_set",
    "TrainingValidationError": "freqcap.adapters.gx.training_suite",
}


def __getattr__(name: str) -> Any:  # pandas/pyarrow load only when these are used (DAG files stay light)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'freqcap.domain.training' has no attribute {name!r}")


__all__ = [
    "ConversionModelConfig",
    "ModelConfigError",
    "TrainingDataError",
    "TrainingSet",
    "TrainingValidationError",
    "build_training_set",
    "load_model_config",
]
