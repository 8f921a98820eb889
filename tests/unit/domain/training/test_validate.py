"""The Great Expectations gate on the training set: a clean set passes, a corrupt one stops naming rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from freqcap.adapters.gx.training_suite import TrainingValidationError, load_training_suite, validate_training_set
from freqcap.domain.training.config import ConversionModelConfig
from tests.unit.domain.training.helpers import synthetic_training_frame

FORMATS = ("feed", "stories", "reels", "search", "video")
CONFIG = ConversionModelConfig()


@pytest.fixture(scope="module")
def clean():
    return synthetic_training_frame(3000, seed=1)


def test_clean_training_set_passes(clean):
    report = validate_training_set(clean, CONFIG, allowed_formats=FORMATS)
    assert report.success and not report.failed
    assert report.rows == len(clean)
    rules = {r.rule for r in report.results}
    assert {"label_rate_sane", "features_before_impression", "n_ad_at_least_one", "event_id_not_null"} <= rules


def test_corrupt_training_set_stops_naming_the_expectations(clean):
    bad = clean.copy()
    bad.loc[bad.index[:3], "n_ad"] = 0  # n >= 1
    bad.loc[bad.index[5], "user_id"] = None  # a key is null
    bad.loc[bad.index[7], "feature_ts"] = bad.loc[bad.index[7], "impression_ts"]  # a feature at the impression time
    bad.loc[bad.index[9], "user_ad__imp_24h"] = -1
    bad.loc[bad.index[11], "n_ad"] = bad.loc[bad.index[11], "n_campaign"] + 5  # more ad than campaign exposures
    bad["label_conversion"] = 1  # label rate far outside the band
    with pytest.raises(TrainingValidationError) as caught:
        validate_training_set(bad, CONFIG, allowed_formats=FORMATS)
    message = str(caught.value)
    for rule in (
        "n_ad_at_least_one",
        "user_id_not_null",
        "features_before_impression",
        "user_ad__imp_24h_non_negative",
        "label_rate_sane",
        "n_ad_within_campaign",
    ):
        assert rule in message, rule
    assert "observed 1.0" in message and "3 unexpected rows" in message
    assert caught.value.report is not None and not caught.value.report.success
    failed = {r.rule for r in caught.value.report.failed}
    assert "hour_of_day_range" not in failed


def test_label_rate_band_comes_from_the_config(clean):
    strict = CONFIG.model_copy(
        update={"validation": CONFIG.validation.model_copy(update={"label_rate_min": 0.5, "label_rate_max": 0.9})}
    )
    with pytest.raises(TrainingValidationError, match="label_rate_sane"):
        validate_training_set(clean, strict, allowed_formats=FORMATS)


def test_optional_expectations_are_skipped_without_their_column(clean):
    slim = clean.drop(columns=[c for c in clean.columns if c.startswith("user_campaign__")])
    report = validate_training_set(slim, CONFIG, allowed_formats=FORMATS)
    skipped = {r.rule for r in report.results if r.success is None}
    assert "user_campaign__imp_24h_non_negative" in skipped and report.success


def test_required_column_missing_fails(clean):
    with pytest.raises(TrainingValidationError, match="n_campaign"):
        validate_training_set(clean.drop(columns=["n_campaign"]), CONFIG, allowed_formats=FORMATS)


def test_suite_file_is_well_formed():
    doc = load_training_suite(config=CONFIG)
    rules = [e["meta"]["rule"] for e in doc["expectations"]]
    assert len(rules) == len(set(rules))
    assert json.loads(json.dumps(doc)) == doc
    assert np.all([isinstance(e["kwargs"], dict) for e in doc["expectations"]])
