"""Authentication of the services `freqcap stack up` starts, for real: MLflow's tracking server and the Evidently UI
run with the stack's own commands and environment (components(), environment()) on free ports, MLflow on a
throw-away PostgreSQL database. Without credentials MLflow answers 401 (its health check stays open), with the
stack's it answers 200 and an MLflow client signs in from the environment; Evidently refuses writes without its
secret and keeps reads open (what its UI offers). The full stack's tests (tests/stack) run the same components."""

from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import time
import uuid

import httpx
import pytest

from freqcap.cli import stack
from freqcap.cli.stack.components import components, write_mlflow_auth_config
from freqcap.cli.stack.services import create_databases, drop_databases, postgres_answers
from freqcap.config import load_settings
from tests.conftest import REPO_ROOT, _service_missing
from tests.integration.serving_support import free_port

pytestmark = pytest.mark.slow
PRODUCTION_YAML = REPO_ROOT / "infra" / "production.yaml"


@pytest.fixture
def stack_settings(tmp_path):
    base = load_settings(PRODUCTION_YAML, environ={})
    config = base.stack.model_copy(
        update={
            "dir": tmp_path / "stack",
            "database_prefix": f"freqcap_auth_{os.getpid()}_{secrets.token_hex(3)}",
            "mlflow_port": free_port(),
            "evidently_port": free_port(),
        }
    )
    if not postgres_answers(config):
        _service_missing("PostgreSQL", f"nothing answers at {config.postgres}")
    settings = base.model_copy(update={"stack": config})
    yield settings
    drop_databases(config)


def _start(settings, name: str, log_path):
    """One component of the stack, as `stack up` starts it (its own process group: stopped by that group's id)."""
    (component,) = [c for c in components(settings) if c.name == name]
    env = {**stack.environment(settings, PRODUCTION_YAML), **component.env}
    with log_path.open("w") as log:
        proc = subprocess.Popen(component.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return component, env, proc


def _wait_healthy(url: str, proc, log_path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not healthy within {timeout} s:\n{log_path.read_text()[-3000:]}")


def _stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group of the process this test started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_mlflow_refuses_requests_without_the_stacks_credentials(stack_settings, tmp_path, monkeypatch):
    create_databases(stack_settings.stack)
    write_mlflow_auth_config(stack_settings.stack)
    log_path = tmp_path / "mlflow.log"
    component, env, proc = _start(stack_settings, "mlflow", log_path)
    try:
        assert "--app-name" in component.argv and "basic-auth" in component.argv
        _wait_healthy(component.health_url, proc, log_path)
        url = component.url
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        user, password = env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]
        assert httpx.get(search, timeout=30).status_code == 401
        assert httpx.get(search, auth=(user, password + "x"), timeout=30).status_code == 401
        assert httpx.get(f"{url}/", timeout=30).status_code == 401  # the UI too
        assert httpx.get(search, auth=(user, password), timeout=30).status_code == 200

        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(MlflowException, match="401"):
            MlflowClient(url).create_experiment(f"anonymous-{uuid.uuid4().hex[:6]}")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = MlflowClient(url)
        run = client.create_run(client.create_experiment(f"signed-in-{uuid.uuid4().hex[:6]}"))
        client.log_metric(run.info.run_id, "m", 1.0)
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    finally:
        _stop(proc)
    secrets_file = stack_settings.stack.dir.resolve() / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600 and f"={password}\n" in secrets_file.read_text()
    assert password not in log_path.read_text()  # the server never logs the admin's password
    assert password not in " ".join(component.argv)  # nor is it on a command line (`ps` shows those)


def test_evidently_ui_refuses_writes_without_the_stacks_secret(stack_settings, tmp_path):
    (stack_settings.stack.dir / "data" / "monitoring" / "workspace").mkdir(parents=True)
    log_path = tmp_path / "evidently.log"
    component, env, proc = _start(stack_settings, "evidently-ui", log_path)
    try:
        _wait_healthy(component.health_url, proc, log_path, timeout=180)
        url = component.url
        assert httpx.get(f"{url}/api/projects", timeout=30).status_code == 200  # reads stay open
        some_project = f"{url}/api/projects/{uuid.uuid4()}"
        refused = httpx.delete(some_project, timeout=30)
        assert refused.status_code in (401, 403), refused.text
        wrong = httpx.delete(some_project, headers={"evidently-secret": "not-the-secret"}, timeout=30)
        assert wrong.status_code in (401, 403), wrong.text
        allowed = httpx.delete(some_project, headers={"evidently-secret": env["EVIDENTLY_SECRET"]}, timeout=30)
        assert allowed.status_code not in (401, 403), allowed.text
    finally:
        _stop(proc)
    assert env["EVIDENTLY_SECRET"] not in " ".join(component.argv)
