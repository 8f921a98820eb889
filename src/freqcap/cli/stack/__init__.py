"""`freqcap stack up | status | down`: the production-like stack on one machine (`make up`, `make status`,
`make down`).

Airflow 3 (api-server, scheduler, dag-processor, triggerer, a Celery worker; metadata on PostgreSQL, broker on
Redis or RabbitMQ), the MLflow tracking server on PostgreSQL serving its artifacts, Feast with the SQL registry on
PostgreSQL and the Redis online store, the Evidently UI, serving (several workers) and the stream worker. Where each
lives is the `stack` settings section (`infra/production.yaml`); logs go to `<dir>/logs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from freqcap.config import Settings, StackConfig
from freqcap.errors import FreqcapError

from .components import (
    Component,
    airflow_environment,
    airflow_home,
    bin_dir,
    components,
    data_dir,
    freqcap_environment,
    log_dir,
    write_mlflow_auth_config,
)
from .processes import ProcessTable
from .services import (
    create_databases,
    credentials,
    ensure_postgres,
    ensure_redis,
    load_secrets,
    postgres_answers,
    redis_answers,
    stop_postgres_if_started,
)

__all__ = ["StackStatus", "components", "down", "environment", "running", "status", "up"]


def _table(stack: StackConfig) -> ProcessTable:
    return ProcessTable(stack.dir.resolve() / "pids", log_dir(stack))


def environment(settings: Settings, config_file: str | Path | None) -> dict[str, str]:
    """The environment of every process of the stack: this one's, plus the derived settings and the secrets."""
    env = dict(os.environ)
    env.update(freqcap_environment(settings))
    env.update(airflow_environment(settings))
    secret = load_secrets(settings.stack)
    env.update(secret)
    env.update(credentials(secret))
    env["PATH"] = f"{bin_dir()}:{env.get('PATH', '')}"  # Airflow 3 hangs when its own executables are not on PATH
    if config_file is not None:
        env["FREQCAP_CONFIG"] = str(Path(config_file).resolve())
    return env


@dataclass(frozen=True)
class StackStatus:
    """One line of `freqcap stack status`."""

    name: str
    pid: int | None
    url: str | None
    health: str  # healthy | starting | down | <reason>

    @property
    def healthy(self) -> bool:
        return self.health == "healthy"


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, b""


def _airflow_parts(settings: Settings) -> dict[str, str]:
    """Airflow's own view of its parts (`/api/v2/monitor/health`): metadatabase, scheduler, triggerer,
    dag_processor -> healthy | unhealthy; empty while the api-server does not answer."""
    stack = settings.stack
    code, body = _get(f"http://{stack.host}:{stack.airflow_port}/api/v2/monitor/health")
    if code != 200:
        return {}
    return {part: (info or {}).get("status") or "unknown" for part, info in json.loads(body).items()}


def _celery_ready(stack: StackConfig) -> bool:
    """The worker has connected to the broker and consumes (Celery logs `celery@<host> ready.` once)."""
    logfile = log_dir(stack) / "airflow-celery-worker.log"
    return logfile.exists() and b" ready." in logfile.read_bytes()


def status(settings: Settings) -> list[StackStatus]:
    """Every component's PID, URL and health, and the services under them."""
    stack = settings.stack
    table = _table(stack)
    out = [
        StackStatus("postgresql", None, stack.postgres, "healthy" if postgres_answers(stack) else "down"),
        StackStatus("redis", table.pid("redis"), stack.redis, "healthy" if redis_answers(stack.redis) else "down"),
    ]
    if stack.broker.startswith("redis"):
        out.append(StackStatus("broker", None, stack.broker, "healthy" if redis_answers(stack.broker) else "down"))
    parts = _airflow_parts(settings)
    for c in components(settings):
        pid = table.pid(c.name)
        out.append(StackStatus(c.name, pid, c.url, _health(c, pid, parts, stack)))
    return out


# Components whose health Airflow's api-server reports (its `/api/v2/monitor/health` keys).
_AIRFLOW_PART = {
    "airflow-scheduler": "scheduler",
    "airflow-triggerer": "triggerer",
    "airflow-dag-processor": "dag_processor",
}


