"""The MLflow tracking server goes down: a real `mlflow server` (SQLite backend, its own port) holds a champion
whose policy serving runs; the server is then stopped (by the process group this test started), so its port
refuses connections. Asserted:
- the training job that registers and gates a model (`register_and_gate`) fails with an error naming the tracking
  server's URL;
- the publish DAG's `fetch_champion_policy` fails the same way and is retried (an infrastructure error, unlike a
  refused policy), and the run fails;
- serving keeps answering real decisions with its policy throughout;
- the champion alias and its `policy_version` tag are unchanged (read from the server's own backend database).
MLflow's HTTP retries are turned off (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0) so that each attempt fails at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from freqcap.api.app import create_app
from freqcap.config import load_settings
from tests.dags.test_publish_dag import NOW, TOKEN, NoFeatures, _run, _try_numbers, make_champion, policy_doc
from tests.servers import free_port, live_server

pytestmark = pytest.mark.slow


class MlflowServer:
    """`mlflow server` on a free loopback port over a SQLite file, in a process group of its own."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.db = root / "mlflow.db"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        cmd = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.db}",
            "--default-artifact-root", (self.root / "artifacts").as_uri(),
            "--workers", "1",
        ]  # fmt: skip
        log = (self.root / "mlflow-server.log").open("w")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, (self.root / "mlflow-server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start within 90 s"
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM to the server's own process group (uvicorn and its job runner), SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        deadline = time.monotonic() + 10
        while True:  # the port refuses connections once uvicorn is gone
            try:
                httpx.get(f"{self.url}/health", timeout=0.5)
            except httpx.ConnectError:
                return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the tracking server still answers after stop"
            time.sleep(0.1)


def test_tracking_server_down_fails_training_and_publishing_naming_it_and_serving_keeps_its_policy(
    tmp_path, monkeypatch, airflow_db
):
    from mlflow import MlflowClient

    from freqcap.jobs.training import register_and_gate_job

    server = MlflowServer(tmp_path).start()
    try:
        monkeypatch.setenv("FREQCAP__DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("FREQCAP__SERVING__ADMIN_TOKEN", TOKEN)
        monkeypatch.setenv("FREQCAP__TRACKING__TRACKING_URI", server.url)
        # This serving shares its process with the publish DAG's run: on a busy box its event loop can lag past
        # the default 5 ms admission and shed the decision below as `overload` (seen once, with benchmarks running
        # beside the suite). Overload has tests of its own; here the policy is what is checked.
        monkeypatch.setenv("FREQCAP__SERVING__ADMISSION_MS", "2000")
        name = f"m-{uuid.uuid4().hex[:6]}"
        champion = make_champion(load_settings(), name, policy_doc("live-1"), tmp_path)
        live = tmp_path / "live.yaml"
        live.write_text(yaml.safe_dump(policy_doc("live-1")))
        app = create_app(load_settings(), policy_path=live, reader=NoFeatures(), admin_token=TOKEN)
        request = {
            "user_id": "x",
            "context": {"format": "feed", "ts": NOW.isoformat()},
            "candidates": [{"ad_id": "a", "campaign_id": "c", "advertiser_id": "v"}],
        }
        with live_server(app) as url:
            monkeypatch.setenv("FREQCAP__PUBLISH__SERVING_URL", url)
            server.stop()
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
            settings = load_settings()

            # Training: registering the trained run's model fails, naming the tracking server.
            trained = {"run_id": "0" * 32, "model_uri": f"runs:/{'0' * 32}/model", "registered_model": name}
            started = time.monotonic()
            with pytest.raises(Exception) as failed:
                register_and_gate_job(trained, settings)
            assert f"127.0.0.1:{server.port}" in str(failed.value), str(failed.value)[:500]
            assert time.monotonic() - started < 15
            print(f"\nregister_and_gate failed after {time.monotonic() - started:.1f} s: {str(failed.value)[:160]}")

            # Publishing: fetch_champion_policy fails, is retried, and the run fails before any push.
            started = time.monotonic()
            dag_run, states = _run(name)
            print(f"publish DAG failed after {time.monotonic() - started:.1f} s")
            assert dag_run.state == "failed", states
            assert states["fetch_champion_policy"] == "failed", states
            assert states["push_policy"] == "upstream_failed", states
            assert _try_numbers(dag_run)["fetch_champion_policy"] == 1 + settings.orchestration.retries

            # Serving kept its policy and answers real decisions.
            assert httpx.get(url + "/v1/policy").json()["version"] == "live-1"
            assert httpx.get(url + "/readyz").status_code == 200
            got = httpx.post(url + "/v1/decide", json=request).json()
            assert got["degraded"] is False and got["policy_version"] == "live-1", got

        # The champion is what it was: read from the stopped server's backend database.
        backend = MlflowClient(tracking_uri=f"sqlite:///{server.db}", registry_uri=f"sqlite:///{server.db}")
        version = backend.get_model_version_by_alias(name, "champion")
        assert str(version.version) == str(champion) and version.tags["policy_version"] == "live-1"
        assert len(backend.search_model_versions(f"name = '{name}'")) == 1  # nothing was registered
    finally:
        server.stop()
