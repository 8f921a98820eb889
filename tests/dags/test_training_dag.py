"""The training DAG end to end through `dag.test()`: MLflow run, registered model, aliases, curves and policy."""

from __future__ import annotations

import os
import uuid

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.config import SimulationConfig, load_settings
from freqcap.domain.training.config import default_model_config_path
from freqcap.layout import parse_as_of

pytestmark = pytest.mark.slow
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
NAME = "freqcap-conversion-dag"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train-dag")
    simulate_to_dir(tmp / "raw", SimulationConfig(users=1500, days=10, seed=4))
    raw = yaml.safe_load(default_model_config_path().read_text())
    raw.update({"registered_model": NAME, "experiment": NAME})
    raw["label"]["attribution_window"] = "2d"
    raw["xgboost"]["num_boost_round"] = 60
    raw["curve"].update({"max_n": 10, "sample_rows": 500})
    (tmp / "conversion.yaml").write_text(yaml.safe_dump(raw))
    return tmp


def test_training_dag_end_to_end(world, monkeypatch, airflow_db):
    import mlflow
    from mlflow import MlflowClient

    from freqcap.adapters.airflow.local import run_dag, task_states
    from freqcap.adapters.mlflow.tracking import configure
    from freqcap.domain.policy import load_policy

    monkeypatch.setenv("FREQCAP__DATA_DIR", str(world / "data"))
    monkeypatch.setenv("FREQCAP__FEAST__PROJECT", f"t{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("FREQCAP__TRAINING__MODEL_CONFIG_PATH", str(world / "conversion.yaml"))
    settings = load_settings()
    as_of = parse_as_of(load_ground_truth(world / "raw")["window"]["end"])
    conf = {"as_of": as_of.isoformat(), "events_dir": str(world / "raw" / "events")}
    dag_run = run_dag("freqcap_training", logical_date=as_of, conf=conf)
    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert set(states.values()) == {"success"}

    configure(settings)
    client = MlflowClient()
    challenger = client.get_model_version_by_alias(NAME, "challenger")
    champion = client.get_model_version_by_alias(NAME, "champion")  # the first model becomes champion
    assert challenger.version == champion.version
    run = client.get_run(challenger.run_id)
    assert run.data.metrics["valid_roc_auc"] > 0.5
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "curves")}
    assert {"curves/policy.yaml", "curves/curves.parquet", "curves/model_vs_empirical.csv"} <= artifacts
    # the cross-check against the training span's curves, and against the published ones beside it with its
    # yardstick (the span's own empirical curves against the published ones)
    assert {"curves/model_vs_published.csv", "curves/span_vs_published.csv"} <= artifacts
    metrics = run.data.metrics
    assert {"curve_disagreements", "curve_disagreements_published", "span_disagreements_published"} <= set(metrics)
    yardstick = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="curves/span_vs_published.csv")
    )
    assert metrics["span_disagreements_published"] == int(yardstick["flagged"].sum())
    # the split of `curve_disagreements` into shape and level, counted from the logged comparison
    comparison = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="curves/model_vs_empirical.csv")
    )
    assert metrics["curve_disagreements"] == int(comparison["flagged"].sum())
    assert metrics["curve_shape_disagreements"] == int(comparison["shape_flagged"].sum())
    assert metrics["curve_level_disagreements"] == int(comparison["level_outside"].sum())
    policy_file = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="curves/policy.yaml")
    policy = load_policy(policy_file)
    assert run.data.tags["freqcap.policy_version"] == policy.version
    assert client.get_model_version(NAME, challenger.version).tags["policy_version"] == policy.version
    assert policy.rules, "the proposed policy has cohort rules"

    # The registered model loads through pyfunc and predicts probabilities.
    training_file = next((world / "data" / "training").rglob("training_set.parquet"))

    # The training-set gate ran with its leakage rules (evaluated, not skipped) and wrote its report beside the set;
    # the run is on the Data Docs site.
    import json

    from freqcap.adapters.gx.docs import runs_page_path

    validation = json.loads(training_file.with_name("validation.json").read_text())
    assert validation["success"] and validation["gate"] == "training-set"
    ran = {o["rule"] for o in validation["outcomes"] if o["success"] is True}
    assert {
        "features_before_impression",
        "features_not_after_as_of",
        "labels_complete_by_as_of",
        "label_rate_sane",
    } <= ran
    assert "freqcap_training_set" in runs_page_path(settings.data_dir).read_text()
    from freqcap.domain.training.encoding import FeatureEncoding

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
    encoding = FeatureEncoding.from_dict(model.metadata.metadata["freqcap_encoding"])
    pred = model.predict(encoding.transform(pq.read_table(training_file).to_pandas().head(50)))
    assert len(pred) == 50 and ((pred >= 0) & (pred <= 1)).all()
