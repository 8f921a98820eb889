"""Serving under load: `freqcap serve` over HTTP, driven open-loop at fixed rates, beside the raw Redis floor.

What one run does:

1. starts a redis-server of its own on a free port (no persistence; stopped at the end; nothing else is touched);
2. builds the demo world into it: `simulate` (the demo's size: 2,500 users, 14 days), the batch features as of the
   world's end, and materialization into Feast's Redis online store (bulk, as the features DAG does);
3. starts `freqcap serve --workers N --policy FILE` as a real subprocess (the console script, its own process
   group), the policy store in the same private Redis, serving's other settings at their defaults (lookup budget
   `serving.budget_ms`, decision log sampling, ...);
4. measures, in this order:
   - one request at a time (a single keep-alive connection, the next request sent when the answer is in):
     serving, and the floor;
   - for each rate of `--rates`, the floor then serving, each for `--duration` seconds, **open loop**: request i
     is due at start + i / rate whatever the answers; latency is counted from that scheduled time, so time spent
     queueing (in the generator waiting for a free connection, in the kernel, in the server) shows in it.

The floor is the same keys a decision reads (the user's hash, then one hash per distinct advertiser, campaign and
ad of the candidates, each asked for exactly the fields the serving reader asks for: Feast's Redis layout), read
by one pipelined round trip of HMGETs per request from this same client process, at the same rate, open loop. It
is what any service that has to read those keys from this Redis over loopback cannot beat.

The load generator is Python (asyncio on uvloop when installed, raw HTTP/1.1 keep-alive connections on asyncio
streams; RESP + hiredis for the floor). Requests wait in the generator for an idle connection; when none is idle
a new one is opened, up to `--max-connections`. It shares the machine's cores with serving and Redis: its own CPU
per request is measured (process CPU time over each phase) and printed beside the server's, and the time it sent
each request after its due time ("send lag") is reported, so a generator that falls behind is visible.

Per phase: achieved rate (answers / time from the first due time to the last answer), latency p50/p99/p99.9 over
every scheduled request (requests never answered within `--timeout` of their due time count as infinitely slow,
and as errors), errors (non-200 answers, connection errors, timeouts, answers whose decision count is not the
candidate count), the degraded share by `degraded_reason` read from the answers and, as a cross-check, from each
worker's `/metrics` (`freqcap_decide_fail_open_total`, deltas over the phase, summed over the workers: the script
finds which worker owns a connection from the server's socket table), and CPU milliseconds per request of the
serving processes (psutil: the process tree of `freqcap serve`), of Redis and of the generator.

Requests: user ids drawn uniformly from the world's users; 100 candidates each, the ads of randomly drawn
advertisers of the world's catalog until 100 are taken (about 6 advertisers and 20-25 campaigns per request);
`context.ts` the world's as-of time; 2,000 distinct bodies, cycled.

    .venv/bin/python benchmarks/bench_http.py [--rates 100,250,500,1000,2000] [--duration 10] [--workers 2]
        [--users 2500] [--candidates 100] [--quick]

`--quick` (a 500-user world, 3 s per rate at 100 and 250 requests/s, 100 sequential requests: about a minute) is
the smoke run; it writes `benchmarks/work/http-quick.md` and leaves `benchmarks/results/` alone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_POLICY, RESULTS, WORK, table, write_result

ROOT = Path(__file__).resolve().parents[1]
DATA = WORK / "http"
TOKEN_ENV = "FREQCAP__SERVING__ADMIN_TOKEN"
DISTINCT_BODIES = 2000
POLICY = {**BENCH_POLICY, "version": "bench-http-1"}


# --- a redis-server of our own ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """redis-server on a free loopback port, no persistence; stopped (and only it) at the end."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found on PATH (Debian: apt-get install redis-server)")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# --- the demo world in that Redis -------------------------------------------------------------------------------


def settings_env(redis_address: str) -> dict[str, str]:
    return {
        "FREQCAP__DATA_DIR": str(DATA / "data"),
        "FREQCAP__FEAST__ONLINE__KIND": "redis",
        "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": redis_address,
        "FREQCAP__SERVING__POLICY_STORE": "redis",
        "FREQCAP__SERVING__POLICY_REDIS_URL": redis_address,
    }


