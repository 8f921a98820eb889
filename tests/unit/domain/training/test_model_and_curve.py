"""Training on a synthetic set (time split, metrics, best-iteration trim) and the model-based curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from freqcap.domain.training.config import (
    ConversionModelConfig,
    CurveConfig,
    ExposureConfig,
    LabelConfig,
    SplitConfig,
    XGBoostConfig,
)
from freqcap.domain.training.curve import CURVE_COLUMNS, _entry_groups, implied_curve, model_curve, run_entries
from freqcap.domain.training.encoding import default_encoding
from freqcap.domain.training.metrics import roc_auc
from freqcap.domain.training.model import HEADLINE_METRICS, train_model
from tests.unit.domain.training.helpers import feature_columns, synthetic_training_frame

CONFIG = ConversionModelConfig(
    label=LabelConfig(credit="last_touch"),  # the synthetic frame has no conversion times to deconvolve
    split=SplitConfig(early_stopping_fraction=0.1),  # the three-part split and the best-iteration trim
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
    assert model.metrics["valid_roc_auc"] == pytest.approx(
        roc_auc(valid[CONFIG.label.target_column], model.predict(valid))
    )


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
    audiences = {"cold", "returning", "high_intent"}
    cohorts = set(curve["cohort"])
    assert {f"{a}/all" for a in audiences} | {"all"} <= cohorts  # the empirical curves' groups too
    assert all(c == "all" or c.split("/")[0] in audiences for c in cohorts)
    assert curve["partial_dependence"].between(0, 1).all()
    assert curve["rate"].dropna().between(0, 1).all()
    cold = curve[(curve["audience"] == "cold") & (curve["level"] == "ad")]
    for _, one in cold.groupby("cohort"):
        one = one.sort_values("n")
        pd_n = one["partial_dependence"].to_numpy()
        assert pd_n[0] > pd_n[-1]  # the synthetic rate decays with n_ad
        # the monotone constraint beyond the wear-in (2): never rises from n = 2 on
        assert np.all(np.diff(pd_n[1:]) <= 1e-12)


def test_monotone_constraint_beyond_the_wear_in():
    """Data whose rate *rises* with n_ad beyond 2: the constrained model's partial dependence may not follow it
    there (it may during the wear-in); the unconstrained one does (so the check can fail)."""
    frame = synthetic_training_frame(12_000, seed=8)
    rng = np.random.default_rng(8)
    p = 0.02 * np.minimum(frame["n_ad"].to_numpy(), 8)  # rises all the way
    frame["label_attributed_conversion"] = (rng.random(len(frame)) < p).astype(np.int32)
    curves = {}
    for monotone in (True, False):
        config = CONFIG.model_copy(update={"exposure": ExposureConfig(wear_in=2, monotone=monotone)})
        model = train_model(frame, config, feature_columns())
        ad = model.curve[(model.curve["cohort"] == "all") & (model.curve["level"] == "ad")].sort_values("n")
        curves[monotone] = ad["partial_dependence"].to_numpy()
    assert np.all(np.diff(curves[True][1:]) <= 1e-12)  # n = 2 .. max_n: never rises
    assert curves[False][5] > curves[False][1] * 1.2  # unconstrained, it follows the data up


class _FakeBooster:
    """Predicts 1 / n_ad (from the encoded wear-in split): the partial dependence at level ad is exactly 1/n
    (anchored: × mean prediction at n_ad = 1, which is 1); at other levels the group's mean."""

    def inplace_predict(self, inputs: pd.DataFrame) -> np.ndarray:
        return 1.0 / (inputs["n_ad_wear_in"] + inputs["n_ad_beyond"]).to_numpy(dtype=float)


