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