def build_world(redis_address: str, users: int, days: int, seed: int) -> dict:
    """simulate -> batch features -> publish + apply + materialize (what the features DAG does, without its gates)."""
    from freqcap.adapters.duckdb.features import build_features
    from freqcap.adapters.simulation_files import simulate_to_dir
    from freqcap.config import load_settings
    from freqcap.jobs.features import materialize_job
    from freqcap.jobs.privacy import pseudonymous_events
    from freqcap.layout import DataLayout, parse_as_of

    shutil.rmtree(DATA, ignore_errors=True)
    started = time.perf_counter()
    settings = load_settings(environ=settings_env(redis_address))
    layout = DataLayout.of(settings)
    sim = settings.simulation.model_copy(update={"users": users, "days": days, "seed": seed})
    world = simulate_to_dir(layout.raw_dir, sim)
    as_of = parse_as_of(sim.start) + timedelta(days=sim.days)
    # The batch ingestion edge: features of pseudonymous ids (serving maps each request's raw id the same way).
    events_dir, users_path = pseudonymous_events(settings, world.events_dir)
    build = build_features(
        events_dir, as_of, layout.features_run(as_of).features_dir, settings.features, users=users_path
    )
    done = materialize_job(
        {
            "as_of": as_of.isoformat(),
            "paths": {k: str(v) for k, v in build.paths.items()},
            "rows": build.rows,
            "events_scanned": build.events_scanned,
        },
        settings,
    )
    return {
        "settings": settings,
        "layout": layout,
        "as_of": as_of,
        "users_path": world.users_path,
        "ads_path": world.ads_path,
        "events": world.events,
        "ads": world.ads,
        "campaigns": world.campaigns,
        "advertisers": world.advertisers,
        "rows": sum(build.rows.values()),
        "materialize_seconds": done["seconds"],
        "users": users,
        "seconds": time.perf_counter() - started,
    }


def make_requests(world: dict, n: int, candidates: int, rng: random.Random) -> list[tuple[str, list[dict]]]:
    """n (user, candidates): users uniform over the world's; the ads of random advertisers until `candidates`."""
    import pyarrow.parquet as pq

    users = pq.read_table(world["users_path"], columns=["user_id"]).column("user_id").to_pylist()
    ads = pq.read_table(world["ads_path"], columns=["ad_id", "campaign_id", "advertiser_id"]).to_pylist()
    by_adv: dict[str, list[dict]] = collections.defaultdict(list)
    for ad in ads:
        by_adv[ad["advertiser_id"]].append(ad)
    advertisers = sorted(by_adv)
    if candidates > len(ads):
        raise SystemExit(f"--candidates {candidates}: the world has {len(ads)} ads")
    out = []
    for _ in range(n):
        pool: list[dict] = []
        for adv in rng.sample(advertisers, len(advertisers)):
            ads_of = list(by_adv[adv])
            rng.shuffle(ads_of)
            pool += ads_of[: candidates - len(pool)]
            if len(pool) == candidates:
                break
        rng.shuffle(pool)
        out.append((rng.choice(users), pool))
    return out


def http_payload(body: bytes, port: int) -> bytes:
    head = (
        f"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def resp_pipeline(commands: list[tuple[bytes, tuple]]) -> bytes:
    """HMGET key fields... for each (key, fields), as one buffer of RESP commands."""

    def bulk(b: bytes) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(b), b)

    out = []
    for key, fields in commands:
        fields = [f if isinstance(f, bytes) else str(f).encode() for f in fields]
        out.append(b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(fields)) + bulk(key) + b"".join(map(bulk, fields)))
    return b"".join(out)


def floor_commands(world: dict, requests) -> list[list[tuple[bytes, tuple]]]:
    """The (key, fields) pairs a decision reads, per request: from the serving reader's own key plan (Feast's
    serialized entity keys + project, murmur3 field names), for the user's pseudonym (what the store holds and
    serving looks up)."""
    from freqcap.adapters.feast.fast_reader import RedisFeatureReader
    from freqcap.adapters.feast.store import open_store
    from freqcap.adapters.secrets import load_pseudonymizer
    from freqcap.domain.policy.engine import Candidate

    settings = world["settings"]
    store = open_store(settings, world["layout"].feast_repo)
    reader = RedisFeatureReader(store, settings.features)
    pseudonym = load_pseudonymizer(settings) or (lambda user_id: user_id)
    out = []
    for user, cands in requests:
        out.append(reader.keys_and_fields(pseudonym(user), [Candidate(**c) for c in cands]))
    reader.close()
    return out


# --- the serving process -----------------------------------------------------------------------------------------


