"""The training-set gate (`resources/gx/training.json` + leakage rules) on a real point-in-time training set.

A small simulated world goes through the real pipeline: validated events -> daily feature snapshots -> the
point-in-time training set (the DuckDB ASOF engine, which also returns each view's joined snapshot time). The set
passes; copies with a feature read at/after the impression, a snapshot newer than the feature time, a label window
that ends after the horizon, or a label rate outside the band stop the gate naming those rules. Which rows break
which rule is counted here with pandas.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import pytest

from freqcap.adapters.duckdb.features import build_features
from freqcap.adapters.duckdb.training_set import build_training_set
from freqcap.adapters.feast.snapshots import publish_snapshot
from freqcap.adapters.gx.docs import runs_page_path
from freqcap.adapters.gx.training import TrainingGateError, validate_training_table
from freqcap.adapters.gx.training_suite import TrainingValidationError
from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.config import SimulationConfig
from freqcap.domain.training.config import ConversionModelConfig, LabelConfig
from freqcap.jobs.features import validate_events_job
from freqcap.jobs.training import validate_training_set_job
from freqcap.layout import offline_root, parse_as_of
from tests.unit.adapters.gx.worlds import settings_for

pytestmark = pytest.mark.slow
VIEWS = ("user_advertiser", "user_campaign", "user_ad", "user")
LEAKAGE_RULES = ("features_before_impression", "features_not_after_as_of", "labels_complete_by_as_of")
CONFIG = ConversionModelConfig(label=LabelConfig(attribution_window="1d"))  # a 6-day world keeps 4 days of labels


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("training-gate")
    simulate_to_dir(root / "raw", SimulationConfig(users=300, days=6, seed=8))
    settings = settings_for(root, FREQCAP__VALIDATION__DATA_DOCS="false")
    window = load_ground_truth(root / "raw")["window"]
    start, as_of = parse_as_of(window["start"]), parse_as_of(window["end"])
    report = validate_events_job(str(root / "raw" / "events"), as_of.isoformat(), settings)
    clean, users = report["clean_path"], report["users_path"]  # both pseudonymized at validation
    snapshots = offline_root(root / "data" / "feast")
    day = start + timedelta(days=1)
    while day < as_of:  # the daily snapshots the features DAG would have published
        publish_snapshot(
            build_features(clean, day, root / "snap" / day.isoformat(), settings.features, users=users), snapshots
        )
        day += timedelta(days=1)
    ts = build_training_set(
        clean,
        settings,
        CONFIG,
        out_path=root / "training" / "training_set.parquet",
        as_of=as_of,
        users=users,
        engine="duckdb",
        snapshot_ts=True,
    )
    return settings, ts


def _leaks(frame: pd.DataFrame, as_of) -> dict[str, int]:
    """rule -> offending rows, from the definitions of the leakage rules."""
    horizon = pd.Timedelta(seconds=CONFIG.label.horizon_seconds)
    out = {
        "features_before_impression": int((frame["feature_ts"] >= frame["impression_ts"]).sum()),
        "features_not_after_as_of": int((frame["feature_ts"] > as_of).sum()),
        "labels_complete_by_as_of": int((frame["impression_ts"] + horizon > as_of).sum()),
    }
    for view in VIEWS:
        out[f"{view}__snapshot_not_after_features"] = int((frame[f"{view}__snapshot_ts"] > frame["feature_ts"]).sum())
    return {k: v for k, v in out.items() if v}


def test_the_real_training_set_passes_with_every_leakage_rule_evaluated(world):
    settings, ts = world
    frame = pd.read_parquet(ts.path)
    assert len(frame) >= CONFIG.validation.min_rows and _leaks(frame, ts.as_of) == {}
    report = validate_training_table(
        ts.path, CONFIG, allowed_formats=settings.validation.allowed_formats, as_of=ts.as_of
    )
    assert report.success
    evaluated = {o.rule: o for o in report.outcomes if o.success is not None}
    for rule in (*LEAKAGE_RULES, *(f"{v}__snapshot_not_after_features" for v in VIEWS), "label_rate_sane"):
        assert evaluated[rule].success is True, rule
    assert evaluated["label_rate_sane"].observed == pytest.approx(frame["label_conversion"].mean(), abs=1e-6)


def test_leaks_and_a_label_rate_outside_the_band_stop_the_gate(world, tmp_path):
    settings, ts = world
    frame = pd.read_parquet(ts.path)
    as_of = pd.Timestamp(ts.as_of)
    frame.loc[3, "feature_ts"] = frame.loc[3, "impression_ts"] + pd.Timedelta(minutes=1)  # label window before features
    frame.loc[5, "user_ad__snapshot_ts"] = frame.loc[5, "impression_ts"]  # a snapshot taken at the impression itself
    frame.loc[7, "impression_ts"] = as_of - pd.Timedelta(hours=1)  # its label needs events after the horizon
    frame["label_conversion"] = 1  # every impression "converts": far outside the label-rate band
    expected = _leaks(frame, as_of)
    assert set(expected) == {
        "features_before_impression",
        "user_ad__snapshot_not_after_features",
        "labels_complete_by_as_of",
    }
    with pytest.raises(TrainingGateError) as caught:
        validate_training_table(frame, CONFIG, allowed_formats=settings.validation.allowed_formats, as_of=ts.as_of)
    exc = caught.value
    assert isinstance(exc, TrainingValidationError)  # the training DAG and jobs keep catching what they caught
    failed = {o.rule: o for o in exc.report.failed}
    assert set(failed) == {*expected, "label_rate_sane"}
    for rule, n in expected.items():
        assert failed[rule].unexpected_count == n and rule in str(exc)
    assert failed["label_rate_sane"].observed == 1.0
    assert "label_rate_sane (expect_column_mean_to_be_between on label_conversion): observed 1.0" in str(exc)


def test_the_training_job_gate_writes_its_report_and_data_docs(world, tmp_path):
    settings, ts = world
    settings = settings.model_copy(
        update={"data_dir": tmp_path, "validation": settings.validation.model_copy(update={"data_docs": True})}
    )
    good = validate_training_set_job(ts.to_dict(), settings, CONFIG)
    assert good["success"] and good["sha256"] == ts.sha256 and not set(LEAKAGE_RULES) & set(good["skipped"])
    assert good["data_docs"] == str(runs_page_path(tmp_path))

    bad_path = tmp_path / "bad" / "training_set.parquet"
    bad_path.parent.mkdir()
    frame = pd.read_parquet(ts.path)
    frame.loc[0, "feature_ts"] = frame.loc[0, "impression_ts"]
    frame.to_parquet(bad_path)
    with pytest.raises(TrainingValidationError, match="features_before_impression"):
        validate_training_set_job({**ts.to_dict(), "path": str(bad_path)}, settings, CONFIG)
    written = json.loads(bad_path.with_name("validation.json").read_text())
    assert written["success"] is False and written["failed_rules"] == ["features_before_impression"]
    html = runs_page_path(tmp_path).read_text()
    assert "freqcap_training_set" in html and "FAILED" in html and "features_before_impression" in html
