"""`freqcap stack`: the commands it runs, its secrets and its PID bookkeeping (no service started here)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from freqcap.cli.stack.components import airflow_environment, components, database_url, freqcap_environment
from freqcap.cli.stack.processes import ProcessTable, alive, start_time
from freqcap.cli.stack.services import SECRETS, load_secrets
from freqcap.config import load_settings

PRODUCTION = Path(__file__).resolve().parents[3] / "infra" / "production.yaml"


@pytest.fixture
def settings(tmp_path):
    base = load_settings(PRODUCTION, environ={})
    return base.model_copy(update={"stack": base.stack.model_copy(update={"dir": tmp_path / "stack"})})


def test_every_component_binds_the_stack_host_and_its_own_port(settings):
    stack = settings.stack
    argv = {c.name: c.argv for c in components(settings)}
    assert set(argv) == {
        "mlflow", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
        "airflow-celery-worker", "evidently-ui", "serving", "stream-worker",
    }  # fmt: skip
    for name, port in (("mlflow", stack.mlflow_port), ("evidently-ui", stack.evidently_port),
                       ("serving", stack.serving_port)):  # fmt: skip
        a = list(argv[name])
        assert a[a.index("--host") + 1] == stack.host and a[a.index("--port") + 1] == str(port), name
    assert list(argv["serving"])[-2:] == ["--workers", str(stack.serving_workers)]
    env = airflow_environment(settings)
    assert env["AIRFLOW__API__HOST"] == stack.host and env["AIRFLOW__API__PORT"] == str(stack.airflow_port)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == stack.broker


def test_each_component_has_its_own_database_on_the_one_server(settings):
    airflow = airflow_environment(settings)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    feast = freqcap_environment(settings)["FREQCAP__FEAST__REGISTRY"]
    mlflow = next(c for c in components(settings) if c.name == "mlflow").argv
    assert airflow == "postgresql+psycopg2://postgres@127.0.0.1:5432/freqcap_airflow"
    assert feast == "postgresql+psycopg://postgres@127.0.0.1:5432/freqcap_feast"
    assert database_url(settings.stack, "mlflow", "psycopg2") in mlflow


def test_the_derived_settings_load_and_point_at_the_stack(settings):
    derived = load_settings(PRODUCTION, environ=freqcap_environment(settings))
    s = settings.stack
    assert derived.tracking.tracking_uri == f"http://{s.host}:{s.mlflow_port}"
    assert derived.publish.serving_url == f"http://{s.host}:{s.serving_port}"
    assert derived.feast.online.kind == "redis" and derived.feast.online.redis_connection_string == s.redis
    assert derived.serving.policy_store == "redis" and derived.stream.enabled


def test_secrets_are_generated_once_private_and_never_in_a_command(settings):
    first = load_secrets(settings.stack, environ={})
    assert set(first) == set(SECRETS) and all(first.values())
    path = settings.stack.dir.resolve() / "secrets.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secrets(settings.stack, environ={}) == first  # reused, not regenerated
    from_env = load_secrets(settings.stack, environ={"FREQCAP__SERVING__ADMIN_TOKEN": "from-the-vault"})
    assert from_env["FREQCAP__SERVING__ADMIN_TOKEN"] == "from-the-vault"
    commands = " ".join(" ".join(c.argv) for c in components(settings))
    assert not any(value in commands for value in first.values())


def test_stop_signals_the_recorded_process_group_only(tmp_path):
    table = ProcessTable(tmp_path / "pids", tmp_path / "logs")
    pid = table.start("sleeper", ["sleep", "60"], dict(os.environ))
    assert table.pid("sleeper") == pid and alive(pid)
    assert table.stop("sleeper", timeout=5)
    assert not alive(pid) and table.pid("sleeper") is None
    assert (tmp_path / "logs" / "sleeper.log").exists()


def test_a_reused_pid_is_not_ours(tmp_path):
    other = subprocess.Popen(["sleep", "60"])
    try:
        table = ProcessTable(tmp_path / "pids", tmp_path / "logs")
        table.pid_dir.mkdir(parents=True)
        # The file names the PID of a running process, but with another start time: the kernel reused the PID.
        (table.pid_dir / "ghost.pid").write_text(f"{other.pid} {int(start_time(other.pid)) + 1}\n")
        assert table.pid("ghost") is None
        assert table.stop("ghost") is False
        assert other.poll() is None  # never signalled
    finally:
        other.kill()
        other.wait()


def test_every_service_with_authentication_gets_it_and_clients_sign_in(settings, monkeypatch):
    """MLflow runs its basic-auth app with a configuration of the stack's own; its admin user is created with the
    password every stack process signs in with; the Evidently UI gets its write secret; Airflow its admin password."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "EVIDENTLY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    from freqcap.cli.stack import environment
    from freqcap.cli.stack.components import mlflow_auth_config, write_mlflow_auth_config

    env = environment(settings, None)
    (mlflow,) = [c for c in components(settings) if c.name == "mlflow"]
    assert mlflow.argv[-2:] == ("--app-name", "basic-auth")
    assert mlflow.env["MLFLOW_AUTH_CONFIG_PATH"] == str(mlflow_auth_config(settings.stack))
    assert (
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] == env["MLFLOW_TRACKING_PASSWORD"]
        and len(env["MLFLOW_TRACKING_PASSWORD"]) >= 24
    )
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == env["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert env["EVIDENTLY_SECRET"] and env["FREQCAP_AIRFLOW_ADMIN_PASSWORD"] and env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert len(env["FREQCAP__SERVING__ADMIN_TOKEN"]) >= 24  # serving refuses a shorter one at start
    text = write_mlflow_auth_config(settings.stack).read_text()
    assert "default_permission = NO_PERMISSIONS" in text
    assert f"sqlite:///{settings.stack.dir.resolve() / 'mlflow' / 'basic_auth.db'}" in text
    assert env["MLFLOW_TRACKING_PASSWORD"] not in text  # the password is passed in the environment only