class Serving:
    """`freqcap serve` in its own process group (stopping it stops its workers)."""

    def __init__(self, redis_address: str, workers: int, policy: Path, log: Path, extra_env: dict[str, str]):
        self.port = free_port()
        self.token = secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FREQCAP")}
        env.update(settings_env(redis_address))
        env[TOKEN_ENV] = self.token
        env.update(extra_env)
        cmd = [str(Path(sys.executable).with_name("freqcap")), "serve", "--port", str(self.port)]
        cmd += ["--workers", str(workers), "--policy", str(policy)]
        self.command = cmd
        self.log_path = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers = workers

    def log(self) -> str:
        return self.log_path.read_text()[-3000:]

    def wait_ready(self, version: str, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        agreeing = 0
        while agreeing < 10 * self.workers:
            if self.proc.poll() is not None:
                raise RuntimeError(f"freqcap serve exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"freqcap serve not ready within {timeout} s:\n{self.log()}")
            try:  # a new connection each time: any worker may answer
                r = httpx.get(f"http://127.0.0.1:{self.port}/readyz", headers={"Connection": "close"}, timeout=2)
                agreeing = agreeing + 1 if r.status_code == 200 and r.json().get("policy_version") == version else 0
            except httpx.HTTPError:
                agreeing = 0
            if agreeing == 0:
                time.sleep(0.2)

    def processes(self):
        import psutil

        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def cpu_seconds(procs) -> float:
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


# --- the open-loop generator -------------------------------------------------------------------------------------

_DEGRADED = re.compile(rb'"degraded"\s*:\s*(true|false)')
_REASON = re.compile(rb'"degraded_reason"\s*:\s*(?:null|"([^"]*)")')
_AD_ID = b'"ad_id"'


class HttpConn:
    """One HTTP/1.1 keep-alive connection; `exchange` sends one pre-built request and reads the whole answer."""

    def __init__(self, port: int, candidates: int):
        self.port = port
        self.candidates = candidates
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
            self.writer = self.reader = None

    def local_port(self) -> int:
        return self.writer.get_extra_info("sockname")[1]

    async def raw(self, payload: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            body = await self.reader.readexactly(int(head[i + 17 : head.index(b"\r\n", i + 2)]))
        elif b"transfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            body = await self.reader.read()
            self.close()
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    async def exchange(self, payload: bytes) -> str | None:
        """None for an undegraded decision, the degraded reason, or 'error:...' for anything but a full answer."""
        status, body = await self.raw(payload)
        if status != 200:
            return f"error:http {status}"
        if body.count(_AD_ID) != self.candidates:
            return "error:decision count"
        m = _DEGRADED.search(body)
        if m is None:
            return "error:no degraded field"
        if m.group(1) == b"false":
            return None
        r = _REASON.search(body)
        reason = r.group(1).decode() if r and r.group(1) else "unknown"
        return reason.split(":")[0]


class RedisConn:
    """One connection to Redis; `exchange` sends a pre-packed pipeline and reads its `n` replies (hiredis)."""

    def __init__(self, port: int):
        import hiredis

        self.port = port
        self._reader_cls = hiredis.Reader
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.parser = self._reader_cls()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
            self.writer = self.reader = None

    async def exchange(self, payload: tuple[bytes, int]) -> str | None:
        data, n = payload
        if self.writer is None:
            await self.open()
        self.writer.write(data)
        got = 0
        parser = self.parser
        error = None
        while got < n:
            chunk = await self.reader.read(262144)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            parser.feed(chunk)
            while got < n:
                reply = parser.gets()
                if reply is False:
                    break
                got += 1
                if isinstance(reply, Exception):
                    error = f"error:redis {reply}"
        return error


@dataclass
class Phase:
    name: str
    rate: float | None  # None: one at a time
    scheduled: int = 0
    latencies: list[float] = field(default_factory=list)  # ms, answered requests
    outcomes: collections.Counter = field(default_factory=collections.Counter)  # None / reason / error:...
    late_outcomes: collections.Counter = field(default_factory=collections.Counter)  # answers after the timeout
    due_and_latency: list[tuple[float, float]] = field(default_factory=list)  # (due s from start, ms): raw dump
    send_lag: list[float] = field(default_factory=list)  # ms, sent after the due time
    wall: float = 0.0  # the schedule's length (one at a time: the run's)
    elapsed: float = 0.0  # the whole phase, for CPU shares
    last_answer: float = 0.0
    in_window: int = 0  # answers that arrived before the last request was due (open loop): the achieved rate
    gen_cpu: float = 0.0
    server_cpu: float = 0.0
    redis_cpu: float = 0.0
    peak_connections: int = 0
    metrics_fail_open: dict = field(default_factory=dict)
    metrics_requests: int | None = None

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def errors(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k is not None and k.startswith("error:"))

    def percentile(self, q: float) -> float:
        """Over every scheduled request; one never answered counts as infinitely slow."""
        if not self.scheduled:
            return math.nan
        values = sorted(self.latencies)
        rank = max(0, math.ceil(q * self.scheduled) - 1)
        return values[rank] if rank < len(values) else math.inf


async def open_loop(
    make_conn,
    payloads: list,
    rate: float,
    duration: float,
    connections: int,
    max_conn: int,
    timeout: float,
    phase: Phase,
) -> None:
    """Request i is due at start + i/rate; a free connection sends it (a new one is opened when none is free, up
    to `max_conn`); latency from the due time. Requests still unanswered `timeout` s after their due time (or
    after the last one is due) are given up as errors."""
    loop = asyncio.get_running_loop()
    n = max(1, int(rate * duration))
    phase.scheduled = n
    queue: collections.deque = collections.deque()
    waiters: collections.deque = collections.deque()  # futures of idle connection loops
    pool: list = []
    in_flight: dict[int, float] = {}
    lat, lag, outcomes = phase.latencies, phase.send_lag, phase.outcomes
    clock = time.perf_counter
    done_flag = False

    async def worker(conn) -> None:
        while True:
            if not queue:
                if done_flag:
                    return
                fut = loop.create_future()
                waiters.append(fut)
                await fut
                continue
            i, due = queue.popleft()
            now = clock()
            if now - due > timeout:
                outcomes["error:timeout (never sent)"] += 1
                continue
            lag.append((now - due) * 1000)
            in_flight[i] = due
            try:
                outcome = await conn.exchange(payloads[i % len(payloads)])
            except Exception as exc:  # any failure of one exchange is that request's error
                conn.close()
                outcome = f"error:{type(exc).__name__}"
            finally:
                del in_flight[i]
            phase.last_answer = end = clock()
            if end <= window_end:
                phase.in_window += 1
            elapsed = end - due
            if elapsed > timeout:
                outcomes["error:timeout"] += 1
                phase.late_outcomes[outcome] += 1
            else:
                lat.append(elapsed * 1000)
                outcomes[outcome] += 1
                phase.due_and_latency.append((due - start, elapsed * 1000))

    async def connected(conn):
        await conn.open()
        return conn

    conns = await asyncio.gather(*(connected(make_conn()) for _ in range(connections)))
    tasks = [loop.create_task(worker(c)) for c in conns]
    pool.extend(conns)
    start = clock() + 0.02
    window_end = start + n / rate
    for i in range(n):
        due = start + i / rate
        delay = due - clock()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        queue.append((i, due))
        while waiters and waiters[0].done():
            waiters.popleft()
        if waiters:
            waiters.popleft().set_result(None)
        elif len(pool) < max_conn:
            conn = make_conn()
            pool.append(conn)
            tasks.append(loop.create_task(worker(conn)))  # connects on its first request (counted in latency)
    done_flag = True
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)
    last_due = start + (n - 1) / rate
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, last_due + timeout + 0.5 - clock()))
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    outcomes["error:timeout"] += len(in_flight)
    outcomes["error:timeout (never sent)"] += len(queue)
    for conn in pool:
        conn.close()
    phase.peak_connections = len(pool)
    phase.wall = n / rate