def test_partial_dependence():
    frame = synthetic_training_frame(3000, seed=4)
    enc = default_encoding(feature_columns(), wear_in=2)
    curve = model_curve(_FakeBooster(), frame, enc, CurveConfig(max_n=5, sample_rows=10_000, min_cohort_rows=1))
    ad = curve[curve["level"] == "ad"]
    assert np.allclose(ad["partial_dependence"], 1.0 / ad["n"])
    adv = curve[curve["level"] == "advertiser"]
    for (aud, tier), one in adv[adv["signal_tier"] != "all"].groupby(["audience", "signal_tier"]):
        cohort = frame[(frame["audience"] == aud) & (frame["signal_tier"] == tier)]
        # PD is flat at the group's mean 1/n_ad; anchored at the mean prediction of its n_advertiser = 1 rows
        anchor = (1.0 / cohort.loc[cohort["n_advertiser"] == 1, "n_ad"]).mean()
        assert np.allclose(one["partial_dependence"], anchor)
        assert one["rows"].iloc[0] == len(cohort)
    everyone = adv[adv["cohort"] == "all"]
    assert everyone["rows"].iloc[0] == len(frame)


def _runs_frame(seed: int) -> pd.DataFrame:
    """Impressions of a few users × ads over 40 days with exact exposure indices (28-day lookback)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(6):
        for a in range(3):
            ts = np.sort(rng.choice(40 * 24, rng.integers(3, 25), replace=False)) * 3600 * 10**6
            rows += [(f"u{u}", f"a{a}", int(t)) for t in ts]
    frame = pd.DataFrame(rows, columns=["user_id", "ad_id", "us"]).sample(frac=1.0, random_state=seed)
    frame["impression_ts"] = pd.Timestamp("2026-10-01T00:00:00Z") + pd.to_timedelta(frame["us"], unit="us")
    look = 28 * 86400 * 10**6
    frame["n_ad"] = [
        1
        + int(
            (
                (frame["user_id"] == r.user_id)
                & (frame["ad_id"] == r.ad_id)
                & (frame["us"] < r.us)
                & (frame["us"] > r.us - look)
            ).sum()
        )
        for r in frame.itertuples()
    ]
    return frame.reset_index(drop=True)


def test_run_entries_by_brute_force():
    frame = _runs_frame(11)
    look = 28 * 86400 * 10**6
    got = run_entries(frame, "ad", look)
    for i, r in frame.iterrows():
        same = frame[(frame["user_id"] == r.user_id) & (frame["ad_id"] == r.ad_id)]
        earlier = same[(same["us"] <= r.us) & (same["us"] > r.us - look)].sort_values("us")
        entry = earlier.index[0]  # the oldest impression of the pair within the lookback, itself included
        expected = entry if frame.loc[entry, "n_ad"] == 1 else -1
        assert got[i] == expected, (i, got[i], expected)
    assert (got >= 0).sum() > len(frame) // 3  # the check is not vacuous
    # rows whose run started before the rows' span: their entry is not among the rows
    late = frame[frame["us"] >= 20 * 86400 * 10**6].reset_index(drop=True)
    got_late = run_entries(late, "ad", look)
    first_seen = late.groupby(["user_id", "ad_id"])["us"].transform("min")
    assert (got_late[(late["us"] == first_seen) & (late["n_ad"] > 1)] == -1).all()


def test_a_run_stays_in_the_cohort_of_its_entry():
    """As the published curves do: the tier as of the run's entry, not of each impression."""
    frame = _runs_frame(13)
    frame["audience"] = np.where(frame["user_id"].isin(["u0", "u1", "u2"]), "returning", "cold")
    midway = frame["us"].median()
    frame["signal_tier"] = np.where(frame["us"] < midway, "impression_only", "engaged")  # every user clicks midway
    entry = run_entries(frame, "ad", 28 * 86400 * 10**6)
    groups = _entry_groups(frame, entry)
    moved = 0
    for i, r in frame.iterrows():
        tier = frame.loc[entry[i], "signal_tier"] if entry[i] >= 0 else r.signal_tier
        moved += tier != r.signal_tier
        for label in (f"{r.audience}/{tier}", f"{r.audience}/all", "all"):
            assert i in groups[label], (i, label)
        assert sum(i in g for g in groups.values()) == 3  # one cohort, its audience, everyone
    assert moved > 10  # runs that span the change exist: the check is not vacuous


