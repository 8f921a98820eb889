"""Start-up of the production-like stack: how long `freqcap stack up` takes until every component reports healthy,
cold (fresh databases and folder) and warm (databases migrated), beside a floor measured in the same run — Airflow's
api-server alone (schema migration + api-server answering its health endpoint), the slowest single component.

Each start uses free ports, a Redis of its own (started and stopped here), throw-away PostgreSQL databases (dropped
at the end) and a temporary folder; the machine's Redis and anything already running are never touched.

    .venv/bin/python benchmarks/bench_stack.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, median, table, write_result

from freqcap.cli import stack
from freqcap.cli.stack.components import airflow_environment, bin_dir
from freqcap.cli.stack.services import create_databases, drop_databases, load_secrets
from freqcap.config import load_settings

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = REPO / "infra" / "production.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder: Path, redis_port: int, prefix: str):
    base = load_settings(PRODUCTION, environ={})
    config = base.stack.model_copy(
        update={
            "dir": folder,
            "database_prefix": prefix,
            "redis": f"127.0.0.1:{redis_port}",
            "broker": f"redis://127.0.0.1:{redis_port}/1",
            **{k: _free_port() for k in ("airflow_port", "mlflow_port", "evidently_port", "serving_port")},
            "stream_metrics_port": _free_port(),
        }
    )
    return base.model_copy(update={"stack": config})


def _stack_up(settings) -> float:
    """Seconds from `up` to every component healthy; then `down`."""
    with stack.running(settings, PRODUCTION) as seconds:
        assert all(line.healthy for line in stack.status(settings))
    return seconds


def _airflow_alone(settings) -> float:
    """The floor: `airflow db migrate` + one api-server until /api/v2/monitor/health answers."""
    env = {**os.environ, **airflow_environment(settings), **load_secrets(settings.stack)}
    env["PATH"] = f"{bin_dir()}:{env['PATH']}"
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "passwords.json").write_text(json.dumps({"admin": "x"}))
    started = time.perf_counter()
    subprocess.run([str(bin_dir() / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [str(bin_dir() / "airflow"), "api-server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{settings.stack.airflow_port}/api/v2/monitor/health"
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                return time.perf_counter() - started
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("airflow api-server exited") from None
                time.sleep(0.2)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="cold starts of each (default 3)")
    args = parser.parse_args()
    redis_port = _free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    rows, raw = [], {"cold": [], "warm": [], "airflow_alone": []}
    try:
        for _ in range(args.runs):
            prefix = f"freqcap_bench_{secrets.token_hex(3)}"
            with tempfile.TemporaryDirectory(prefix="freqcap-stack-") as tmp:
                settings = _settings(Path(tmp) / "stack", redis_port, prefix)
                floor_settings = _settings(Path(tmp) / "floor", redis_port, prefix + "_floor")
                try:
                    create_databases(floor_settings.stack)
                    raw["airflow_alone"].append(_airflow_alone(floor_settings))
                    raw["cold"].append(_stack_up(settings))
                    raw["warm"].append(_stack_up(settings))  # same folder and databases: migrated already
                finally:
                    drop_databases(settings.stack)
                    drop_databases(floor_settings.stack)
            print(
                f"run: cold {raw['cold'][-1]:.1f} s, warm {raw['warm'][-1]:.1f} s, "
                f"airflow alone {raw['airflow_alone'][-1]:.1f} s",
                flush=True,
            )
    finally:
        redis.terminate()
        redis.wait(timeout=10)
    floor = median(raw["airflow_alone"])
    for name, label in (
        ("cold", "`stack up`, cold (new databases)"),
        ("warm", "`stack up`, warm (migrated)"),
        ("airflow_alone", "floor: Airflow api-server alone (migrate + health)"),
    ):
        values = raw[name]
        rows.append([label, f"{median(values):.1f}", f"{max(values):.1f}", f"{median(values) / floor:.2f}"])
    body = (
        "`.venv/bin/python benchmarks/bench_stack.py --runs "
        f"{args.runs}` — seconds until every component (PostgreSQL, Redis, broker, MLflow, Airflow api-server, "
        "scheduler, dag-processor, triggerer, Celery worker, Evidently UI, serving with 2 workers, stream worker) "
        "reports healthy in `freqcap stack status`, beside the slowest single component started alone in the same "
        "run.\n\n" + table(["start", "median s", "max s", "× floor"], rows)
    )
    write_result("stack", "Production-like stack start-up", body)
    (RESULTS / "stack.json").write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
