"""Serving overloaded: more concurrent decisions than lookup threads while the online store is slow.

A private redis-server (DEBUG SLEEP enabled) holds features materialized through Feast; the decision API runs for
real (uvicorn on loopback) with two lookup threads and a 50 ms budget. While Redis is blocked by `DEBUG SLEEP`
(a slow store), 24 clients send decisions at once: far more than the pool can look up. What really happens today
(there is no admission control yet; an explicit `overload` reason is planned):
- every request answers 200 within the budget plus a margin: none waits in the lookup queue beyond the budget;
- every one of them is `degraded: true` with reason `timeout` (lookups that waited in the queue count against the
  budget like slow ones), every candidate eligible at penalty 1.0;
- `/metrics` counts them under `freqcap_decide_fail_open_total{reason="timeout"}`;
- once Redis answers again the service answers real decisions again, without a restart.
"""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import timedelta

import httpx
import pytest
import redis

from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.store import open_store
from freqcap.api.app import create_app
from tests.integration.serving_support import RedisServer, wait_for_redis
from tests.integration.test_feast_online import T1, _run_snapshot, _settings, random_events
from tests.integration.test_serving import TOKEN, body, write_policy
from tests.integration.test_serving_redis_kill import _fail_open_counts
from tests.servers import live_server

pytestmark = pytest.mark.redis

BUDGET_MS = 50.0
WORKERS = 2
CLIENTS = 24
SLEEP_S = 2.0
# Client-side margin over the budget: HTTP over loopback on a busy 2-core box, 24 requests arriving at once.
MARGIN_MS = 400.0


class DebugRedisServer(RedisServer):
    """A private redis-server that accepts DEBUG (off by default since Redis 7): `DEBUG SLEEP` blocks it."""

    def start(self) -> DebugRedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--enable-debug-command", "yes"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_redis(self.port)
        return self


def _timeouts(client: httpx.Client) -> int:
    return _fail_open_counts(client.get("/metrics").text).get("timeout", 0)


def test_more_concurrent_requests_than_lookup_threads_on_a_slow_store_fail_open_with_timeout(tmp_path):
    with DebugRedisServer() as server:
        settings = _settings(tmp_path, "redis", server.address)
        events_dir = tmp_path / "events"
        write_events(random_events(5, 300, T1 - timedelta(days=3), T1), events_dir / "part-0.parquet")
        repo = tmp_path / "feast"
        _run_snapshot(settings, tmp_path, events_dir, T1, open_store(settings, repo), repo)
        app = create_app(
            settings,
            policy_path=write_policy(tmp_path),
            repo_dir=repo,
            admin_token=TOKEN,
            budget_ms=BUDGET_MS,
            lookup_workers=WORKERS,
        )
        with live_server(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            warm = [client.post("/v1/decide", json=body()).json() for _ in range(5)]
            assert any(not w["degraded"] for w in warm), [w["degraded_reason"] for w in warm]
            timeouts_before = _timeouts(client)

            blocker = redis.Redis(port=server.port, socket_timeout=SLEEP_S + 5)
            sleeping = threading.Thread(target=blocker.execute_command, args=("DEBUG", "SLEEP", SLEEP_S))
            sleeping.start()
            time.sleep(0.1)  # Redis is now blocked for the rest of SLEEP_S

            results: list[tuple[float, int, dict]] = []
            lock = threading.Lock()
            gate = threading.Barrier(CLIENTS)

            def one(i: int) -> None:
                with httpx.Client(base_url=url, timeout=10) as own:
                    own.get("/healthz")  # connect before the barrier: the burst is the requests, not handshakes
                    gate.wait()
                    started = time.perf_counter()
                    resp = own.post("/v1/decide", json=body(f"u{i % 15}"))
                    elapsed = time.perf_counter() - started
                    with lock:
                        results.append((elapsed, resp.status_code, resp.json()))

            threads = [threading.Thread(target=one, args=(i,)) for i in range(CLIENTS)]
            burst_started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            burst_seconds = time.monotonic() - burst_started
            assert burst_seconds < SLEEP_S - 0.1, "the burst must happen while Redis sleeps"
            assert len(results) == CLIENTS
            for elapsed, status, got in results:
                assert status == 200, got
                assert got["degraded"] is True and got["degraded_reason"] == "timeout", got
                assert all(d["eligible"] and d["penalty"] == 1.0 for d in got["decisions"])
                assert elapsed * 1000 < BUDGET_MS + MARGIN_MS, f"{elapsed * 1000:.0f} ms"
            slowest = max(r[0] for r in results) * 1000
            print(f"\n{CLIENTS} concurrent requests, {WORKERS} lookup threads: all timeout, slowest {slowest:.0f} ms")
            assert _timeouts(client) - timeouts_before >= CLIENTS

            sleeping.join(timeout=SLEEP_S + 5)
            blocker.close()
            recovered_at = time.monotonic()
            while client.post("/v1/decide", json=body()).json()["degraded"]:
                assert time.monotonic() - recovered_at < 10, "no real decision within 10 s of Redis answering"
                time.sleep(0.05)
