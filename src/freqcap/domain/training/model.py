"""Training the XGBoost conversion model: time split, integer-encoded inputs, hist boosting, metrics, curve."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from freqcap.domain.training.config import ConversionModelConfig
from freqcap.domain.training.credit import deconvolved_label
from freqcap.domain.training.curve import model_curve
from freqcap.domain.training.encoding import FeatureEncoding, default_encoding
from freqcap.domain.training.metrics import binary_metrics, grouped_metrics
from freqcap.domain.training.split import TimeSplit, time_split

log = logging.getLogger(__name__)
HEADLINE_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "log_loss", "ece")


@dataclass
class TrainedModel:
    booster: Any  # xgboost.Booster, trimmed to the best iteration
    encoding: FeatureEncoding
    config: ConversionModelConfig
    best_iteration: int
    metrics: dict[str, float]  # "train_roc_auc", "valid_log_loss", ...
    audience_metrics: dict[str, dict[str, float]]  # validation metrics per audience
    split: dict[str, Any]
    curve: pd.DataFrame
    importance: dict[str, float]
    input_example: pd.DataFrame
    history: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def valid_metrics(self) -> dict[str, float]:
        return {m: self.metrics[f"valid_{m}"] for m in HEADLINE_METRICS}

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        """Predicted conversion probability for training-set-shaped rows."""
        return predict(self.booster, self.encoding.transform(rows))


def passive_openmp() -> bool:
    """Make OpenMP threads sleep instead of spin while waiting, if XGBoost's OpenMP runtime is not loaded yet.

    Measured on a 2-core box with one core busy elsewhere: 80 rounds on 45 k rows took 19.5 s with nthread=2 and
    the default (spinning) wait policy, 0.6 s with OMP_WAIT_POLICY=PASSIVE (0.9 s with nthread=1). The policy is
    read once, when the runtime loads: set it in the environment of the process (an explicit value wins).
    Returns whether the policy is passive for this process.
    """
    if "xgboost" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def predict(booster: Any, inputs: pd.DataFrame) -> np.ndarray:
    return np.asarray(booster.inplace_predict(inputs), dtype=np.float64)


def _ts_us(frame: pd.DataFrame) -> np.ndarray:
    ts = frame["impression_ts"]
    return ts.dt.tz_convert(UTC).to_numpy(dtype="datetime64[us]").astype(np.int64)


def _iso(us: int | None) -> str | None:
    return None if us is None else datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat()


def split_frame(frame: pd.DataFrame, config: ConversionModelConfig) -> TimeSplit:
    return time_split(
        _ts_us(frame),
        config.split.valid_fraction,
        config.split.early_stopping_fraction if config.xgboost.early_stopping_rounds else 0.0,
        config.split.gap_seconds * 1_000_000,
    )


def _credit(frame: pd.DataFrame, rows: np.ndarray, config: ConversionModelConfig, half_life_us: dict[str, float]):
    """The EM credit of `frame`'s rows at positions `rows`, from those rows alone as observed by the last of them:
    nothing from a later split's time reaches it (`deconvolved_label`)."""
    return deconvolved_label(
        frame.iloc[rows],
        attribution_us=config.label.attribution_seconds * 1_000_000,
        lookback_us=config.data.lookback_seconds * 1_000_000,
        half_life_us=half_life_us,
        observed_until_us=int(_ts_us(frame.iloc[rows]).max()) + 1,
    )


def _early_stopping_credit(
    frame: pd.DataFrame, split: TimeSplit, config: ConversionModelConfig, half_life_us: dict[str, float]
) -> np.ndarray:
    """The EM credit of the early-stopping rows, the label boosting stops on when the booster fits the credit.

    Stopping on the binary target instead stops where a model of the *last* impression stops improving: 39
    rounds on the default world, a booster that has not yet learned the credit's exposure response (its curve
    flatter than the published one; `benchmarks/bench_model_curve.py`). The EM runs on the training and
    early-stopping rows together; nothing of it reaches the training label, which comes from the training rows
    alone."""
    return _credit(frame, np.concatenate([split.train, split.early_stopping]), config, half_life_us)[len(split.train) :]


