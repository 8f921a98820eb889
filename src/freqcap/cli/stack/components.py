"""What the production-like stack runs: one `Component` per long-running process, and the environment they share.

Everything is derived from the `stack` settings section (`StackConfig`): ports, the PostgreSQL server and the
database of each component, Redis, the Celery broker. The Dockerfile and the Kubernetes manifests under `infra/`
run the same commands (a test compares them with `components()`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from freqcap.config import Settings, StackConfig
from freqcap.resources import dags_folder

# The Airflow processes of an Airflow 3 deployment with the CeleryExecutor.
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


@dataclass(frozen=True)
class Component:
    """One long-running process: its command, the URL a person opens and the URL that tells whether it is healthy."""

    name: str
    argv: tuple[str, ...]
    url: str | None = None
    health_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def bin_dir() -> Path:
    """The directory of this interpreter's console scripts (`airflow`, `mlflow`, `evidently`, `freqcap`)."""
    return Path(sys.executable).parent


def database_url(stack: StackConfig, name: str, driver: str = "") -> str:
    """`postgresql[+driver]://…/<prefix>_<name>`: every component keeps its own database on the one server."""
    scheme, rest = stack.postgres.split("://", 1)
    if driver:
        scheme = f"{scheme}+{driver}"
    return f"{scheme}://{rest.rstrip('/')}/{stack.database_prefix}_{name}"


DATABASES = ("airflow", "mlflow", "feast")


def data_dir(stack: StackConfig) -> Path:
    return (stack.dir / "data").resolve()


def log_dir(stack: StackConfig) -> Path:
    return (stack.dir / "logs").resolve()


def airflow_home(stack: StackConfig) -> Path:
    return (stack.dir / "airflow").resolve()


def mlflow_auth_config(stack: StackConfig) -> Path:
    """The configuration file of MLflow's basic-auth app (`MLFLOW_AUTH_CONFIG_PATH`): where its users live."""
    return (stack.dir / "mlflow" / "basic_auth.ini").resolve()