async def one_at_a_time(conn, payloads: list, n: int, phase: Phase) -> None:
    await conn.open()
    clock = time.perf_counter
    phase.scheduled = n
    start = clock()
    for i in range(n):
        t = clock()
        try:
            outcome = await conn.exchange(payloads[i % len(payloads)])
        except Exception as exc:  # any failure of one exchange is that request's error
            conn.close()
            outcome = f"error:{type(exc).__name__}"
        phase.latencies.append((clock() - t) * 1000)
        phase.due_and_latency.append((t - start, phase.latencies[-1]))
        phase.outcomes[outcome] += 1
    phase.wall = clock() - start
    phase.in_window = n
    conn.close()


# --- /metrics of every worker -------------------------------------------------------------------------------------


def _owner(serving: Serving, local_port: int) -> int | None:
    """The serving process holding the server side of the client connection from `local_port`."""
    import psutil

    for p in serving.processes():
        try:
            for c in p.net_connections(kind="tcp"):
                if c.raddr and c.raddr.port == local_port and c.laddr.port == serving.port:
                    return p.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


_FAIL_OPEN = re.compile(r'^freqcap_decide_fail_open_total\{reason="([^"]+)"\} (\d+)', re.M)
_REQUESTS = re.compile(r"^freqcap_decide_requests_total (\d+)", re.M)


