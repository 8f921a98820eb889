"""A real local Redis Cluster for tests: three masters from `redis-server --cluster-enabled yes`, joined by
`redis-cli --cluster create`, each on a free loopback port; stopped (or killed, restarted) by the PIDs started here.

`redis_cluster` (conftest) is one cluster for the whole session; a test that kills a node starts its own
`LocalRedisCluster`, so a failure there cannot leave the shared one broken. Under CI a missing `redis-server` or
`redis-cli` fails the test instead of skipping it (`tests.conftest._service_missing`).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import _service_missing
from tests.integration.serving_support import wait_for_redis

BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000, so the port must be at most 55535


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A loopback port P at most 55535 with P and its bus port P + 10000 both free (and not in `taken`)."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(20_000, 55_535)
        if port not in taken and port + BUS_OFFSET not in taken and _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _service_missing(name, "binary not found on PATH")
    return path


class LocalRedisCluster:
    """`masters` redis-server processes in cluster mode, no persistence, no replicas.

    `node_timeout_ms` is the cluster's failure-detection time (`cluster-node-timeout`): short, so that a killed
    master is marked failed, and a restarted one accepted back, within seconds.
    """

    def __init__(self, masters: int = 3, node_timeout_ms: int = 1000, workdir: Path | None = None):
        self.server = _binary("redis-server")
        self.cli = _binary("redis-cli")
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="freqcap-cluster-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports: list[int] = []
        for _ in range(masters):
            self.ports.append(free_cluster_port({q + d for q in self.ports for d in (0, BUS_OFFSET)}))
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def connection_string(self) -> str:
        """Feast's `connection_string` for the cluster: every master's host:port."""
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _start_node(self, port: int) -> None:
        args = [
            self.server,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.dir / f"nodes-{port}.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        with (self.dir / f"redis-{port}.log").open("ab") as log:
            self.procs[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for_redis(port)

    def start(self) -> LocalRedisCluster:
        try:
            for port in self.ports:
                self._start_node(port)
            create = [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
            subprocess.run(
                [*create, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def info(self, port: int) -> dict[str, str]:
        import redis

        raw = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1).execute_command("CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else raw
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node reports `cluster_state:ok` with all 16384 slots served."""
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            try:
                last = {p: self.info(p) for p in self.procs}
                if all(i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384" for i in last.values()):
                    return
            except Exception as exc:  # a node still starting: try again
                last = {"error": repr(exc)}
            time.sleep(0.05)
        raise AssertionError(f"Redis Cluster not ok within {timeout} s: {last}")

    def wait_state(self, port: int, state: str, timeout: float = 30.0) -> float:
        """Seconds until node `port` reports `cluster_state:<state>`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.info(port).get("cluster_state") == state:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"node {port} not {state} within {timeout} s")

    def kill(self, port: int) -> None:
        """SIGKILL the master on `port` (by the PID started here) and reap it: its port refuses connections."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start the master on `port` again with its own nodes.conf: it rejoins with the same id and slots (empty:
        no persistence)."""
        self._start_node(port)

    def stop(self) -> None:
        for port, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            self.procs.pop(port, None)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _client(port: int):
    import redis

    return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=5)


def owner_port(cluster: LocalRedisCluster, slot: int) -> int:
    """The port of the master serving `slot`, as the first running node sees it."""
    port = next(iter(cluster.procs))
    for start, end, master, *_ in _client(port).execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(master[1])
    raise AssertionError(f"slot {slot} is not served")


def move_slot(cluster: LocalRedisCluster, slot: int, to_port: int) -> None:
    """Move `slot` and its keys to the master on `to_port` (Redis' own resharding steps: IMPORTING / MIGRATING,
    MIGRATE the keys, SETSLOT NODE on every master), then wait until every master agrees."""
    from_port = owner_port(cluster, slot)
    source, target = _client(from_port), _client(to_port)
    source_id = source.execute_command("CLUSTER", "MYID").decode()
    target_id = target.execute_command("CLUSTER", "MYID").decode()
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
    for port in cluster.procs:
        _client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    deadline = time.monotonic() + 10
    while any(_owner_seen_by(port, slot) != to_port for port in cluster.procs):
        assert time.monotonic() < deadline, f"slot {slot} not moved to {to_port} on every master"
        time.sleep(0.05)


def _owner_seen_by(port: int, slot: int) -> int | None:
    for start, end, master, *_ in _client(port).execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(master[1])
    return None


def keys_per_master(cluster: LocalRedisCluster, pattern: bytes) -> dict[int, int]:
    """How many keys matching `pattern` each master holds."""
    return {port: sum(1 for _ in _client(port).scan_iter(match=pattern, count=1000)) for port in cluster.procs}
