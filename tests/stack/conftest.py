"""The production-like stack for real (`freqcap stack up` as `make up` runs it) on free ports, a Redis of its own
and throw-away PostgreSQL databases; the four DAGs driven by the scheduler on Celery, once per test session.

Everything these tests assert is read back through Airflow's REST API, MLflow's API, serving's HTTP API and the
artifacts the runs wrote — never from logs.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from freqcap.cli import stack
from freqcap.cli.stack.services import drop_databases, postgres_answers
from freqcap.config import Settings, load_settings
from tests.conftest import REPO_ROOT, _service_missing
from tests.integration.serving_support import RedisServer, free_port

PRODUCTION_YAML = REPO_ROOT / "infra" / "production.yaml"
ARTIFACTS = REPO_ROOT / "test-artifacts"


@dataclass
class Stack:
    settings: Settings
    startup_seconds: float
    env: dict[str, str] = field(repr=False)  # holds the stack's secrets: never in a failure message

    @property
    def airflow_url(self) -> str:
        return f"http://{self.settings.stack.host}:{self.settings.stack.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.settings.stack.host}:{self.settings.stack.mlflow_port}"

    @property
    def evidently_url(self) -> str:
        return f"http://{self.settings.stack.host}:{self.settings.stack.evidently_port}"

    @property
    def serving_url(self) -> str:
        return f"http://{self.settings.stack.host}:{self.settings.stack.serving_port}"

    @property
    def admin_password(self) -> str:
        return self.env["FREQCAP_AIRFLOW_ADMIN_PASSWORD"]

    @property
    def mlflow_credentials(self) -> dict[str, str]:
        """The stack's MLflow user (basic auth), as Playwright's `http_credentials`."""
        return {"username": self.env["MLFLOW_TRACKING_USERNAME"], "password": self.env["MLFLOW_TRACKING_PASSWORD"]}

    @property
    def data_dir(self) -> Path:
        return Path(self.env["FREQCAP__DATA_DIR"])

    def job_settings(self) -> Settings:
        """The settings the stack's own processes run with (same file, same derived overrides)."""
        return load_settings(PRODUCTION_YAML, environ=self.env)


@pytest.fixture(scope="session")
def stack_up(tmp_path_factory: pytest.TempPathFactory):
    """`freqcap stack up` on free ports; `down` and the databases dropped at the end."""
    redis_server = RedisServer().start()
    base = load_settings(PRODUCTION_YAML)
    config = base.stack.model_copy(
        update={
            "dir": tmp_path_factory.mktemp("stack"),
            "database_prefix": f"freqcap_test_{os.getpid()}_{secrets.token_hex(3)}",
            "redis": redis_server.address,
            "broker": f"redis://{redis_server.address}/1",
            "airflow_port": free_port(),
            "mlflow_port": free_port(),
            "evidently_port": free_port(),
            "serving_port": free_port(),
            "stream_metrics_port": free_port(),
        }
    )
    settings = base.model_copy(update={"stack": config})
    if not postgres_answers(config):
        redis_server.stop()
        _service_missing("PostgreSQL", f"nothing answers at {config.postgres}")
    # MLflow runs its basic-auth app: this process's MLflow clients sign in as the stack's processes do.
    signed_out = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    try:
        with stack.running(settings, PRODUCTION_YAML) as seconds:
            env = stack.environment(settings, PRODUCTION_YAML)
            os.environ.update({k: env[k] for k in signed_out})
            yield Stack(settings, seconds, env)
    finally:
        for key, value in signed_out.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        drop_databases(config)
        redis_server.stop()


@pytest.fixture(scope="session")
def observed(stack_up):
    """The operator's session (tests/stack/pipeline.py), run once for every test of this folder."""
    from tests.stack.pipeline import run_pipeline

    seen = run_pipeline(stack_up)
    print("\nstack pipeline timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seen.timings.items()))
    return seen


@pytest.fixture(scope="session")
def screenshots() -> Path:
    out = ARTIFACTS / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out