def _health(c: Component, pid: int | None, airflow_parts: dict[str, str], stack: StackConfig) -> str:
    if pid is None:
        return "down"
    if (part := _AIRFLOW_PART.get(c.name)) is not None:
        return airflow_parts.get(part, "starting")
    if c.name == "airflow-celery-worker":
        return "healthy" if _celery_ready(stack) else "starting"
    if c.name == "airflow-api-server":
        return "healthy" if airflow_parts.get("metadatabase") == "healthy" else "starting"
    code, _ = _get(c.health_url) if c.health_url else (200, b"")
    return "healthy" if 200 <= code < 300 else "starting"


def _prepare(settings: Settings, env: dict[str, str], table: ProcessTable) -> dict[str, str]:
    """Services, databases, folders, Airflow's user and metadata schema; returns what was reused or started."""
    stack = settings.stack
    report = {"postgresql": ensure_postgres(stack, stack.dir.resolve() / "postgres.started")}
    report["redis"] = ensure_redis(stack.redis, table, "redis")
    if stack.broker.startswith("redis") and not redis_answers(stack.broker):
        raise FreqcapError(f"the Celery broker {stack.broker} does not answer")
    create_databases(stack)
    for folder in (data_dir(stack) / "monitoring" / "workspace", airflow_home(stack), log_dir(stack) / "airflow"):
        folder.mkdir(parents=True, exist_ok=True)
    passwords = airflow_home(stack) / "passwords.json"
    passwords.write_text(json.dumps({"admin": env["FREQCAP_AIRFLOW_ADMIN_PASSWORD"]}))
    passwords.chmod(0o600)
    write_mlflow_auth_config(stack)
    with (log_dir(stack) / "airflow-db-migrate.log").open("ab") as out:
        done = subprocess.run(
            [str(bin_dir() / "airflow"), "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise FreqcapError(f"airflow db migrate failed; see {log_dir(stack) / 'airflow-db-migrate.log'}")
    return report


def up(settings: Settings, config_file: str | Path | None = None, echo=print) -> float:
    """Start every component that is not running yet and wait until all are healthy; returns the seconds taken."""
    started_at = time.monotonic()
    stack = settings.stack
    env = environment(settings, config_file)
    table = _table(stack)
    report = _prepare(settings, env, table)
    echo("services: " + ", ".join(f"{k} {v}" for k, v in report.items()))
    for c in components(settings):
        if table.pid(c.name) is None:
            table.start(c.name, c.argv, {**env, **c.env})
    deadline = started_at + stack.startup_timeout
    while True:
        lines = status(settings)
        if all(line.healthy for line in lines):
            break
        if dead := [c.name for c in components(settings) if table.pid(c.name) is None]:
            raise FreqcapError(f"{', '.join(dead)} exited; see {log_dir(stack)}/<name>.log")
        if time.monotonic() > deadline:
            waiting = ", ".join(f"{line.name} ({line.health})" for line in lines if not line.healthy)
            raise FreqcapError(f"not healthy within {stack.startup_timeout:.0f}s: {waiting}; logs in {log_dir(stack)}")
        time.sleep(1.0)
    return time.monotonic() - started_at


def down(settings: Settings) -> list[str]:
    """Stop what `up` started (the components, and Redis or PostgreSQL if `up` had to start them); the names."""
    stack = settings.stack
    table = _table(stack)
    stopped = [c.name for c in reversed(components(settings)) if table.stop(c.name)]
    if table.stop("redis"):
        stopped.append("redis")
    if stop_postgres_if_started(stack.dir.resolve() / "postgres.started"):
        stopped.append("postgresql")
    return stopped


@contextlib.contextmanager
def running(settings: Settings, config_file: str | Path | None = None) -> Iterator[float]:
    """The stack for the length of a `with` block (tests): yields the start-up time, stops it all on exit."""
    try:
        yield up(settings, config_file, echo=lambda _msg: None)
    finally:
        down(settings)


def format_status(lines: list[StackStatus]) -> str:
    """The `status` table: component, health, PID, URL."""
    width = max(len(line.name) for line in lines)
    rows = [f"{'component':<{width}}  {'health':<9}  {'pid':>7}  url"]
    rows += [f"{s.name:<{width}}  {s.health:<9}  {s.pid or '-':>7}  {s.url or ''}" for s in lines]
    return "\n".join(rows)