async def scrape_workers(serving: Serving, candidates: int, attempts: int = 60) -> dict[int, dict]:
    """{pid: {"requests": n, "fail_open": {reason: n}}} from each worker's own /metrics (counters are per process)."""
    found: dict[int, dict] = {}
    get = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{serving.port}\r\n\r\n".encode()
    for _ in range(attempts):
        conn = HttpConn(serving.port, candidates)
        await conn.open()
        try:
            status, body = await conn.raw(get)  # the worker has accepted by now
            pid = _owner(serving, conn.local_port())
        finally:
            conn.close()
        if status == 200 and pid is not None and pid not in found:
            text = body.decode()
            requests = _REQUESTS.search(text)
            found[pid] = {
                "requests": int(requests.group(1)) if requests else None,
                "fail_open": {r: int(n) for r, n in _FAIL_OPEN.findall(text)},
            }
        if len(found) >= serving.workers:
            break
    return found


def metrics_delta(before: dict, after: dict) -> tuple[dict, int | None, str]:
    fail_open: collections.Counter = collections.Counter()
    requests = 0
    note = ""
    if set(before) != set(after):
        note = f"workers seen before/after differ: {sorted(before)} vs {sorted(after)}"
    for pid, a in after.items():
        b = before.get(pid, {"requests": 0, "fail_open": {}})
        if a["requests"] is None or b["requests"] is None:
            requests = None
        elif requests is not None:
            requests += a["requests"] - b["requests"]
        for reason, n in a["fail_open"].items():
            if n - b["fail_open"].get(reason, 0):
                fail_open[reason] += n - b["fail_open"].get(reason, 0)
    return dict(fail_open), requests, note


# --- the run ------------------------------------------------------------------------------------------------------


def run_phase(name, rate, make_conn, payloads, args, serving: Serving | None, redis_proc, sequential: int = 0):
    import psutil

    phase = Phase(name, rate)
    rproc = psutil.Process(redis_proc.pid)
    procs = serving.processes() if serving else []
    before_metrics = asyncio.run(scrape_workers(serving, args.candidates)) if serving else {}
    s0, r0, g0 = cpu_seconds(procs), cpu_seconds([rproc]), time.process_time()
    t0 = time.perf_counter()
    if rate is None:
        asyncio.run(one_at_a_time(make_conn(), payloads, sequential, phase))
    else:
        asyncio.run(
            open_loop(
                make_conn, payloads, rate, args.duration, args.connections, args.max_connections, args.timeout, phase
            )
        )
    phase.gen_cpu = time.process_time() - g0
    phase.elapsed = time.perf_counter() - t0
    phase.server_cpu = cpu_seconds(procs) - s0
    phase.redis_cpu = cpu_seconds([rproc]) - r0
    if serving:
        after = asyncio.run(scrape_workers(serving, args.candidates))
        phase.metrics_fail_open, phase.metrics_requests, note = metrics_delta(before_metrics, after)
        if note:
            print(f"  note: {note}", flush=True)
    time.sleep(args.pause)
    return phase


def fmt_ms(x: float) -> str:
    if math.isinf(x):
        return f"> {args_timeout_ms:.0f}"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


args_timeout_ms = 2000.0


def degraded_text(outcomes: collections.Counter, answered_ok: int) -> str:
    reasons = {k: n for k, n in outcomes.items() if k is not None and not k.startswith("error:")}
    if not reasons:
        return "0"
    total = sum(reasons.values())
    parts = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return f"{100 * total / max(1, answered_ok):.1f} % ({parts})"


def late_text(late: collections.Counter) -> str:
    if not late:
        return ""
    reasons = ", ".join(f"{r or 'undegraded'} {n}" for r, n in sorted(late.items(), key=lambda kv: -kv[1]))
    return f"; answered after the timeout: {reasons}"


def per_request_ms(cpu: float, n: int) -> str:
    return f"{1000 * cpu / n:.2f}" if n else "-"


