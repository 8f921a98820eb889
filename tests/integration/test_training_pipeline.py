"""The training pipeline end to end through its job functions, on a small simulated world.

simulate -> daily snapshots (backfill) -> point-in-time training set (Feast) -> Great Expectations -> XGBoost ->
MLflow run (SQLite + local artifacts) -> registered version with alias `challenger` -> champion gate; the model
loads and predicts through `mlflow.pyfunc`; a deliberately worse model is refused. One MLflow DB per module
(creating its schema takes ~6-11 s).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.config import SimulationConfig, load_settings
from freqcap.domain.training.config import default_model_config_path
from freqcap.jobs.training import (
    backfill_snapshots_job,
    build_training_set_job,
    register_and_gate_job,
    train_job,
    validate_training_set_job,
)
from freqcap.layout import parse_as_of

pytestmark = pytest.mark.slow
# XGBoost's OpenMP threads must sleep, not spin, while waiting: ~20x faster on a busy 2-core box (read at load).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
NAME = "freqcap-conversion-it"


def _write_config(path, **overrides):
    raw = yaml.safe_load(default_model_config_path().read_text())
    raw["registered_model"] = NAME
    raw["experiment"] = NAME
    raw["label"]["attribution_window"] = "2d"  # a 10-day world: keep most impressions label-complete
    raw["xgboost"]["num_boost_round"] = 80
    raw["curve"].update({"max_n": 10, "sample_rows": 500})
    for section, values in overrides.items():
        raw[section] = {**raw[section], **values}
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("training")
    sim = simulate_to_dir(tmp / "raw", SimulationConfig(users=1500, days=10, seed=3))
    settings = load_settings(
        environ={"FREQCAP__DATA_DIR": str(tmp / "data"), "FREQCAP__FEAST__PROJECT": f"t{uuid.uuid4().hex[:10]}"}
    )
    window = load_ground_truth(tmp / "raw")["window"]
    start, as_of = parse_as_of(window["start"]), parse_as_of(window["end"])
    config = _write_config(tmp / "conversion.yaml")
    events = str(sim.events_dir)
    backfill = backfill_snapshots_job(events, start.isoformat(), (as_of - timedelta(days=2)).isoformat(), settings)
    training_set = build_training_set_job(events, as_of.isoformat(), settings, model_config=config)
    validation = validate_training_set_job(training_set, settings, model_config=config)
    trained = train_job(training_set, settings, model_config=config, validation=validation)
    gate = register_and_gate_job(trained, settings, model_config=config)
    return {
        "tmp": tmp,
        "settings": settings,
        "config": config,
        "backfill": backfill,
        "training_set": training_set,
        "validation": validation,
        "trained": trained,
        "gate": gate,
    }


def test_job_outputs_are_plain_json(pipeline):
    for key in ("backfill", "training_set", "validation", "trained", "gate"):
        value = pipeline[key]
        assert json.loads(json.dumps(value)) == value, key


def test_snapshots_and_training_set(pipeline):
    backfill, ts = pipeline["backfill"], pipeline["training_set"]
    assert len(backfill["published"]) == 9  # days 0..8 of a 10-day world
    assert ts["rows"] > 10_000 and 0.001 < ts["label_rate"] < 0.3
    assert parse_as_of(ts["end"]) == parse_as_of(ts["as_of"]) - timedelta(days=2)  # every label complete
    frame = pq.read_table(ts["path"]).to_pandas()
    assert (frame["feature_ts"] < frame["impression_ts"]).all() and (frame["n_ad"] >= 1).all()
    assert frame["event_id"].is_unique
    assert pipeline["validation"]["success"] and pipeline["validation"]["sha256"] == ts["sha256"]


def test_mlflow_run_has_params_tags_metrics_curve_and_model(pipeline):
    import mlflow
    from mlflow import MlflowClient

    trained = pipeline["trained"]
    client = MlflowClient(tracking_uri=trained["tracking_uri"])
    assert trained["tracking_uri"].startswith("sqlite:////")
    run = client.get_run(trained["run_id"])
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    assert tags["freqcap.kind"] == "conversion_model"
    assert tags["freqcap.training_set_sha256"] == pipeline["training_set"]["sha256"]
    assert tags["freqcap.data_start"] == pipeline["training_set"]["start"]
    assert len(tags["freqcap.git_sha"]) in (40, 7) or tags["freqcap.git_sha"] == "unknown"
    assert run.info.run_name == trained["run_name"] and run.info.run_name.startswith("conversion-")
    for metric in ("roc_auc", "pr_auc", "log_loss", "ece"):
        assert np.isfinite(metrics[f"valid_{metric}"])
    assert any(k.startswith("valid.cold.") for k in metrics)
    assert params["label.attribution_window"] == "2d" and params["xgb.tree_method"] == "hist"
    artifacts = {a.path for a in client.list_artifacts(trained["run_id"], "curves")}
    assert {"curves/model_curve.parquet", "curves/model_curve.csv", "curves/model_curve.json"} <= artifacts
    curve = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=trained["run_id"], artifact_path="curves/model_curve.parquet")
    )
    assert {"cohort", "level", "n", "rate"} <= set(curve.columns) and curve["n"].max() == 10
    assert trained["valid_metrics"]["roc_auc"] > 0.6
    found = mlflow.search_runs(
        experiment_names=[NAME], filter_string="tags.`freqcap.kind` = 'conversion_model'", output_format="list"
    )
    assert trained["run_id"] in {r.info.run_id for r in found}


def test_registered_challenger_loads_and_predicts_through_pyfunc(pipeline):
    import mlflow.pyfunc
    from mlflow import MlflowClient

    from freqcap.domain.training.encoding import FeatureEncoding

    gate = pipeline["gate"]
    client = MlflowClient(tracking_uri=pipeline["trained"]["tracking_uri"])
    version = client.get_model_version_by_alias(NAME, "challenger")
    assert str(version.version) == gate["version"] and version.run_id == pipeline["trained"]["run_id"]
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
    requirements = mlflow.pyfunc.get_model_dependencies(f"models:/{NAME}@challenger")
    lines = Path(requirements).read_text().splitlines()
    pinned = [line for line in lines if line.startswith(("xgboost", "mlflow"))]
    assert pinned and all("==" in line for line in pinned)
    encoding = FeatureEncoding.from_dict(model.metadata.metadata["freqcap_encoding"])
    rows = pq.read_table(pipeline["training_set"]["path"]).to_pandas().tail(200)
    preds = np.asarray(model.predict(encoding.transform(rows)))
    assert preds.shape == (200,) and ((preds > 0) & (preds < 1)).all()


def test_gate_promotes_the_first_model_and_refuses_a_worse_one(pipeline):
    from mlflow import MlflowClient

    settings, gate = pipeline["settings"], pipeline["gate"]
    assert gate["promoted"] and gate["decision"]["basis"] == "no_champion"
    client = MlflowClient(tracking_uri=pipeline["trained"]["tracking_uri"])
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == gate["version"]

    worse_config = _write_config(
        pipeline["tmp"] / "worse.yaml",
        xgboost={"num_boost_round": 2, "early_stopping_rounds": None, "params": {"max_depth": 1, "eta": 0.05}},
    )
    worse = train_job(pipeline["training_set"], settings, model_config=worse_config, validation=pipeline["validation"])
    refused = register_and_gate_job(worse, settings, model_config=worse_config)
    assert not refused["promoted"]
    assert refused["decision"]["basis"] == "head_to_head"
    assert "roc_auc" in refused["reason"] and "lower than the champion" in refused["reason"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == gate["version"]
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == refused["version"]
    tags = client.get_model_version(NAME, refused["version"]).tags
    assert tags["freqcap.gate"] == "refused" and "roc_auc" in tags["freqcap.gate_reason"]


@pytest.mark.parametrize("on_label_change", ["refuse", "promote"])
def test_a_challenger_on_another_label_is_decided_by_on_label_change(pipeline, on_label_change):
    """A champion fitted on the binary last-touch label, a challenger on the EM credit (the default): the gate
    still scores both, but `gate.on_label_change` decides, and the reason names both labels."""
    from mlflow import MlflowClient

    settings, tmp = pipeline["settings"], pipeline["tmp"]
    name = f"{NAME}-label-{on_label_change}"
    client = MlflowClient(tracking_uri=pipeline["trained"]["tracking_uri"])
    last_touch = _write_config(tmp / f"last-touch-{on_label_change}.yaml", label={"credit": "last_touch"})
    old = train_job(pipeline["training_set"], settings, model_config=last_touch, validation=pipeline["validation"])
    first = register_and_gate_job({**old, "registered_model": name}, settings, model_config=last_touch)
    assert first["promoted"]
    config = _write_config(tmp / f"{on_label_change}.yaml", gate={"on_label_change": on_label_change})
    decided = register_and_gate_job({**pipeline["trained"], "registered_model": name}, settings, model_config=config)
    assert decided["decision"]["basis"] == "label_changed"
    assert "attributed_conversion/last_touch -> attributed_conversion/deconvolved" in decided["reason"]
    assert decided["decision"]["comparison"]  # both were still scored
    assert decided["promoted"] == (on_label_change == "promote")
    expected = decided["version"] if on_label_change == "promote" else first["version"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == expected
    tags = client.get_model_version(name, decided["version"]).tags
    assert tags["freqcap.gate"] == ("promoted" if on_label_change == "promote" else "refused")
    assert "label changed" in tags["freqcap.gate_reason"]


def _auc_of_version(settings, name: str, version: str, rows: pd.DataFrame) -> float:
    """ROC AUC of a registered version on `rows`, computed here with scikit-learn (not the gate's own metric)."""
    import mlflow.pyfunc
    from sklearn.metrics import roc_auc_score

    from freqcap.adapters.mlflow.tracking import ENCODING_KEY, configure
    from freqcap.domain.training.encoding import FeatureEncoding

    configure(settings)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    encoding = FeatureEncoding.from_dict(loaded.metadata.metadata[ENCODING_KEY])
    preds = np.asarray(loaded.predict(encoding.transform(rows)), dtype=np.float64).ravel()
    return float(roc_auc_score(rows["label_conversion"].to_numpy(), preds))


def test_better_challenger_replaces_an_existing_champion_and_a_worse_one_does_not(pipeline):
    """Champion/challenger through the real registry (SQLite): a weak model holds `champion`; the pipeline's
    model, better on rows out of sample for both, takes the alias over with the reason tagged on its version;
    a weak one after it is refused; publishing's fetch reports why the champion holds the alias."""
    from mlflow import MlflowClient

    from freqcap.jobs.publish import fetch_champion_policy_job

    settings, tmp = pipeline["settings"], pipeline["tmp"]
    name = f"{NAME}-cc"
    client = MlflowClient(tracking_uri=pipeline["trained"]["tracking_uri"])
    weak_config = _write_config(
        tmp / "weak.yaml",
        xgboost={"num_boost_round": 2, "early_stopping_rounds": None, "params": {"max_depth": 1, "eta": 0.05}},
    )
    weak = train_job(pipeline["training_set"], settings, model_config=weak_config, validation=pipeline["validation"])
    first = register_and_gate_job({**weak, "registered_model": name}, settings, model_config=weak_config)
    assert first["promoted"] and first["decision"]["basis"] == "no_champion"

    better = register_and_gate_job({**pipeline["trained"], "registered_model": name}, settings, pipeline["config"])
    assert better["promoted"], better["reason"]
    assert better["decision"]["basis"] == "head_to_head"
    assert better["decision"]["champion_version"] == first["version"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == better["version"]
    tags = client.get_model_version(name, better["version"]).tags
    assert tags["freqcap.gate"] == "promoted" and tags["freqcap.gate_reason"].startswith("passes every gate metric")
    # independent of the gate: the promoted model really ranks the validation rows better than the old champion
    frame = pq.read_table(pipeline["training_set"]["path"]).to_pandas()
    rows = frame[frame["impression_ts"] >= pd.Timestamp(pipeline["trained"]["split"]["valid_cut"])]
    assert _auc_of_version(settings, name, better["version"], rows) > _auc_of_version(
        settings, name, first["version"], rows
    )

    again = train_job(pipeline["training_set"], settings, model_config=weak_config, validation=pipeline["validation"])
    refused = register_and_gate_job({**again, "registered_model": name}, settings, model_config=weak_config)
    assert not refused["promoted"] and refused["decision"]["champion_version"] == better["version"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == better["version"]
    assert client.get_model_version(name, refused["version"]).tags["freqcap.gate"] == "refused"

    # publishing fetches the new champion's policy and carries the gate's reason into its report
    policy = tmp / "cc-policy" / "policy.yaml"
    policy.parent.mkdir()
    policy.write_text(
        yaml.safe_dump(
            {
                "version": "cc-1",
                "created_at": "2026-05-01T00:00:00Z",
                "defaults": [{"level": "ad", "caps": [{"window": "7d", "max": 4}]}],
            }
        )
    )
    client.log_artifact(better["run_id"], str(policy), artifact_path="curves")
    client.set_model_version_tag(name, better["version"], "policy_version", "cc-1")
    fetched = fetch_champion_policy_job(settings, name)
    assert fetched["model_version"] == better["version"] and fetched["policy_version"] == "cc-1"
    assert fetched["gate"] == {"decision": "promoted", "reason": tags["freqcap.gate_reason"]}
