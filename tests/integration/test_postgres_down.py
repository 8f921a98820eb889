"""PostgreSQL goes down under a Feast SQL registry: a private PostgreSQL (initdb in a temporary directory, its own
port, stopped by the PID this test started; never the shared one) holds the registry, a private redis-server the
online store. Asserted:
- serving that started while PostgreSQL was up keeps answering the same real decisions after it stops (the hot
  path reads Redis only), ready, with no fail-open counted;
- `materialize` (the features DAG's task) fails at once with an error that names the registry's host and port;
- a serving that starts while PostgreSQL is down starts, but answers fail-open with `store_error: OperationalError`
  (it cannot resolve the feature views).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.store import materialize, open_store
from freqcap.api.app import create_app
from freqcap.config import load_settings
from tests.conftest import _service_missing
from tests.integration.serving_support import RedisServer, free_port
from tests.integration.test_feast_online import T1, _run_snapshot, random_events
from tests.integration.test_serving import TOKEN, body, write_policy
from tests.integration.test_serving_redis_kill import _fail_open_counts

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth), run as `postgres` when we are root."""

    def __init__(self):
        self.initdb = shutil.which("initdb")
        self.postgres = shutil.which("postgres")
        if not (self.initdb and self.postgres):
            _service_missing("PostgreSQL", "initdb/postgres binaries not found on PATH")
        self.user = "postgres" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="freqcap-pg-"))
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        init = [self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]
        subprocess.run(init, user=self.user, check=True, capture_output=True, timeout=60)
        cmd = [self.postgres, "-D", str(self.data), "-p", str(self.port), "-k", str(self.root)]
        cmd += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        log = (self.root / "postgres.log").open("w")
        self.proc = subprocess.Popen(cmd, user=self.user, stdout=log, stderr=subprocess.STDOUT)
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, (self.root / "postgres.log").read_text()[-2000:]
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", connect_timeout=1):
                    return self
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "postgres did not start within 30 s"
                time.sleep(0.1)

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        """Fast shutdown (SIGINT: open client connections are closed), SIGKILL if it lingers; then the port
        refuses connections."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def test_postgres_down_serving_keeps_answering_and_the_registry_error_names_the_server(tmp_path):
    pg = PostgresServer()
    try:
        pg.start()
        pg.create_database("feast")
        with RedisServer() as redis_server:
            settings = load_settings(
                environ={
                    "FREQCAP__DATA_DIR": str(tmp_path),
                    "FREQCAP__FEAST__ONLINE__KIND": "redis",
                    "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": redis_server.address,
                    "FREQCAP__FEAST__PROJECT": f"t{uuid.uuid4().hex[:10]}",
                    "FREQCAP__FEAST__REGISTRY": pg.url("feast"),
                }
            )
            events_dir = tmp_path / "events"
            write_events(random_events(5, 300, T1 - timedelta(days=3), T1), events_dir / "part-0.parquet")
            repo = tmp_path / "feast"
            _run_snapshot(settings, tmp_path, events_dir, T1, open_store(settings, repo), repo)
            policy = write_policy(tmp_path)
            users = [f"u{i}" for i in range(8)]
            # A generous budget: this test is about PostgreSQL, not the timing of a loaded box.
            app = create_app(settings, policy_path=policy, repo_dir=repo, admin_token=TOKEN, budget_ms=2000)
            with TestClient(app) as client:
                before = {u: client.post("/v1/decide", json=body(u)).json() for u in users}
                assert all(not got["degraded"] for got in before.values()), before
                assert any(d["penalty"] < 1.0 for got in before.values() for d in got["decisions"])

                stopping = time.monotonic()
                pg.stop()
                print(f"\npostgres stopped in {time.monotonic() - stopping:.1f} s")

                for _ in range(3):
                    for user in users:
                        got = client.post("/v1/decide", json=body(user)).json()
                        assert got == before[user], (user, got)
                assert client.get("/readyz").status_code == 200
                assert sum(_fail_open_counts(client.get("/metrics").text).values()) == 0

            # Anything that reads the registry now fails at once, naming its server: here `materialize` (the
            # features DAG's task) on a freshly opened store (opening alone does not connect).
            store = open_store(settings, repo)
            started = time.monotonic()
            with pytest.raises(Exception) as failed:
                materialize(store, T1 - timedelta(seconds=1), T1 + timedelta(seconds=1))
            message = str(failed.value)
            assert "127.0.0.1" in message and str(pg.port) in message, message[:500]
            print(f"\nmaterialize failed after {time.monotonic() - started:.1f} s")
            assert time.monotonic() - started < 15
            print(f"materialize with PostgreSQL down: {type(failed.value).__name__}: {message.splitlines()[0][:200]}")

            # A serving started now starts (its warm-up fails, logged) but cannot resolve the feature views: it
            # answers fail-open with store_error until PostgreSQL is back.
            started = time.monotonic()
            fresh = create_app(settings, policy_path=policy, repo_dir=repo, admin_token=TOKEN, budget_ms=2000)
            with TestClient(fresh) as client:
                print(f"fresh serving started in {time.monotonic() - started:.1f} s")
                got = client.post("/v1/decide", json=body(users[0])).json()
                assert got["degraded"] is True and got["degraded_reason"] == "store_error: OperationalError", got
                assert all(d["eligible"] and d["penalty"] == 1.0 for d in got["decisions"])
                assert _fail_open_counts(client.get("/metrics").text)["store_error"] == 1
    finally:
        pg.cleanup()
