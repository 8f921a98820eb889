"""The publish job's what-if forecast end to end: recent events under the data dir, a real serving on loopback
holding the live policy, a real MLflow registry (SQLite) holding the champion's policy. A mild candidate passes
with its forecast written beside it and logged to the champion's run; a harsh one is stopped by the guardrail on
projected conversions, naming the numbers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from freqcap.adapters.feast.reader import UserState
from freqcap.adapters.simulation_files import simulate_to_dir
from freqcap.api.app import create_app
from freqcap.config import SimulationConfig, load_settings
from freqcap.layout import DataLayout
from tests.servers import live_server

TOKEN = "forecast-secret-admin-token-0123456789"


class NoFeatures:
    """Reader of a user nobody has seen (the publish job only talks to the policy endpoints)."""

    def read(self, user_id, candidates):
        return UserState("unknown", "impression_only", {})


def _doc(version: str, ad: int, campaign: int) -> dict:
    return {
        "version": version,
        "created_at": "2026-05-01T00:00:00Z",
        "defaults": [
            {"level": "ad", "caps": [{"window": "28d", "max": ad}], "mode": "hard"},
            {"level": "campaign", "caps": [{"window": "28d", "max": campaign}], "mode": "hard"},
        ],
    }


def _champion(settings, name: str, doc: dict, tmp: Path) -> dict:
    """A real run holding curves/policy.yaml, registered with alias `champion` (as training leaves it)."""
    import mlflow

    from freqcap.adapters.mlflow.tracking import client, configure, ensure_experiment
    from freqcap.jobs.publish import fetch_champion_policy_job

    configure(settings)
    mc = client(settings)
    path = tmp / doc["version"] / "policy.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(doc))
    # Not `mlflow.set_experiment`: it would stay the process's active experiment for the tests that run after.
    experiment_id = ensure_experiment(settings, f"forecast-{name}")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifact(str(path), artifact_path="curves")
    if not mc.search_registered_models(filter_string=f"name = '{name}'"):
        mc.create_registered_model(name)
    version = mc.create_model_version(name, source=f"{run.info.artifact_uri}/curves", run_id=run.info.run_id)
    mc.set_registered_model_alias(name, "champion", version.version)
    mc.set_model_version_tag(name, version.version, "policy_version", doc["version"])
    return fetch_champion_policy_job(settings, name)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("publish_forecast")
    mp = pytest.MonkeyPatch()
    mp.setenv("FREQCAP__DATA_DIR", str(tmp / "data"))
    mp.setenv("FREQCAP__SERVING__ADMIN_TOKEN", TOKEN)
    mp.setenv("FREQCAP__FEAST__PROJECT", f"p{uuid.uuid4().hex[:8]}")
    mp.setenv("FREQCAP__PUBLISH__GUARDRAILS__MAX_CAP_RATIO", "10")  # only the forecast's guardrail is under test
    settings = load_settings()
    raw = DataLayout.of(settings).events_dir.parent
    simulate_to_dir(raw, SimulationConfig(users=3000, days=10, seed=9))
    live = tmp / "live.yaml"
    live.write_text(yaml.safe_dump(_doc("live-1", 12, 30)))
    app = create_app(settings, policy_path=live, reader=NoFeatures(), admin_token=TOKEN)
    with live_server(app) as url:
        mp.setenv("FREQCAP__PUBLISH__SERVING_URL", url)
        yield tmp, load_settings()
    mp.undo()


def test_mild_candidate_passes_with_its_forecast_written_and_logged(env):
    from freqcap.adapters.mlflow.tracking import client
    from freqcap.jobs.publish import check_guardrails_job

    tmp, settings = env
    candidate = _champion(settings, "fc-mild", _doc("mild-2", 11, 28), tmp)
    result = check_guardrails_job(candidate, settings)
    checks = {c["name"]: c for c in result["guardrails"]["checks"]}
    forecast = checks["projected_conversions_and_reach"]
    assert forecast["passed"], forecast["detail"]
    table = pd.read_csv(result["forecast"]["table"])
    assert {"impressions", "conversions", "reach", "past_cap_share"} == set(table["metric"])
    assert {"high_intent/all", "cold/impression_only", "all"} <= set(table["cohort"])
    assert (table["low"] <= table["candidate"]).all() and (table["candidate"] <= table["high"]).all()
    assert Path(result["forecast"]["plot"]).stat().st_size > 10_000
    assert any(line.startswith("conversions/ad: ") for line in result["forecast"]["headline"])
    report = json.loads(DataLayout.guardrails_report(Path(candidate["policy_path"])).read_text())
    assert report["forecast"]["table"] == result["forecast"]["table"]
    mc = client(settings)
    logged = {f.path for f in mc.list_artifacts(candidate["run_id"], "publish/forecast")}
    assert {"publish/forecast/forecast.csv", "publish/forecast/forecast.png"} <= logged
    metrics = mc.get_run(candidate["run_id"]).data.metrics
    assert "forecast_conversions_change_ad" in metrics


def test_harsh_candidate_is_stopped_by_the_projected_conversions_guardrail(env):
    from freqcap.jobs.publish import GuardrailViolation, check_guardrails_job

    tmp, settings = env
    candidate = _champion(settings, "fc-harsh", _doc("harsh-3", 2, 4), tmp)
    with pytest.raises(GuardrailViolation, match="projected_conversions_and_reach: FAILED"):
        check_guardrails_job(candidate, settings)
    report = json.loads(DataLayout.guardrails_report(Path(candidate["policy_path"])).read_text())
    failed = [c for c in report["guardrails"]["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["projected_conversions_and_reach"]
    table = pd.read_csv(report["forecast"]["table"])
    everyone = table[(table["cohort"] == "all") & (table["metric"] == "conversions")]
    assert (everyone["change_pct"] < -0.05).any()