def write_mlflow_auth_config(stack: StackConfig) -> Path:
    """Write `mlflow_auth_config`: users in a SQLite file beside it (not the tracking database: both keep an
    `alembic_version` table), no permission for a user nobody granted one. No secret in it: the admin's
    password comes from the environment (`MLFLOW_AUTH_ADMIN_PASSWORD`), read at the first start only."""
    path = mlflow_auth_config(stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{path.parent / 'basic_auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )
    return path


def freqcap_environment(settings: Settings) -> dict[str, str]:
    """`FREQCAP__…` overrides that point every freqcap process (serving, stream, the DAGs' tasks on the Celery
    worker) at the stack's services."""
    stack = settings.stack
    h = stack.host
    return {
        "FREQCAP__DATA_DIR": str(data_dir(stack)),
        "FREQCAP__TRACKING__TRACKING_URI": f"http://{h}:{stack.mlflow_port}",
        "FREQCAP__FEAST__REGISTRY": database_url(stack, "feast", "psycopg"),
        "FREQCAP__FEAST__ONLINE__KIND": "redis",
        "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": stack.redis,
        "FREQCAP__STREAM__REDIS_URL": stack.redis,
        "FREQCAP__SERVING__HOST": h,
        "FREQCAP__SERVING__PORT": str(stack.serving_port),
        # The live policy every serving worker reads (and a restarted one starts on), in the stack's Redis.
        "FREQCAP__SERVING__POLICY_STORE": "redis",
        "FREQCAP__SERVING__POLICY_REDIS_URL": stack.redis,
        "FREQCAP__PUBLISH__SERVING_URL": f"http://{h}:{stack.serving_port}",
        "FREQCAP__MONITORING__WORKSPACE_DIR": str(data_dir(stack) / "monitoring" / "workspace"),
    }


def airflow_environment(settings: Settings) -> dict[str, str]:
    """Airflow's configuration for every Airflow process (they must all agree, secrets included)."""
    stack = settings.stack
    home = airflow_home(stack)
    h = stack.host
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # A new DAG waits for an operator (or a deployment script) to unpause it: no surprise runs on first parse.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        # 2 cores: a few task slots, not Airflow's default 32.
        "AIRFLOW__CORE__PARALLELISM": str(max(4, stack.celery_concurrency * 2)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(stack, "airflow", "psycopg2"),
        # Airflow derives an asyncpg URL otherwise (not installed); psycopg 3 speaks async.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": database_url(stack, "airflow", "psycopg"),
        "AIRFLOW__CELERY__BROKER_URL": stack.broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url(stack, "airflow", "psycopg2"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(stack.celery_concurrency),
        "AIRFLOW__API__HOST": h,
        "AIRFLOW__API__PORT": str(stack.airflow_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://{h}:{stack.airflow_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{h}:{stack.airflow_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(log_dir(stack) / "airflow"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(
            log_dir(stack) / "airflow" / "dag_processor"
        ),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
    }


def components(settings: Settings) -> list[Component]:
    """Every long-running process of the stack, in start order."""
    stack = settings.stack
    h = stack.host
    b = bin_dir()
    skip_logs = () if stack.log_servers else ("--skip-serve-logs",)
    airflow_url = f"http://{h}:{stack.airflow_port}"
    workspace = data_dir(stack) / "monitoring" / "workspace"
    out = [
        Component(
            "mlflow",
            (
                str(b / "mlflow"),
                "server",
                "--backend-store-uri",
                database_url(stack, "mlflow", "psycopg2"),
                "--artifacts-destination",
                (data_dir(stack) / "mlflow-artifacts").as_uri(),
                "--serve-artifacts",
                "--host",
                h,
                "--port",
                str(stack.mlflow_port),
                "--workers",
                "1",
                # MLflow's basic-auth app: every API call and page needs a user (`/health` stays open).
                "--app-name",
                "basic-auth",
            ),
            url=f"http://{h}:{stack.mlflow_port}",
            health_url=f"http://{h}:{stack.mlflow_port}/health",
            env={"MLFLOW_AUTH_CONFIG_PATH": str(mlflow_auth_config(stack))},
        ),
        Component(
            "airflow-api-server",
            (str(b / "airflow"), "api-server"),
            url=airflow_url,
            health_url=f"{airflow_url}/api/v2/monitor/health",
        ),
        Component("airflow-scheduler", (str(b / "airflow"), "scheduler", *skip_logs)),
        Component("airflow-dag-processor", (str(b / "airflow"), "dag-processor")),
        Component("airflow-triggerer", (str(b / "airflow"), "triggerer", *skip_logs)),
        Component(
            "airflow-celery-worker",
            (str(b / "airflow"), "celery", "worker", "--concurrency", str(stack.celery_concurrency), *skip_logs),
        ),
        Component(
            "evidently-ui",
            (
                str(b / "evidently"),
                "ui",
                "--workspace",
                str(workspace),
                "--host",
                h,
                "--port",
                str(stack.evidently_port),
            ),
            url=f"http://{h}:{stack.evidently_port}",
            health_url=f"http://{h}:{stack.evidently_port}/api/version",
        ),
        Component(
            "serving",
            (
                str(b / "freqcap"),
                "serve",
                "--host",
                h,
                "--port",
                str(stack.serving_port),
                "--workers",
                str(stack.serving_workers),
            ),
            url=f"http://{h}:{stack.serving_port}",
            health_url=f"http://{h}:{stack.serving_port}/healthz",
        ),
        Component(
            "stream-worker",
            (str(b / "freqcap"), "stream", "--metrics-host", h, "--metrics-port", str(stack.stream_metrics_port)),
            url=f"http://{h}:{stack.stream_metrics_port}/metrics",
            health_url=f"http://{h}:{stack.stream_metrics_port}/metrics",
        ),
    ]
    return out
