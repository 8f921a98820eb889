"""Training on a synthetic set (time split, metrics, best-iteration trim) and the model-based curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from freqcap.domain.training.config import ConversionModelConfig, CurveConfig, XGBoostConfig
from freqcap.domain.training.curve import CURVE_COLUMNS, model_curve
from freqcap.domain.training.encoding import default_encoding
from freqcap.domain.training.metrics import roc_auc
from freqcap.domain.training.model import HEADLINE_METRICS, train_model
from tests.unit.domain.training.helpers import feature_columns, synthetic_training_frame

CONFIG = ConversionModelConfig(
    xgboost=XGBoostConfig(num_boost_round=60, early_stopping_rounds=10),
    curve=CurveConfig(max_n=8, sample_rows=500, min_cohort_rows=20),
)


@pytest.fixture(scope="module")
def trained():
    frame = synthetic_training_frame(20_000, seed=3)
    return frame, train_model(frame, CONFIG, feature_columns())


def test_metrics_split_and_trim(trained):
    frame, model = trained
    for part in ("train", "early_stopping", "valid"):
        for metric in HEADLINE_METRICS:
            assert np.isfinite(model.metrics[f"{part}_{metric}"]), (part, metric)
    assert model.metrics["valid_roc_auc"] > 0.65  # the synthetic signal is strong
    assert set(model.audience_metrics) == {"cold", "returning", "high_intent"}
    assert model.booster.num_boosted_rounds() == model.best_iteration + 1
    s = model.split
    assert s["train_rows"] + s["early_stopping_rows"] + s["valid_rows"] == len(frame)
    assert s["train_start"] < s["early_cut"] < s["valid_cut"] <= s["valid_end"]
    valid = frame[frame["impression_ts"] >= pd.Timestamp(s["valid_cut"])]
    assert len(valid) == s["valid_rows"]
    assert model.metrics["valid_roc_auc"] == pytest.approx(roc_auc(valid["label_conversion"], model.predict(valid)))


def test_plain_dmatrix_predictions_match(trained):
    """The MLflow xgboost pyfunc flavor predicts via xgb.DMatrix(frame): same numbers as inplace_predict."""
    import xgboost as xgb

    frame, model = trained
    inputs = model.encoding.transform(frame.head(300))
    assert np.allclose(model.booster.predict(xgb.DMatrix(inputs)), model.booster.inplace_predict(inputs), atol=1e-7)


def test_curve_shape_and_direction(trained):
    _, model = trained
    curve = model.curve
    assert tuple(curve.columns) == CURVE_COLUMNS
    assert set(curve["level"]) == {"advertiser", "campaign", "ad"}
    assert curve.groupby(["cohort", "level"]).size().eq(CONFIG.curve.max_n).all()
    assert all("/" in c and c.split("/")[0] in {"cold", "returning", "high_intent"} for c in curve["cohort"])
    assert curve["rate"].between(0, 1).all()
    cold = curve[(curve["audience"] == "cold") & (curve["level"] == "ad")]
    for _, one in cold.groupby("cohort"):
        one = one.sort_values("n")
        assert one["rate"].iloc[0] > one["rate"].iloc[-1]  # the synthetic rate decays with n_ad


class _FakeBooster:
    """Predicts 1 / n_ad: the curve at level ad must be exactly 1/n; at other levels the cohort mean."""

    def inplace_predict(self, inputs: pd.DataFrame) -> np.ndarray:
        return 1.0 / inputs["n_ad"].to_numpy(dtype=float)


def test_curve_is_the_partial_dependence():
    frame = synthetic_training_frame(3000, seed=4)
    enc = default_encoding(feature_columns())
    curve = model_curve(_FakeBooster(), frame, enc, CurveConfig(max_n=5, sample_rows=10_000, min_cohort_rows=1))
    ad = curve[curve["level"] == "ad"]
    assert np.allclose(ad["rate"], 1.0 / ad["n"])
    adv = curve[curve["level"] == "advertiser"]
    for (aud, tier), one in adv.groupby(["audience", "signal_tier"]):
        cohort = frame[(frame["audience"] == aud) & (frame["signal_tier"] == tier)]
        assert np.allclose(one["rate"], (1.0 / cohort["n_ad"]).mean())
        assert one["rows"].iloc[0] == len(cohort)
        assert one.set_index("n")["support"].to_dict() == {
            n: int((cohort["n_advertiser"] == n).sum()) for n in range(1, 6)
        }


def test_small_cohorts_get_no_curve():
    frame = synthetic_training_frame(200, seed=5)
    enc = default_encoding(feature_columns())
    curve = model_curve(_FakeBooster(), frame, enc, CurveConfig(max_n=3, min_cohort_rows=10_000))
    assert curve.empty and tuple(curve.columns) == CURVE_COLUMNS
