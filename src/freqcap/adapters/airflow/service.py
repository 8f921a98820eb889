"""A real, scheduler-driven local Airflow: api-server + scheduler + dag-processor with the LocalExecutor.

Used by the scheduler-driven integration test: DAG runs are triggered over the REST
API and executed by the scheduler, exactly as in production (only the metadata DB is SQLite and it all binds to
loopback). Secrets are generated per run; nothing is written outside `home`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freqcap.adapters.airflow.local import DAGS_FOLDER, airflow_environment

log = logging.getLogger(__name__)
_COMPONENTS = ("api-server", "scheduler", "dag-processor")


def _request(method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 10) -> Any:
    """One REST call; idempotent ones (GET, PATCH) are retried on a 5xx: with the SQLite metadata DB the api-server
    answers 500 when the scheduler or dag-processor holds the write lock (seen on a loaded 2-core box)."""
    attempts = 5 if method in ("GET", "PATCH") else 1
    for attempt in range(1, attempts + 1):
        try:
            return _request_once(method, url, body, token, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == attempts:
                raise
            log.warning("%s %s answered %d (attempt %d/%d); retrying", method, url, exc.code, attempt, attempts)
            time.sleep(0.5 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _request_once(method: str, url: str, body: dict | None, token: str | None, timeout: float) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@dataclass
class AirflowClient:
    """Minimal REST client for the local Airflow (v2 API)."""

    base_url: str
    token: str

    def unpause(self, dag_id: str) -> None:
        _request("PATCH", f"{self.base_url}/api/v2/dags/{dag_id}", {"is_paused": False}, self.token)

    def trigger(self, dag_id: str, conf: dict[str, Any], logical_date: str | None = None) -> str:
        body = {"conf": conf, "logical_date": logical_date}
        return _request("POST", f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns", body, self.token)["dag_run_id"]

    def state(self, dag_id: str, run_id: str) -> str:
        return _request("GET", f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", token=self.token)["state"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        out = _request("GET", f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", token=self.token)
        return {ti["task_id"]: ti["state"] for ti in out["task_instances"]}

    def wait(self, dag_id: str, run_id: str, timeout: float = 600, poll: float = 2.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(poll)
        raise TimeoutError(f"{dag_id} run {run_id} still running after {timeout}s")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Until the dag-processor has parsed `dag_id` into the metadata DB."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.HTTPError):
                _request("GET", f"{self.base_url}/api/v2/dags/{dag_id}", token=self.token)
                return
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout}s")


def _component_env(home: Path, port: int, dags_folder: Path, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(airflow_environment(home, dags_folder))
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            # `airflow` subprocesses must find the venv's executables (without them on PATH Airflow 3.3 hangs).
            "PATH": f"{bin_dir}:{env.get('PATH', '')}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "freqcap:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(64),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def local_airflow(
    home: Path,
    port: int = 28793,
    dags_folder: Path = DAGS_FOLDER,
    extra_env: dict[str, str] | None = None,
    startup_timeout: float = 180,
) -> Iterator[AirflowClient]:
    """Start api-server, scheduler and dag-processor; yield a logged-in client; stop them all on exit."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    (home / "passwords.json").write_text(json.dumps({"freqcap": password}))
    env = _component_env(home, port, dags_folder, extra_env or {})
    airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    procs: list[subprocess.Popen] = []
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    try:
        for component in _COMPONENTS:
            out = (logs / f"{component}.log").open("w")
            procs.append(
                subprocess.Popen(
                    [airflow, component],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + startup_timeout
        token = None
        while token is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Airflow did not become healthy in {startup_timeout}s; logs in {logs}")
            for p, name in zip(procs, _COMPONENTS, strict=True):
                if p.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {p.returncode}; see {logs / (name + '.log')}")
            try:
                token = _request("POST", f"{base}/auth/token", {"username": "freqcap", "password": password})[
                    "access_token"
                ]
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
                time.sleep(1)
        yield AirflowClient(base, token)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