def train_model(
    frame: pd.DataFrame,
    config: ConversionModelConfig,
    feature_columns: tuple[str, ...],
    *,
    encoding: FeatureEncoding | None = None,
    formats: tuple[str, ...] = (),
    half_life_us: dict[str, float] | None = None,
) -> TrainedModel:
    """Train on the past, stop early on the recent past, report on the most recent rows (see `split_frame`).

    `frame` is a training set (`build_training_set` output); `feature_columns` its Feast feature columns.
    With `label.credit: deconvolved` the booster fits the EM credit of the training rows (computed from them
    alone; `half_life_us`: the feature tiers' half-lives per level) while every metric uses the binary target.
    """
    if not passive_openmp():
        log.warning("OMP_WAIT_POLICY is not PASSIVE: XGBoost threads spin while waiting (slow on a busy machine)")
    import xgboost as xgb

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    label = config.label.target_column
    encoding = encoding or default_encoding(
        feature_columns, formats, wear_in=config.exposure.wear_in, pair_counts=config.exposure.pair_counts
    )
    split = split_frame(frame, config)
    inputs = encoding.transform(frame)
    y = frame[label].to_numpy(dtype=np.float64)
    timings["prepare"] = time.perf_counter() - t0

    t = time.perf_counter()
    params = dict(config.xgboost.params)
    if config.exposure.monotone and (constraints := encoding.monotone_constraints()):
        params["monotone_constraints"] = constraints  # by input name (the DMatrix carries the frame's names)
    y_fit = y[split.train]
    if config.label.credit == "deconvolved":
        if half_life_us is None:
            raise ValueError("label.credit: deconvolved needs the feature tiers' half-lives (half_life_us)")
        y_fit = _credit(frame, split.train, config, half_life_us)
        log.info(
            "deconvolved label: %.1f credited vs %d binary labels on the training rows",
            y_fit.sum(),
            y[split.train].sum(),
        )
    dtrain = xgb.QuantileDMatrix(inputs.iloc[split.train], label=y_fit, missing=np.nan)
    evals = [(dtrain, "train")]
    early_rounds = None
    if len(split.early_stopping):
        y_early = y[split.early_stopping]
        if config.label.credit == "deconvolved":
            y_early = _early_stopping_credit(frame, split, config, half_life_us)
        dearly = xgb.QuantileDMatrix(inputs.iloc[split.early_stopping], label=y_early, ref=dtrain, missing=np.nan)
        evals.append((dearly, "early_stopping"))
        early_rounds = config.xgboost.early_stopping_rounds
    history: dict[str, dict[str, list[float]]] = {}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=config.xgboost.num_boost_round,
        evals=evals,
        early_stopping_rounds=early_rounds,
        evals_result=history,
        verbose_eval=False,
    )
    best = int(getattr(booster, "best_iteration", booster.num_boosted_rounds() - 1))
    if best + 1 < booster.num_boosted_rounds():
        booster = booster[: best + 1]  # the pyfunc flavor predicts with every tree: keep only the best ones
    del dtrain, evals
    timings["boost"] = time.perf_counter() - t

    t = time.perf_counter()
    metrics: dict[str, float] = {}
    preds: dict[str, np.ndarray] = {}
    for part, rows in (("train", split.train), ("early_stopping", split.early_stopping), ("valid", split.valid)):
        if len(rows) == 0:
            continue
        preds[part] = predict(booster, inputs.iloc[rows])
        for name, value in binary_metrics(y[rows], preds[part]).items():
            metrics[f"{part}_{name}"] = value
    audience_metrics = grouped_metrics(y[split.valid], preds["valid"], frame["audience"].to_numpy()[split.valid])
    timings["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    valid_rows = frame.iloc[split.valid]
    curve = model_curve(
        booster,
        valid_rows,
        encoding,
        config.curve,
        label_column=label,
        lookback_us=config.data.lookback_seconds * 1_000_000,
        runs=frame,
    )
    timings["curve"] = time.perf_counter() - t

    gain = booster.get_score(importance_type="total_gain")
    total_gain = sum(gain.values()) or 1.0
    importance = dict(sorted(((k, v / total_gain) for k, v in gain.items()), key=lambda kv: -kv[1]))
    ts = _ts_us(frame)
    split_info = {
        **split.summary(),
        "train_start": _iso(int(ts[split.train].min())),
        "early_cut": _iso(split.early_cut_us),
        "valid_cut": _iso(split.valid_cut_us),
        "valid_end": _iso(int(ts[split.valid].max())),
    }
    timings["total"] = time.perf_counter() - t0
    log.info(
        "trained %d rounds on %d rows: valid AUC %.4f, PR-AUC %.4f, log loss %.5f, ECE %.5f (%.1fs)",
        best + 1,
        len(split.train),
        metrics["valid_roc_auc"],
        metrics["valid_pr_auc"],
        metrics["valid_log_loss"],
        metrics["valid_ece"],
        timings["total"],
    )
    return TrainedModel(
        booster=booster,
        encoding=encoding,
        config=config,
        best_iteration=best,
        metrics=metrics,
        audience_metrics=audience_metrics,
        split=split_info,
        curve=curve,
        importance=importance,
        input_example=inputs.iloc[split.valid[:5]].reset_index(drop=True),
        history=history,
        seconds={k: round(v, 3) for k, v in timings.items()},
    )
