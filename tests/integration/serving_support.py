"""Helpers shared by the serving integration tests: a free port and a private, killable redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

from tests.conftest import _service_missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    """Path of `redis-server`; skips the test when it is missing, fails it under CI."""
    binary = shutil.which("redis-server")
    if binary is None:
        _service_missing("redis-server", "binary not found on PATH")
    return binary


def wait_for_redis(port: int, timeout: float = 10.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis(port=port, socket_connect_timeout=0.2).ping()
            return
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RedisServer:
    """A redis-server of our own on `port`, without persistence (a restart comes back empty)."""

    def __init__(self, port: int | None = None):
        self.binary = redis_server_binary()
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_redis(self.port)
        return self

    def kill(self) -> None:
        """SIGKILL, then reap: when this returns the port refuses connections."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class DecisionBurst:
    """`clients` threads sending `POST /v1/decide` back to back (users round-robin) while the test breaks the store.

    `records` holds (start, end, user, status, json) per answer; `mark_kill()` notes when the store was killed, so
    `after_kill()` counts the requests that started after it."""

    def __init__(self, url: str, users: list[str], body, clients: int = 2):
        import threading

        self.url, self.users, self.body, self.clients = url, users, body, clients
        self.records: list[tuple[float, float, str, int, dict]] = []
        self.killed_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(clients)]

    def _run(self, worker: int) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=10) as own:
            i = 0
            while not self._stop.is_set():
                user = self.users[(worker + i * self.clients) % len(self.users)]
                i += 1
                started = time.perf_counter()
                resp = own.post("/v1/decide", json=self.body(user))
                ended = time.perf_counter()
                with self._lock:
                    self.records.append((started, ended, user, resp.status_code, resp.json()))

    def start(self) -> DecisionBurst:
        for t in self._threads:
            t.start()
        return self

    def wait_answered(self, n: int, deadline: float) -> None:
        """Until `n` answers are in (or the monotonic `deadline` passes)."""
        while len(self.records) < n and time.monotonic() < deadline:
            time.sleep(0.005)

    def mark_kill(self) -> None:
        self.killed_at = time.perf_counter()

    def after_kill(self) -> int:
        with self._lock:
            return sum(1 for r in self.records if self.killed_at is not None and r[0] > self.killed_at)

    def wait_after_kill(self, n: int, deadline: float) -> None:
        while self.after_kill() < n and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop and join the threads (asserting none hangs)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self._threads)
