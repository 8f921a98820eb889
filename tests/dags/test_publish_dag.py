"""The publish DAG through `dag.test()` against a real decision API on loopback and a real MLflow registry:
the champion's policy reaches serving; a guardrail violation or a rejected policy stops it at once; an unreachable
serving fails after retries; serving keeps its policy whenever publishing fails."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from freqcap.adapters.feast.reader import UserState
from freqcap.api.app import create_app
from freqcap.config import load_settings
from tests.servers import free_port, live_server

TOKEN = "publish-secret-admin-token-0123456789"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


class NoFeatures:
    """Reader of a user nobody has seen (these tests exercise the policy endpoints, never the features)."""

    def read(self, user_id, candidates):
        return UserState("unknown", "impression_only", {})


def policy_doc(version: str, ad_cap: int = 4, campaign_cap: int = 8) -> dict:
    return {
        "version": version,
        "created_at": "2026-05-01T00:00:00Z",
        "defaults": [
            {"level": "ad", "caps": [{"window": "7d", "max": ad_cap}]},
            {"level": "campaign", "caps": [{"window": "28d", "max": campaign_cap}]},
        ],
    }


def make_champion(settings, name: str, doc: dict, tmp: Path, *, tag: str | None = None) -> str:
    """A real MLflow run holding curves/policy.yaml, registered as a model version with alias `champion` and the
    `policy_version` tag, as the training DAG leaves them (the model itself is irrelevant to publishing)."""
    import mlflow

    from freqcap.adapters.mlflow.tracking import client, configure

    configure(settings)
    mc = client(settings)
    path = tmp / f"{doc['version']}" / "policy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    experiment = mlflow.set_experiment(f"publish-{name}")
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_artifact(str(path), artifact_path="curves")
    if not mc.search_registered_models(filter_string=f"name = '{name}'"):
        mc.create_registered_model(name)
    version = mc.create_model_version(name, source=f"{run.info.artifact_uri}/curves", run_id=run.info.run_id)
    mc.set_registered_model_alias(name, "champion", version.version)
    mc.set_model_version_tag(name, version.version, "policy_version", tag or doc["version"])
    return version.version


@pytest.fixture
def env(tmp_path, monkeypatch, airflow_db):
    monkeypatch.setenv("FREQCAP__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FREQCAP__SERVING__ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("FREQCAP__FEAST__PROJECT", f"p{uuid.uuid4().hex[:8]}")
    live = tmp_path / "live.yaml"
    live.write_text(yaml.safe_dump(policy_doc("live-1")))
    return tmp_path, live, monkeypatch


def _run(name: str):
    from freqcap.adapters.airflow.local import run_dag, task_states

    dag_run = run_dag("freqcap_publish", logical_date=datetime.now(UTC), conf={"registered_model": name})
    return dag_run, task_states(dag_run)


def _served_version(url: str) -> str:
    return httpx.get(url + "/v1/policy").json()["version"]


def test_champion_policy_is_published_and_verified(env):
    tmp, live, monkeypatch = env
    name = f"m-{uuid.uuid4().hex[:6]}"
    app = create_app(load_settings(), policy_path=live, reader=NoFeatures(), admin_token=TOKEN)
    with live_server(app) as url:
        monkeypatch.setenv("FREQCAP__PUBLISH__SERVING_URL", url)
        settings = load_settings()
        version = make_champion(settings, name, policy_doc("proposed-2", ad_cap=5), tmp)
        dag_run, states = _run(name)
        assert dag_run.state == "success", states
        assert _served_version(url) == "proposed-2"
        decided = httpx.post(
            url + "/v1/decide",
            json={
                "user_id": "x",
                "context": {"format": "feed", "ts": NOW.isoformat()},
                "candidates": [{"ad_id": "a", "campaign_id": "c", "advertiser_id": "v"}],
            },
        ).json()
        assert decided["policy_version"] == "proposed-2" and decided["degraded"] is False

        # a second run finds serving already up to date: nothing pushed, still verified
        dag_run, states = _run(name)
        assert dag_run.state == "success", states

    from freqcap.adapters.mlflow.tracking import client

    tags = client(settings).get_model_version(name, version).tags
    assert tags["published_to"] == url and tags["published_at"]
    report = yaml.safe_load((tmp / "data" / "publish" / "candidates" / f"v{version}" / "guardrails.json").read_text())
    assert report["live_version"] == "proposed-2" and report["unchanged"] is True  # the second run's report
    assert report["forecast"] == {"skipped": "serving already runs this version"}
    published = (tmp / "data" / "publish" / "published.jsonl").read_text().splitlines()
    assert len(published) == 2


def test_first_publication_to_a_serving_without_policy(env):
    tmp, _, monkeypatch = env
    name = f"m-{uuid.uuid4().hex[:6]}"
    app = create_app(load_settings(), policy_path=None, reader=NoFeatures(), admin_token=TOKEN)
    with live_server(app) as url:
        monkeypatch.setenv("FREQCAP__PUBLISH__SERVING_URL", url)
        assert httpx.get(url + "/readyz").status_code == 503
        make_champion(load_settings(), name, policy_doc("first-1"), tmp)
        dag_run, states = _run(name)
        assert dag_run.state == "success", states
        assert _served_version(url) == "first-1" and httpx.get(url + "/readyz").status_code == 200
    report = next((tmp / "data" / "publish").rglob("guardrails.json")).read_text()
    assert '"live_version": null' in report and "first publication" in report


def test_a_guardrail_violation_stops_publication(env):
    tmp, live, monkeypatch = env
    name = f"m-{uuid.uuid4().hex[:6]}"
    app = create_app(load_settings(), policy_path=live, reader=NoFeatures(), admin_token=TOKEN)
    with live_server(app) as url:
        monkeypatch.setenv("FREQCAP__PUBLISH__SERVING_URL", url)
        make_champion(load_settings(), name, policy_doc("wild-3", ad_cap=40), tmp)  # 4 -> 40 is more than x4
        dag_run, states = _run(name)
        assert dag_run.state == "failed"
        assert states["check_guardrails"] == "failed"
        assert states["push_policy"] == "upstream_failed" and states["verify"] == "upstream_failed"
        assert _served_version(url) == "live-1"
    assert _try_numbers(dag_run)["check_guardrails"] == 1  # a violation is not retried
    report = next((tmp / "data" / "publish").rglob("guardrails.json")).read_text()
    assert '"change_vs_live"' in report and '"passed": false' in report


def test_a_policy_serving_rejects_fails_without_retry(env):
    tmp, live, monkeypatch = env
    name = f"m-{uuid.uuid4().hex[:6]}"
    app = create_app(
        load_settings(), policy_path=live, reader=NoFeatures(), admin_token="another-token-that-is-long-enough-0123"
    )
    with live_server(app) as url:
        monkeypatch.setenv("FREQCAP__PUBLISH__SERVING_URL", url)
        make_champion(load_settings(), name, policy_doc("proposed-4", ad_cap=5), tmp)
        dag_run, states = _run(name)
        assert dag_run.state == "failed" and states["push_policy"] == "failed", states
        assert _served_version(url) == "live-1"
    assert _try_numbers(dag_run)["push_policy"] == 1  # 401 is not worth retrying


def test_unreachable_serving_fails_after_retries(env):
    tmp, _, monkeypatch = env
    name = f"m-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("FREQCAP__PUBLISH__SERVING_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("FREQCAP__PUBLISH__TIMEOUT_SECONDS", "0.5")
    make_champion(load_settings(), name, policy_doc("proposed-5"), tmp)
    dag_run, states = _run(name)
    assert dag_run.state == "failed" and states["check_guardrails"] == "failed", states
    assert _try_numbers(dag_run)["check_guardrails"] == 1 + load_settings().orchestration.retries


def test_no_champion_or_mismatched_tag_fails_at_once(env):
    tmp, _, _ = env
    dag_run, states = _run(f"nobody-{uuid.uuid4().hex[:6]}")
    assert dag_run.state == "failed" and states["fetch_champion_policy"] == "failed"
    assert _try_numbers(dag_run)["fetch_champion_policy"] == 1
    name = f"m-{uuid.uuid4().hex[:6]}"
    make_champion(load_settings(), name, policy_doc("proposed-6"), tmp, tag="something-else")
    dag_run, states = _run(name)
    assert dag_run.state == "failed" and states["fetch_champion_policy"] == "failed"


def _try_numbers(dag_run) -> dict[str, int]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
        )
        return {ti.task_id: ti.try_number for ti in tis}


def test_a_run_after_serving_is_back_publishes(env):
    """The on-call fix for a run that failed after its retries: bring serving back, run the DAG again (same
    params): the champion's policy is published and verified."""
    tmp, live, monkeypatch = env
    name = f"m-{uuid.uuid4().hex[:6]}"
    port = free_port()
    monkeypatch.setenv("FREQCAP__PUBLISH__SERVING_URL", f"http://127.0.0.1:{port}")  # nobody listens yet
    monkeypatch.setenv("FREQCAP__PUBLISH__TIMEOUT_SECONDS", "0.5")
    make_champion(load_settings(), name, policy_doc("proposed-7", ad_cap=5), tmp)
    dag_run, states = _run(name)
    assert dag_run.state == "failed" and states["check_guardrails"] == "failed", states
    app = create_app(load_settings(), policy_path=live, reader=NoFeatures(), admin_token=TOKEN)
    with live_server(app, port=port) as url:
        assert _served_version(url) == "live-1"
        dag_run, states = _run(name)
        assert dag_run.state == "success", states
        assert _served_version(url) == "proposed-7"
