"""The conversion model's maths: configuration, columns, split, encoding, XGBoost training, metrics, model curve.

    config    the model config (`resources/models/conversion.yaml` of the packaged resources), validated, frozen
    columns   the training set's contract: keys, labels, context, exact exposure columns; `TrainingSet`
    split     time-based split: train on the past, stop early on the recent past, validate on the newest rows
    encoding  categoricals as integer codes with fixed vocabularies, numbers as they are
    model     `train_model`: time split, integer-encoded inputs, QuantileDMatrix + xgb.train (hist),
              ROC-AUC / PR-AUC / log loss / ECE overall and per audience
    metrics   binary classification metrics in plain numpy
    curve     `model_curve`: the implied rate by n (the curves' estimator on predictions) and the partial dependence

Building the point-in-time training set is `freqcap.adapters.duckdb.training_set`, its gate
`freqcap.adapters.gx.training`, tracking and the champion gate `freqcap.adapters.mlflow`, and the DAG's steps
`freqcap.jobs.training`. XGBoost is imported inside `model` (seconds of import time).
"""

from freqcap.domain.training.config import ConversionModelConfig, ModelConfigError, load_model_config

__all__ = ["ConversionModelConfig", "ModelConfigError", "load_model_config"]