def test_implied_curve_is_the_fixed_cohort_estimator():
    frame = _runs_frame(12)
    entry = run_entries(frame, "ad", 28 * 86400 * 10**6)
    p = np.random.default_rng(0).uniform(0.01, 0.2, len(frame))
    n = frame["n_ad"].to_numpy()
    rate, support = implied_curve(p, n, entry, 6)
    first = p[n == 1].mean()
    for k in range(1, 7):
        at = [i for i in range(len(frame)) if n[i] == k and entry[i] >= 0]
        assert support[k - 1] == len(at)
        if at:
            assert rate[k - 1] == pytest.approx(first * sum(p[i] for i in at) / sum(p[entry[i]] for i in at))
        else:
            assert np.isnan(rate[k - 1])
    assert rate[0] == pytest.approx(first)  # at n = 1 a row is its own entry


def test_small_cohorts_get_no_curve():
    frame = synthetic_training_frame(200, seed=5)
    enc = default_encoding(feature_columns(), wear_in=2)
    curve = model_curve(_FakeBooster(), frame, enc, CurveConfig(max_n=3, min_cohort_rows=10_000))
    assert curve.empty and tuple(curve.columns) == CURVE_COLUMNS


def test_deconvolved_label_sees_only_the_training_rows():
    """Conversions behind early-stopping and validation rows must not move the fit; the metrics stay binary."""
    frame = synthetic_training_frame(6000, seed=5)
    ts_us = frame["impression_ts"].dt.tz_convert("UTC").to_numpy(dtype="datetime64[us]").astype(np.int64)
    converted = frame["label_attributed_conversion"].to_numpy() == 1
    frame["conversion_us"] = pd.array(np.where(converted, ts_us + 3_600_000_000, 0), dtype="Int64")
    frame.loc[~converted, "conversion_us"] = pd.NA
    config = CONFIG.model_copy(update={"label": LabelConfig(credit="deconvolved")})
    half = {"advertiser": 7 * 86_400e6, "campaign": 3 * 86_400e6, "ad": 86_400e6}
    model = train_model(frame, config, feature_columns(), half_life_us=half)
    sample = frame.iloc[::7]

    def converting_from(cut: str) -> pd.DataFrame:
        later = frame["impression_ts"] >= pd.Timestamp(cut)
        changed = frame.copy()
        changed.loc[later, "conversion_us"] = pd.array(ts_us[later.to_numpy()] + 60_000_000, dtype="Int64")
        return changed  # every impression from the cut on converts a minute later

    again = train_model(converting_from(model.split["valid_cut"]), config, feature_columns(), half_life_us=half)
    np.testing.assert_array_equal(model.predict(sample), again.predict(sample))
    # the early-stopping rows' credit decides only where boosting stops: the trees up to there are the same
    early = train_model(converting_from(model.split["early_cut"]), config, feature_columns(), half_life_us=half)
    rounds = min(model.best_iteration, early.best_iteration) + 1
    inputs = model.encoding.transform(sample)
    np.testing.assert_array_equal(
        model.booster.inplace_predict(inputs, iteration_range=(0, rounds)),
        early.booster.inplace_predict(inputs, iteration_range=(0, rounds)),
    )
    # the validation AUC is on the binary target, recomputed here from the model's own predictions
    valid = frame[frame["impression_ts"] >= pd.Timestamp(model.split["valid_cut"])]
    expected = roc_auc(valid["label_attributed_conversion"].to_numpy(), model.predict(valid))
    assert model.metrics["valid_roc_auc"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="half_life_us"):
        train_model(frame, config, feature_columns())
