"""`freqcap serve` as a service: real processes (the console script, uvicorn, `--workers`) on free ports, the real
Redis policy store, checked over HTTP and by reading the Redis hash with a plain client.

(a) without any policy the service starts: alive, not ready, decisions 200 fail-open `no_policy`;
(b) a pushed policy survives a restart (the store wins over the `--policy` file);
(c) with `--workers 2` a push to the one address reaches every worker within `policy_refresh` + 2 s: measured as
    the time from the push until the first of 20 consecutive GET /v1/policy (each on a new connection, so any
    worker may answer) that all report the new version.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from tests.integration.serving_support import free_port

TOKEN = "service-secret-admin-token-0123456789"
REFRESH = 1.0  # serving.policy_refresh's default: the bound asserted below is the documented one
FRESH = {"Connection": "close"}  # a new connection per request: the kernel hands each to any worker


def policy_doc(version: str) -> dict:
    return {
        "version": version,
        "created_at": "2026-05-01T00:00:00Z",
        "defaults": [{"level": "ad", "caps": [{"window": "7d", "max": 4}]}],
    }


def body() -> dict:
    cands = [{"ad_id": "a1", "campaign_id": "c1", "advertiser_id": "v1"}]
    return {"user_id": "u1", "context": {"format": "feed", "ts": "2026-06-01T00:00:00Z"}, "candidates": cands}


class Service:
    """One `freqcap serve` process group (its own session: stopping it stops its workers too)."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"serve-{self.port}.log"
        full_env = {
            **os.environ,
            "FREQCAP__DATA_DIR": str(tmp_path / "data"),
            "FREQCAP__FEAST__PROJECT": f"p{uuid.uuid4().hex[:8]}",
            "FREQCAP__SERVING__ADMIN_TOKEN": TOKEN,
            "FREQCAP__SERVING__DECISION_LOG_SAMPLE_RATE": "0",
            **env,
        }
        cmd = [str(Path(sys.executable).with_name("freqcap")), "serve", "--port", str(self.port), *args]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def wait_alive(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"freqcap serve did not answer /healthz within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group of the process this test started
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes: children of the server started by multiprocessing's spawn."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


@pytest.fixture
def services():
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


@pytest.fixture
def redis_store(redis_connection_string):
    """Settings of a Redis policy store under a key of this test's own (deleted afterwards, never a flush)."""
    host, port = redis_connection_string.split(":")
    client = redis.Redis(host=host, port=int(port))
    key = f"freqcap-test:{uuid.uuid4().hex}:policy"
    env = {
        "FREQCAP__SERVING__POLICY_STORE": "redis",
        "FREQCAP__SERVING__POLICY_REDIS_URL": redis_connection_string,
        "FREQCAP__SERVING__POLICY_REDIS_KEY": key,
    }
    yield env, client, key
    client.delete(key)


def _version(url: str) -> str | None:
    resp = httpx.get(f"{url}/v1/policy", headers=FRESH, timeout=5)
    return resp.json()["version"] if resp.status_code == 200 else None


def _push(url: str, version: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.post(f"{url}/v1/admin/policy", json=policy_doc(version), headers=auth | FRESH, timeout=10)


def deployed_policy(tmp_path: Path, version: str) -> Path:
    """A policy file as a deployment ships it (`--policy`)."""
    path = tmp_path / "deployed.json"
    path.write_text(json.dumps(policy_doc(version)))
    return path


def two_workers_serving(tmp_path: Path, env: dict[str, str], services: list, version: str) -> Service:
    """`freqcap serve --workers 2` on a deployed `version`, once both workers are up and answer with it."""
    service = Service(tmp_path, env, "--policy", str(deployed_policy(tmp_path, version)), "--workers", "2")
    services.append(service)
    service.wait_alive()
    deadline = time.monotonic() + 180
    while len(service.worker_pids()) < 2 or any(_version(service.url) != version for _ in range(20)):
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.2)
    return service


def test_serve_without_a_policy_starts_not_ready_and_fails_open(tmp_path, services):
    service = Service(tmp_path, {})
    services.append(service)
    service.wait_alive()
    assert httpx.get(f"{service.url}/healthz").status_code == 200
    ready = httpx.get(f"{service.url}/readyz")
    assert ready.status_code == 503 and ready.json() == {"ready": False, "policy_version": None}
    assert httpx.get(f"{service.url}/v1/policy").status_code == 503
    resp = httpx.post(f"{service.url}/v1/decide", json=body())
    assert resp.status_code == 200
    got = resp.json()
    assert got["degraded"] is True and got["degraded_reason"] == "no_policy" and got["policy_version"] is None
    assert [(d["ad_id"], d["eligible"], d["penalty"]) for d in got["decisions"]] == [("a1", True, 1.0)]
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'freqcap_decide_fail_open_total{reason="no_policy"} 1' in metrics


@pytest.mark.redis
def test_a_pushed_policy_survives_a_restart(tmp_path, services, redis_store):
    env, client, key = redis_store
    deployed = deployed_policy(tmp_path, "deployed-1")
    first = Service(tmp_path, env, "--policy", str(deployed))
    services.append(first)
    first.wait_alive()
    assert _version(first.url) == "deployed-1"  # the store is empty: the file serves
    assert client.exists(key) == 0, "starting must not write the store"
    resp = _push(first.url, "pushed-2")
    assert resp.status_code == 200 and resp.json()["policy_version"] == "pushed-2"
    first.stop()
    assert client.hget(key, "version") == b"pushed-2"
    assert json.loads(client.hget(key, "document"))["version"] == "pushed-2"

    second = Service(tmp_path, env, "--policy", str(deployed))
    services.append(second)
    second.wait_alive()
    assert _version(second.url) == "pushed-2", second.log()
    assert httpx.get(f"{second.url}/readyz").json() == {"ready": True, "policy_version": "pushed-2"}
    metrics = httpx.get(f"{second.url}/metrics").text
    assert 'freqcap_policy_info{version="pushed-2",source="store",store="redis"} 1' in metrics


@pytest.mark.redis
def test_workers_pick_up_a_push_within_the_refresh_bound(tmp_path, services, redis_store):
    env, client, key = redis_store
    service = two_workers_serving(tmp_path, env, services, "v0")
    assert len(service.worker_pids()) == 2

    pushed_at = time.monotonic()
    assert _push(service.url, "v1").status_code == 200
    assert client.hget(key, "version") == b"v1"
    answers: list[tuple[float, str | None]] = []
    run = 0
    while run < 20:
        assert time.monotonic() - pushed_at < 30, answers[-40:]
        t = time.monotonic() - pushed_at
        version = _version(service.url)
        answers.append((t, version))
        run = run + 1 if version == "v1" else 0
        time.sleep(0.01)
    propagation = answers[-20][0]  # the first answer of the final, all-agreeing run
    stale = sum(v != "v1" for _, v in answers)
    print(
        f"\n--workers 2, policy_refresh {REFRESH} s: every worker answered v1 {propagation:.3f} s after the push "
        f"({stale} stale answers before that, {len(answers)} GETs in all)"
    )
    assert propagation < REFRESH + 2.0


def test_several_workers_without_a_policy_store_are_refused(tmp_path):
    """A push would reach one worker only: `--workers 2` with `policy_store: none` must not start."""
    env = {**os.environ, "FREQCAP__DATA_DIR": str(tmp_path / "data"), "FREQCAP__SERVING__POLICY_STORE": "none"}
    cmd = [
        str(Path(sys.executable).with_name("freqcap")),
        "serve",
        "--dev",
        "--port",
        str(free_port()),
        "--workers",
        "2",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "policy_store" in done.stderr