def main() -> None:
    global args_timeout_ms
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,250,500,1000,2000", help="requests/s, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate (floor and serving each)")
    parser.add_argument("--workers", type=int, default=2, help="freqcap serve --workers")
    parser.add_argument("--users", type=int, default=None, help="world size (default: the demo's, 2,500)")
    parser.add_argument("--days", type=int, default=None, help="world days (default: the demo's, 14)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--sequential", type=int, default=500, help="requests of the one-at-a-time row")
    parser.add_argument("--connections", type=int, default=16, help="connections opened before each rate")
    parser.add_argument("--max-connections", type=int, default=256, help="more are opened while none is free")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds after its due time a request is given up")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between phases")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FREQCAP__KEY=VALUE",
        help="a setting for freqcap serve (environment), e.g. FREQCAP__SERVING__BUDGET_MS=25; repeatable",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small world, short phases; not recorded")
    args = parser.parse_args()
    if args.quick:
        args.users = args.users or 500
        args.days = args.days or 7
        if "--rates" not in sys.argv:
            args.rates = "100,250"
        if "--duration" not in sys.argv:
            args.duration = 3.0
        if "--sequential" not in sys.argv:
            args.sequential = 100
    args_timeout_ms = args.timeout * 1000
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop_name = "asyncio (no uvloop)"

    load_start = os.getloadavg()
    redis_server = PrivateRedis()
    serving = None
    try:
        from freqcap.config import load_settings

        demo = load_settings(environ={}).demo
        users, days = args.users or demo.users, args.days or demo.days
        print(f"building the world ({users:,} users, {days} days) into redis {redis_server.address} ...", flush=True)
        world = build_world(redis_server.address, users, days, args.seed)
        print(
            f"  {world['events']:,} events, {world['ads']} ads / {world['campaigns']} campaigns / "
            f"{world['advertisers']} advertisers -> {world['rows']:,} feature rows; "
            f"{world['seconds']:.1f} s (materialize {world['materialize_seconds']:.1f} s)",
            flush=True,
        )
        rng = random.Random(args.seed)
        requests = make_requests(world, DISTINCT_BODIES, args.candidates, rng)
        commands = floor_commands(world, requests)
        import redis as redis_py

        probe = redis_py.Redis(port=redis_server.port)
        keys_per_request = sum(len(c) for c in commands) / len(commands)
        hits = total = 0
        for cmds in commands[:200]:
            with probe.pipeline(transaction=False) as pipe:
                for key, fields in cmds:
                    pipe.hmget(key, list(fields))
                replies = pipe.execute()
            hits += sum(1 for r in replies if any(v is not None for v in r))
            total += len(replies)
        if hits == 0:
            raise RuntimeError("the floor's keys hold nothing: the key layout does not match the store")
        floor_payloads = [(resp_pipeline(c), len(c)) for c in commands]
        policy_path = DATA / "policy.json"
        policy_path.write_text(json.dumps(POLICY))
        extra_env = dict(item.split("=", 1) for item in args.set)
        serving = Serving(redis_server.address, args.workers, policy_path, DATA / "serve.log", extra_env)
        serving.wait_ready(POLICY["version"])
        print(f"freqcap serve ready on port {serving.port} ({args.workers} worker(s))", flush=True)
        bodies = [
            json.dumps(
                {"user_id": u, "context": {"format": "feed", "ts": world["as_of"].isoformat()}, "candidates": c},
                separators=(",", ":"),
            ).encode()
            for u, c in requests
        ]
        http_payloads = [http_payload(b, serving.port) for b in bodies]

        def http_conn():
            return HttpConn(serving.port, args.candidates)

        def redis_conn():
            return RedisConn(redis_server.port)

        # Warm-up (not recorded): every worker's connections, caches and code paths.
        run_phase("warm-up", min(100.0, rates[0]), http_conn, http_payloads, _warm(args), serving, redis_server.proc)
        results: list[tuple[Phase, Phase]] = []
        floor = run_phase("floor", None, redis_conn, floor_payloads, args, None, redis_server.proc, args.sequential)
        serve = run_phase("serve", None, http_conn, http_payloads, args, serving, redis_server.proc, args.sequential)
        results.append((floor, serve))
        _print_pair(floor, serve)
        for rate in rates:
            floor = run_phase("floor", rate, redis_conn, floor_payloads, args, None, redis_server.proc)
            serve = run_phase("serve", rate, http_conn, http_payloads, args, serving, redis_server.proc)
            results.append((floor, serve))
            _print_pair(floor, serve)
    finally:
        if serving is not None:
            serving.stop()
        redis_server.stop()
    load_end = os.getloadavg()
    raw = {
        f"{'floor' if i % 2 == 0 else 'serve'} {'one at a time' if ph.rate is None else f'{ph.rate:g}/s'}": {
            "due_s_and_latency_ms": [(round(d, 4), round(ms, 3)) for d, ms in ph.due_and_latency],
            "scheduled": ph.scheduled,
        }
        for i, ph in enumerate(p for pair in results for p in pair)
    }
    (WORK / "http-latencies.json").write_text(json.dumps(raw))
    report(args, world, results, keys_per_request, hits / total, loop_name, (load_start, load_end), serving)


