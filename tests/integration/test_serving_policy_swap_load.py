"""A policy swap under load across `freqcap serve --workers 2` (real processes, a Redis policy store on a Redis of
the test's own): a steady stream of decide requests from several threads while a new policy is pushed to the admin
endpoint. Every request is answered 200, and each worker serves the new version within `policy_refresh` + 2 s.

Which worker answers is known, not guessed: each load thread keeps one keep-alive connection, and the worker that
owns the server side of it is found from /proc (the socket inode of the connection's server end, among the workers'
file descriptors). Per worker, the propagation time is when its connections' decisions start carrying the new
`policy_version` for good (no answer with the old version after it).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.integration.serving_support import RedisServer
from tests.integration.test_serving_service import (
    REFRESH,
    Service,
    _push,
    body,
    two_workers_serving,
)

THREADS_PER_WORKER = 2
STEADY_BEFORE = 1.0  # seconds of load before the push
AFTER = REFRESH + 3.0  # seconds of load after it (past the bound asserted)


@pytest.fixture
def services():
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def _server_inode(server_port: int, client_port: int) -> str | None:
    """The socket inode of the server end of the loopback connection from `client_port`."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                return fields[9]
    return None


def _owner(pids: list[int], inode: str) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    return None


def _connections_on_every_worker(service: Service, pids: list[int]) -> dict[int, list[http.client.HTTPConnection]]:
    """Keep-alive connections, THREADS_PER_WORKER owned by each worker (the kernel picks the worker: open more
    until each has its share)."""
    by_worker: dict[int, list[http.client.HTTPConnection]] = {pid: [] for pid in pids}
    spare: list[http.client.HTTPConnection] = []
    for _ in range(200):
        if all(len(c) >= THREADS_PER_WORKER for c in by_worker.values()):
            break
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        conn.request("GET", "/healthz")  # the worker accepts it and owns it from now on
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        inode = _server_inode(service.port, conn.sock.getsockname()[1])
        owner = _owner(pids, inode) if inode else None
        if owner is not None and len(by_worker[owner]) < THREADS_PER_WORKER:
            by_worker[owner].append(conn)
        else:
            spare.append(conn)
    for conn in spare:
        conn.close()
    assert all(len(c) >= THREADS_PER_WORKER for c in by_worker.values()), {p: len(c) for p, c in by_worker.items()}
    return by_worker


@pytest.mark.redis
def test_a_push_under_load_reaches_every_worker_without_a_failed_request(tmp_path, services):
    with RedisServer() as redis_server:
        env = {
            "FREQCAP__SERVING__POLICY_STORE": "redis",
            "FREQCAP__SERVING__POLICY_REDIS_URL": redis_server.address,
            "FREQCAP__SERVING__POLICY_REDIS_KEY": "freqcap-test:swap-under-load:policy",
        }
        service = two_workers_serving(tmp_path, env, services, "v0")
        pids = service.worker_pids()
        assert len(pids) == 2
        by_worker = _connections_on_every_worker(service, pids)

        payload = json.dumps(body())
        headers = {"Content-Type": "application/json"}
        answers: dict[int, list[tuple[float, int, str | None, str | None]]] = {pid: [] for pid in pids}
        errors: list[str] = []
        stop = threading.Event()
        lock = threading.Lock()

        def drive(pid: int, conn: http.client.HTTPConnection) -> None:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    conn.request("POST", "/v1/decide", payload, headers)
                    resp = conn.getresponse()
                    raw = resp.read()
                except Exception as exc:  # a failed request: recorded, and the test fails on it
                    with lock:
                        errors.append(f"worker {pid}: {type(exc).__name__}: {exc}")
                    return
                got = json.loads(raw) if resp.status == 200 else {}
                with lock:
                    answers[pid].append((sent, resp.status, got.get("policy_version"), got.get("degraded_reason")))
                time.sleep(0.005)  # a steady stream, not a saturating one

        threads = [
            threading.Thread(target=drive, args=(pid, conn), daemon=True)
            for pid, conns in by_worker.items()
            for conn in conns
        ]
        for t in threads:
            t.start()
        try:
            time.sleep(STEADY_BEFORE)
            pushed_at = time.monotonic()
            resp = _push(service.url, "v1")
            assert resp.status_code == 200, resp.text
            time.sleep(AFTER)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)
            for conns in by_worker.values():
                for conn in conns:
                    conn.close()

        assert not errors, errors
        report = []
        for pid, seen in answers.items():
            seen.sort()
            failed = [a for a in seen if a[1] != 200]
            assert not failed, f"worker {pid}: {len(failed)} non-200 answers, e.g. {failed[:3]}"
            assert {v for _, _, v, _ in seen} <= {"v0", "v1"}, {v for _, _, v, _ in seen}
            before = [a for a in seen if a[0] < pushed_at]
            assert before and all(v == "v0" for _, _, v, _ in before), f"worker {pid} answered nothing (or not v0)"
            last_old = max((t for t, _, v, _ in seen if v == "v0"), default=pushed_at)
            switched = [t for t, _, v, _ in seen if v == "v1" and t > last_old]
            assert switched, f"worker {pid} never served v1 (last v0 request sent {last_old - pushed_at:.3f} s after)"
            propagation = switched[0] - pushed_at
            after_bound = [a for a in seen if a[0] > pushed_at + REFRESH + 2.0]
            assert after_bound, f"worker {pid}: no request after the bound"
            reasons = {r for *_, r in seen}
            report.append(
                f"worker {pid}: {len(seen)} decisions (all 200), v1 from {propagation:.3f} s after the push "
                f"(degraded reasons seen: {sorted(map(str, reasons))})"
            )
            assert propagation < REFRESH + 2.0, report[-1]
        print("\n--workers 2 under load, policy_refresh", REFRESH, "s:\n" + "\n".join(report))
