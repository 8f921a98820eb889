"""The stream worker lagging or dead, as on-call sees it: the worker's `/metrics`, the monitoring run's
`stream_lag` page, and the worker process exiting when its Redis dies.

The seam's counts, serving's `stream_stale` fallback, kill -9 and restart, and the reclaim of a dead consumer's
entries are in test_stream.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from freqcap.adapters.feast.store import open_store
from freqcap.adapters.stream.produce import produce
from freqcap.api.live import free_port
from freqcap.config import load_settings
from freqcap.domain.stream.messages import event_fields
from freqcap.jobs.monitoring import run_monitoring
from freqcap.jobs.stream import metrics_server, redis_worker
from freqcap.resources import alerts_path
from tests.integration.serving_support import RedisServer
from tests.integration.stream_support import cleanup_redis, heartbeating, stream_settings
from tests.integration.test_feast_online import T1, random_events

pytestmark = pytest.mark.redis

MAX_LAG = 1.0  # seconds: the test's stream.max_lag


def _gauge(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(f"{name} "))
    return float(line.split()[-1])


def test_a_stopped_worker_turns_stale_on_its_metrics_and_pages_stream_lag(tmp_path, redis_connection_string):
    """The shipped `stream_lag` rule pages above 900 s of lag; a test cannot wait 15 minutes, so it runs the
    shipped alerts file with that one threshold lowered to 1 s (labelled here: the only change)."""
    shipped = yaml.safe_load(alerts_path().read_text())
    rule = next(r for r in shipped["rules"] if r["name"] == "stream_lag")
    assert rule["above"] == 900 and rule["severity"] == "page" and rule["metric"] == "stream_lag_seconds"
    rule["above"] = MAX_LAG
    alerts = tmp_path / "alerts.yaml"
    alerts.write_text(yaml.safe_dump(shipped))
    _, env = stream_settings(tmp_path, redis_connection_string, max_lag=f"{MAX_LAG:g}s", status_refresh="0.1s")
    settings = load_settings(environ={**env, "FREQCAP__MONITORING__ALERTS_PATH": str(alerts)})
    host, port = redis_connection_string.split(":")
    client = redis.Redis(host=host, port=int(port))
    store = open_store(settings, tmp_path / "feast")
    try:
        from freqcap.adapters.feast.store import apply_definitions

        apply_definitions(store, settings, tmp_path / "feast")
        rows = random_events(4, 200, T1, T1 + timedelta(hours=1)).to_pylist()
        rows.sort(key=lambda r: r["event_ts"])
        produce(client, settings.stream.stream_key, [event_fields(r) for r in rows], coverage_start=T1)
        with redis_worker(settings, store, consumer="c1") as worker:
            worker.run(until_caught_up=True)
            # live until the fresh reading is in (starting the metrics server can take longer than the 1 s max_lag)
            with (
                heartbeating(worker) as stop_worker,
                metrics_server(worker, settings, free_port("127.0.0.1")) as metrics_port,
            ):
                url = f"http://127.0.0.1:{metrics_port}/metrics"
                deadline = time.monotonic() + 30
                while _gauge(fresh := httpx.get(url).text, "freqcap_stream_stale") != 0:
                    assert time.monotonic() < deadline, "never fresh with a live worker"
                    time.sleep(0.05)
                assert _gauge(fresh, "freqcap_stream_lag_seconds") < MAX_LAG
                stop_worker()
                time.sleep(MAX_LAG + 0.5)  # the worker has stopped consuming: nothing refreshes fresh_at
                stale = httpx.get(url).text
        assert _gauge(stale, "freqcap_stream_stale") == 1
        assert _gauge(stale, "freqcap_stream_lag_seconds") > MAX_LAG

        out = run_monitoring(settings, datetime.now(UTC).replace(microsecond=0), validate=False)
        metrics = json.loads(Path(out["collected"]["metrics_path"]).read_text())
        assert metrics["stream"]["stale"] is True and metrics["stream"]["lag_seconds"] > MAX_LAG
        fired = [(i["rule"], i["severity"]) for i in out["alarms"]["fired"]]
        assert ("stream_lag", "page") in fired, out["alarms"]
    finally:
        store.teardown()
        cleanup_redis(client, settings)


@pytest.mark.slow
def test_the_worker_exits_when_its_redis_dies(tmp_path):
    """`freqcap stream` against a private redis-server that is SIGKILLed: the worker does not hang or spin, it
    exits non-zero naming the connection error (restart it once Redis is back)."""
    with RedisServer() as server:
        _, env = stream_settings(tmp_path, server.address)
        metrics_port = free_port("127.0.0.1")
        cmd = [sys.executable, "-m", "freqcap.cli", "stream", "--consumer", "w1", "--metrics-port", str(metrics_port)]
        proc = subprocess.Popen(
            cmd, env=dict(os.environ, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 90
            while True:  # up: its /metrics answers
                assert proc.poll() is None, proc.stderr.read()[-2000:]
                try:
                    if httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the worker did not start within 90 s"
                time.sleep(0.2)
            server.kill()
            killed = time.monotonic()
            _, stderr = proc.communicate(timeout=30)
            print(f"\nworker exited {time.monotonic() - killed:.1f} s after the kill, code {proc.returncode}")
            assert proc.returncode != 0
            assert "ConnectionError" in stderr, stderr[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