def _warm(args):
    warm = argparse.Namespace(**vars(args))
    warm.duration = min(2.0, args.duration)
    return warm


def _print_pair(floor: Phase, serve: Phase) -> None:
    label = "one at a time" if serve.rate is None else f"{serve.rate:.0f}/s"
    print(
        f"  {label}: serve p50 {fmt_ms(serve.percentile(0.5))} p99 {fmt_ms(serve.percentile(0.99))} ms, "
        f"{serve.in_window / serve.wall if serve.wall else 0:.0f}/s, errors {serve.errors}, "
        f"degraded {degraded_text(serve.outcomes, serve.answered)}; floor p50 {fmt_ms(floor.percentile(0.5))} "
        f"p99 {fmt_ms(floor.percentile(0.99))} ms; CPU/request serve "
        f"{per_request_ms(serve.server_cpu, serve.metrics_requests or serve.answered)} "
        f"ms, generator {per_request_ms(serve.gen_cpu, serve.scheduled)} ms",
        flush=True,
    )


def report(args, world, results, keys_per_request, key_hit_share, loop_name, load, serving) -> None:
    import platform

    cmd = "    .venv/bin/python benchmarks/bench_http.py " + " ".join(sys.argv[1:])
    serve_rows, floor_rows, phases = [], [], []
    for floor, serve in results:
        label = "one at a time" if serve.rate is None else f"{serve.rate:,.0f}"
        achieved = serve.in_window / serve.wall if serve.wall else 0.0
        served = serve.metrics_requests if serve.metrics_requests else serve.answered
        fo = serve.metrics_fail_open
        metrics = ", ".join(f"{r} {n}" for r, n in sorted(fo.items())) or "0"
        if serve.metrics_requests is not None and serve.metrics_requests != serve.scheduled - serve.outcomes.get(
            "error:timeout (never sent)", 0
        ):
            metrics += f" (requests counted {serve.metrics_requests})"
        serve_rows.append(
            [
                label,
                f"{achieved:,.0f}",
                fmt_ms(serve.percentile(0.5)),
                fmt_ms(serve.percentile(0.99)),
                fmt_ms(serve.percentile(0.999)),
                serve.errors,
                degraded_text(serve.outcomes, serve.answered) + late_text(serve.late_outcomes),
                metrics,
                per_request_ms(serve.server_cpu, served),
                f"{100 * serve.server_cpu / serve.elapsed:.0f} %" if serve.elapsed else "-",
                per_request_ms(serve.redis_cpu, served),
                per_request_ms(serve.gen_cpu, serve.scheduled),
                fmt_ms(_pct(serve.send_lag, 0.99)) if serve.send_lag else "-",
                serve.peak_connections or 1,
            ]
        )
        degraded = sum(n for k, n in serve.outcomes.items() if k is not None and not k.startswith("error:"))
        phases.append(  # machine-readable beside the .md (benchmarks/capacity_plan.py reads it)
            {
                "rate": serve.rate,
                "achieved_per_s": achieved,
                "degraded_pct": 100 * degraded / max(1, serve.answered),
                "serving_cpu_ms": 1000 * serve.server_cpu / served if served else None,
                "redis_cpu_ms": 1000 * serve.redis_cpu / served if served else None,
                "p50_ms": serve.percentile(0.5),
                "p99_ms": serve.percentile(0.99),
            }
        )
        f_achieved = floor.in_window / floor.wall if floor.wall else 0.0
        ratio = []
        for q in (0.5, 0.99, 0.999):
            s, f = serve.percentile(q), floor.percentile(q)
            ratio.append("-" if math.isinf(s) or math.isinf(f) or f == 0 else f"{s / f:.1f}x")
        floor_rows.append(
            [
                label,
                f"{f_achieved:,.0f}",
                fmt_ms(floor.percentile(0.5)),
                fmt_ms(floor.percentile(0.99)),
                fmt_ms(floor.percentile(0.999)),
                floor.errors,
                per_request_ms(floor.redis_cpu, floor.answered),
                per_request_ms(floor.gen_cpu, floor.scheduled),
                *ratio,
            ]
        )
    serve_headers = [
        "target req/s",
        "achieved req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "degraded (answers, by reason)",
        "fail-open by /metrics",
        "serving CPU ms/req",
        "serving CPU",
        "Redis CPU ms/req",
        "generator CPU ms/req",
        "send lag p99 ms",
        "connections",
    ]
    floor_headers = [
        "target req/s",
        "achieved req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "Redis CPU ms/req",
        "generator CPU ms/req",
        "serving / floor p50",
        "p99",
        "p99.9",
    ]
    body = (
        f"`freqcap serve --workers {args.workers}` (uvicorn; "
        + (f"settings {', '.join(f'`{x}`' for x in args.set)}, otherwise " if args.set else "")
        + f"serving's default settings: lookup budget "
        f"{world['settings'].serving.budget_ms:g} ms, reader `{world['settings'].serving.reader}`) over loopback, "
        f"on the demo world in a private redis-server: {world['events']:,} events of {world['users']:,} users "
        f"({world['ads']} ads, {world['campaigns']} campaigns, {world['advertisers']} advertisers) -> "
        f"{world['rows']:,} feature rows materialized into Feast's Redis online store; world built in "
        f"{world['seconds']:.0f} s. Each request: {args.candidates} candidates (the ads of random advertisers), a "
        f"random user of the world; {keys_per_request:.0f} Redis keys per decision on average "
        f"({100 * key_hit_share:.0f} % of them hold data).\n\n"
        f"Open loop: request i is due at start + i / rate, sent on a free keep-alive connection (opened on demand, "
        f"at most {args.max_connections}), latency counted from its due time; {args.duration:g} s per rate, the "
        f"floor first, then serving. Percentiles over every scheduled request (a request not answered within "
        f"{args.timeout:g} s counts as slower than that, and as an error). Generator: Python, {loop_name}, raw "
        f'HTTP/1.1 on asyncio streams, on the same 2 cores as serving and Redis. "one at a time": '
        f"{args.sequential} requests on one connection, each sent when the previous answer is in. "
        f"1-minute load average {load[0][0]:.1f} at the start, {load[1][0]:.1f} at the end.\n\n"
        f"## Serving: POST /v1/decide over HTTP\n\n" + table(serve_headers, serve_rows) + "\n\n"
        "`degraded`: share of the answers received within the timeout with `degraded: true`, by `degraded_reason` "
        "(answers that came later are listed apart: they count as errors); `fail-open by /metrics`: the increase of "
        "`freqcap_decide_fail_open_total` over the phase, summed over the workers' own /metrics (it also counts "
        "requests the generator gave up on while in flight, whose answers it never read). CPU "
        "per request: CPU time of the process tree of `freqcap serve` and of redis-server over the phase, divided by "
        "the decide requests serving counted (`freqcap_decide_requests_total`, including those the generator gave "
        "up on), and the generator's own, divided by the requests it scheduled; `serving CPU`: in % of one core. "
        "`send lag`: how late the generator sent requests after their due time (waiting for a free connection "
        "included).\n\n"
        "## Floor: the same keys by one pipelined HMGET round trip per request, same rate, open loop\n\n"
        + table(floor_headers, floor_rows)
        + "\n\nCommand:\n\n"
        + cmd
        + "\n"
    )
    title = "Serving under load: HTTP, open loop, beside the Redis floor"
    if args.quick:
        path = WORK / "http-quick.md"
        header = (
            f"# {title} (quick smoke run, not recorded)\n\nMachine: {platform.machine()}, {os.cpu_count()} cores.\n\n"
        )
        WORK.mkdir(parents=True, exist_ok=True)
        path.write_text(header + body)
        print(header + body)
        print(f"(quick run: written to {path.relative_to(ROOT)}, not to benchmarks/results/)")
    else:
        write_result("http", title, body)
        (RESULTS / "http.json").write_text(json.dumps({"command": cmd.strip(), "phases": phases}, indent=2) + "\n")


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


if __name__ == "__main__":
    main()
