"""Streaming benchmark: worker throughput, CPU per event and end-to-end lag, beside the raw Redis Streams floor.

Everything runs against a private redis-server on a free port (started here, stopped by its PID), so its CPU time
(/proc/<pid>/stat) is the stream's alone. CPU per event is (CPU seconds used in the window) / (events in it), for
the worker process(es) and for redis-server: stable on a noisy 2-core box where wall-clock rates are not.

* floor: raw `XADD` (pipelined, 500 per round trip), and raw `XREADGROUP` (`stream.batch_size` per read) + `XACK`
  through the same pre-packed path the worker reads with: what Redis Streams alone costs, no parsing, no state;
* drain: worker processes (`freqcap stream`) consume a pre-filled stream of N simulator events — parse, dedup,
  bucket counters, one atomic write per micro-batch, push of the changed pairs to Feast's Redis layout, ack. The
  workers start first and own their partitions, are paused (SIGSTOP) while the stream is filled, then resumed: the
  window excludes start-up and production. One partition and one worker, then two partitions and two workers.
  These are cold starts (the world's first N events: nearly every pair is new). The warm drains apply those N
  first, outside the window, and measure the next N, as a worker that has been running sees them;
* lag at several rates: a producer paces simulator events into the stream while one worker runs (then two workers on
  two partitions at `--sharded-rates`); probe events (a user of their own, one every ~50 ms) are timed from just
  before their XADD until `get_online_features` on Feast's stream view returns them; p50/p99 over the probes, the
  workers' and Redis's CPU per event.

    .venv/bin/python benchmarks/bench_stream.py [--events 200000 --rates 5000,10000,20000 --sharded-rates 20000
                                                 --seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, WORK, table, write_result

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM in /proc/<pid>/status), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PrivateRedis:
    """A redis-server of our own on a free port, no persistence; stopped by the PID we started."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found on PATH")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        self.client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        self.address = f"127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _ts(message: dict) -> datetime:
    return datetime.fromisoformat(message["event_ts"])


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _events(n: int) -> list[dict]:
    """Simulator events (20 k users x 14 days), as stream messages, in event-time order."""
    from freqcap.adapters.simulation_files import simulate_to_dir
    from freqcap.adapters.stream.produce import load_events
    from freqcap.config import SimulationConfig

    out = WORK / "stream-sim"
    if not (out / "events").exists():
        simulate_to_dir(out, SimulationConfig(users=20_000, days=14, seed=7))
    return load_events(out / "events")[:n]


def _settings(redis_url: str, tag: str, **stream: str):
    from freqcap.config import load_settings

    env = {
        "FREQCAP__DATA_DIR": str(WORK / f"stream-{tag}"),
        "FREQCAP__FEAST__ONLINE__KIND": "redis",
        "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": redis_url,
        "FREQCAP__FEAST__PROJECT": f"b{tag}",
        "FREQCAP__STREAM__ENABLED": "true",
        "FREQCAP__STREAM__REDIS_URL": redis_url,
        "FREQCAP__STREAM__STREAM_KEY": f"b{tag}:events",
        "FREQCAP__STREAM__DEAD_LETTER_KEY": f"b{tag}:dead",
        "FREQCAP__STREAM__STATE_PREFIX": f"b{tag}:stream",
        # Replayed history: the watermark races ahead of wall time, lateness is about event time only.
        "FREQCAP__STREAM__ALLOWED_LATENESS": "6h",
        # Workers are paused while the stream fills: leases must outlive the pause.
        "FREQCAP__STREAM__LEASE_TTL": "120s",
    }
    env.update({f"FREQCAP__STREAM__{k.upper()}": v for k, v in stream.items()})
    return load_settings(environ=env), env


def _prepare(settings):
    from freqcap.adapters.feast.store import apply_definitions, open_store
    from freqcap.layout import DataLayout

    repo = DataLayout.of(settings).feast_repo
    store = open_store(settings, repo)
    apply_definitions(store, settings, repo)
    return store


def floor(server: PrivateRedis, messages: list[dict], batch: int) -> dict:
    from freqcap.adapters.stream.resp import pack, round_trip

    client = server.client
    key = f"bfloor{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    for i in range(0, len(messages), 500):
        pipe = client.pipeline(transaction=False)
        for m in messages[i : i + 500]:
            pipe.xadd(key, m)
        pipe.execute()
    xadd = len(messages) / (time.perf_counter() - t0)
    client.xgroup_create(key, "g", id="0")
    t0, c0, r0 = time.perf_counter(), time.process_time(), server.cpu()
    n = 0
    while True:
        reply = round_trip(client, [pack(b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", batch, b"STREAMS", key, b">")])
        entries = reply[0][0][1] if reply[0] else []
        if not entries:
            break
        round_trip(client, [pack(b"XACK", key, b"g", *[i for i, _ in entries])])
        n += len(entries)
    seconds = time.perf_counter() - t0
    out = {
        "xadd_per_s": xadd,
        "xreadgroup_xack_per_s": n / seconds,
        "client_cpu_us": (time.process_time() - c0) / n * 1e6,
        "redis_cpu_us": (server.cpu() - r0) / n * 1e6,
    }
    client.delete(key)
    return out


def _start_workers(env: dict, n: int) -> list[subprocess.Popen]:
    """`n` `freqcap stream` worker processes (`FREQCAP_STREAM_GC=default` in `env`: Python's default collector)."""
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-m", "freqcap.cli", "stream", "--consumer", f"bench{i}"]
        procs.append(
            subprocess.Popen(cmd, env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        )
    return procs


def _wait_owned(client, settings, procs: list[subprocess.Popen], timeout: float = 180) -> None:
    """Until every partition is owned and, with several workers, by distinct ones (start-up is not measured)."""
    from freqcap.adapters.stream.status import status_keys

    keys = status_keys(settings.stream)
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError("stream worker died: " + p.stderr.read().decode()[-2000:])
        owners = [client.hget(k, "owner") for k in keys]
        if all(owners) and len(set(owners)) == min(len(keys), len(procs)):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"partitions not owned after {timeout} s: {owners}")
        time.sleep(0.1)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.terminate()
    for p in procs:
        p.wait(timeout=60)


def drain(
    server: PrivateRedis,
    messages: list[dict],
    partitions: int,
    workers: int,
    gc: str = "tuned",
    mode: str = "direct",
    overlap: bool = True,
    warm: list[dict] | None = None,
    codec: str = "native",
) -> dict:
    """Drain `messages` from a pre-filled stream. With `warm`, those (earlier) events are produced and applied
    first, outside the measured window: the workers then hold their pairs in memory and the rows exist, as in a
    worker that has been running, rather than on a cold start where nearly every pair is new. `codec`: `native`
    (the compiled row codec) or `python` (its Python reference, `FREQCAP_NATIVE=off`)."""
    from freqcap.adapters.stream.produce import produce
    from freqcap.adapters.stream.status import read_combined
    from freqcap.domain.stream.partitions import state_base

    tag = uuid.uuid4().hex[:8]
    settings, env = _settings(
        server.address, tag, partitions=str(partitions), push_mode=mode, overlap_push=str(overlap).lower()
    )
    store = _prepare(settings)
    client = server.client
    native = "on" if codec == "native" else "off"
    procs = _start_workers({**env, "FREQCAP_STREAM_GC": gc, "FREQCAP_NATIVE": native}, workers)
    bases = [state_base(settings.stream.state_prefix, k) for k in range(partitions)]
    unpushed = [f"{b}:{log}" for b in bases for log in ("unpushed", "pending")]
    before = len(warm or ())

    def wait_applied(n: int) -> None:  # until `n` events are applied and pushed (no unpushed names, no pending log)
        while int(read_combined(client, settings.stream).get("applied", 0)) < n or client.exists(*unpushed):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(next(p for p in procs if p.poll() is not None).stderr.read().decode()[-2000:])
            time.sleep(0.005)

    try:
        _wait_owned(client, settings, procs)
        if warm:
            produce(client, settings.stream.stream_key, warm, partitions=partitions)
            wait_applied(before)
            time.sleep(1.0)  # the `pushed` counter reaches the status with the next status write
        pushed0 = int(read_combined(client, settings.stream).get("pushed", 0))
        memory0 = client.info("memory")["used_memory"]
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        produce(client, settings.stream.stream_key, messages, partitions=partitions)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        client.config_resetstat()  # INFO commandstats over the window alone (a private server: nothing else reads it)
        r0, t0 = server.cpu(), time.perf_counter()
        for p in procs:
            p.send_signal(signal.SIGCONT)
        wait_applied(before + len(messages))
        seconds = time.perf_counter() - t0
        worker_cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
        worker_mb = max(peak_rss_mb(p.pid) for p in procs)
        redis_cpu = server.cpu() - r0
        commands = _command_stats(client)
        # The `pushed` counter reaches the status with the worker's next status write (after the last push
        # landed): wait until it settles.
        status, settled_at = read_combined(client, settings.stream), time.monotonic()
        while time.monotonic() - settled_at < 0.5 and time.perf_counter() - t0 < seconds + 5:
            time.sleep(0.1)
            latest = read_combined(client, settings.stream)
            if latest.get("pushed") != status.get("pushed"):
                status, settled_at = latest, time.monotonic()
        # What this run added (its own keys): the stream entries, marks, pair state and the online rows.
        memory_mb = (client.info("memory")["used_memory"] - memory0) / 1e6
    finally:
        _stop(procs)
        store.teardown()
    n = len(messages)
    return {
        "partitions": partitions,
        "workers": workers,
        "gc": gc,
        "mode": mode,
        "overlap": overlap,
        "codec": codec,
        "warm": before,
        "memory_mb": memory_mb,
        "worker_mb": worker_mb,
        "events": n,
        "seconds": seconds,
        "events_per_s": n / seconds,
        "per_worker_per_s": n / seconds / workers,
        "worker_cpu_us": worker_cpu / n * 1e6,
        "redis_cpu_us": redis_cpu / n * 1e6,
        "pairs_pushed": int(status.get("pushed", 0)) - pushed0,
        "applied": int(status.get("applied", 0)) - before,
        "commands": commands,
    }


def _command_stats(client) -> dict[str, dict[str, int]]:
    """Redis's own count and time (µs) per command since the last CONFIG RESETSTAT (`INFO commandstats`): the
    time a command spends executing, without reading its request and writing its reply."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): {"calls": int(v["calls"]), "usec": int(v["usec"])}
        for name, v in stats.items()
        if not name.startswith("cmdstat_config")
    }


def _command_table(d: dict) -> str:
    """Where Redis's CPU per event goes in one drain, command by command."""
    n, commands = d["events"], d["commands"]
    ranked = sorted(commands.items(), key=lambda kv: -kv[1]["usec"])
    executed = sum(v["usec"] for v in commands.values()) / n
    rows = [
        [
            f"`{name.upper()}`",
            f"{v['calls'] / n:.3f}",
            f"{v['usec'] / n:.2f}",
            f"{v['usec'] / v['calls']:.2f}" if v["calls"] else "",
            f"{v['usec'] / n / d['redis_cpu_us']:.0%}",
        ]
        for name, v in ranked
        if v["usec"] / n >= 0.005
    ]
    rows.append(["all commands", "", f"{executed:.2f}", "", f"{executed / d['redis_cpu_us']:.0%}"])
    rows.append(
        [
            "the rest: reading requests, writing replies, the event loop",
            "",
            f"{d['redis_cpu_us'] - executed:.2f}",
            "",
            f"{1 - executed / d['redis_cpu_us']:.0%}",
        ]
    )
    return table(["command", "calls per event", "µs per event", "µs per call", "share of Redis CPU"], rows)


def lag_at(server: PrivateRedis, messages: list[dict], rate: float, seconds: float, workers: int = 1) -> dict:
    """End-to-end lag at a fixed rate, with `workers` worker processes on as many partitions."""
    from freqcap.adapters.secrets import load_pseudonymizer
    from freqcap.adapters.stream.status import read_combined
    from freqcap.domain.stream.partitions import partition_of, stream_name

    tag = uuid.uuid4().hex[:8]
    settings, env = _settings(server.address, tag, partitions=str(workers))
    store = _prepare(settings)
    client = server.client
    key = settings.stream.stream_key
    procs = _start_workers(env, workers)
    _wait_owned(client, settings, procs)
    total = int(rate * seconds)
    probes: dict[str, float] = {}
    lags: list[float] = []
    stop = threading.Event()
    pseudonymizer = load_pseudonymizer(settings)
    stored_id = pseudonymizer if pseudonymizer is not None else (lambda user_id: user_id)

    def prober():
        pending: dict[str, float] = {}
        while not (stop.is_set() and not pending and not probes):
            pending.update(probes)
            for k in list(pending):
                probes.pop(k, None)
            if pending:
                users = sorted(pending)
                out = store.get_online_features(
                    features=["user_ad_stream:imp_counts"],
                    # The worker stores the probe's user by pseudonym (the stream ingestion edge).
                    entity_rows=[{"user_id": stored_id(u), "ad_id": "probe-ad"} for u in users],
                ).to_dict()
                now = time.perf_counter()
                for u, counts in zip(users, out["imp_counts"], strict=True):
                    if counts:
                        lags.append(now - pending.pop(u))
            time.sleep(0.005)

    # Past the end of the events the producer starts over, each time shifted by the events' whole span: event time
    # keeps moving forward, as live traffic's does (a replay from the start would be dead-lettered as late).
    span = _ts(messages[-1]) - _ts(messages[0]) + timedelta(seconds=1)
    cycles: dict[int, list[dict]] = {0: messages}

    for cycle in range(1, total // len(messages) + 2):  # built before the clock starts: no stall mid-run
        cycles[cycle] = [dict(m, event_ts=(_ts(m) + span * cycle).isoformat()) for m in messages]

    def replayed(k: int) -> dict:
        cycle, i = divmod(k, len(messages))
        return cycles[cycle][i]

    thread = threading.Thread(target=prober, daemon=True)
    thread.start()
    sent = 0
    cpu0, r0 = sum(cpu_seconds(p.pid) for p in procs), server.cpu()
    applied0 = int(read_combined(client, settings.stream).get("applied", 0))
    started = time.perf_counter()
    next_probe = started
    chunk = max(50, int(rate / 100))  # ~10 ms of events per round trip
    try:
        while sent < total:
            batch = [dict(replayed(sent + j), event_id=f"{tag}-{sent + j}") for j in range(chunk)]
            probe = None
            now = time.perf_counter()
            if now >= next_probe:
                next_probe = now + 0.05
                probe = f"probe-{sent}"
                batch.append(
                    {**batch[-1], "event_id": f"{tag}-p{sent}", "event_type": "impression", "user_id": probe,
                     "ad_id": "probe-ad"}
                )  # fmt: skip
            pipe = client.pipeline(transaction=False)
            for m in batch:  # each to its user's partition, as `produce` routes them
                pipe.xadd(stream_name(key, partition_of(m["user_id"], workers), workers), m)
            t_send = time.perf_counter()
            pipe.execute()
            if probe:
                probes[probe] = t_send
            sent += chunk
            pause = started + sent / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        produced_s = time.perf_counter() - started
        deadline = time.perf_counter() + 60
        while (probes or thread.is_alive()) and time.perf_counter() < deadline:
            stop.set()
            thread.join(timeout=0.5)
        applied = int(read_combined(client, settings.stream).get("applied", 0)) - applied0
        worker_cpu, redis_cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0, server.cpu() - r0
    finally:
        stop.set()
        _stop(procs)
        store.teardown()
    return {
        "rate": rate,
        "workers": workers,
        "produced_per_s": sent / produced_s,
        "applied": applied,
        "probes": len(lags),
        "lag_p50_s": statistics.median(lags) if lags else float("nan"),
        "lag_p99_s": _quantile(lags, 0.99),
        "lag_max_s": max(lags) if lags else float("nan"),
        "worker_cpu_us": worker_cpu / max(1, applied) * 1e6,
        "redis_cpu_us": redis_cpu / max(1, applied) * 1e6,
    }


def _warm_label(d: dict) -> str:
    return f" after {d['warm']:,} earlier events (warm)" if d.get("warm") else ""


def _push_label(d: dict) -> str:
    codec = f", codec {d.get('codec', 'python')}"
    if d["mode"] != "direct":
        return d["mode"] + codec
    return "direct, " + ("overlapped" if d.get("overlap", True) else "awaited") + codec


def _report(args, command: str, fl: dict, drains: list[dict], lags: list[dict], load_before) -> None:
    load = os.getloadavg()
    rows = [
        ["raw XADD (pipelined 500)", f"{fl['xadd_per_s']:,.0f}", "", "", "", "", "", "", ""],
        [
            f"raw XREADGROUP ({args.batch}/read) + XACK: floor",
            f"{fl['xreadgroup_xack_per_s']:,.0f}",
            "1.00x",
            f"{fl['client_cpu_us']:.1f} (client)",
            "",
            f"{fl['redis_cpu_us']:.1f}",
            "",
            "",
            "",
        ],
    ]
    for d in drains:
        rows.append(
            [
                f"worker drain{_warm_label(d)}, {d['partitions']} partition(s), {d['workers']} worker process(es), "
                f"{d['gc']} GC, push {_push_label(d)}: per worker (total {d['events_per_s']:,.0f}/s)",
                f"{d['per_worker_per_s']:,.0f}",
                f"{d['per_worker_per_s'] / fl['xreadgroup_xack_per_s']:.2f}x",
                f"{d['worker_cpu_us']:.1f}",
                f"{d['worker_cpu_us'] * d['events_per_s'] / 1e6 / d['workers']:.0%}",
                f"{d['redis_cpu_us']:.1f}",
                f"{d['worker_cpu_us'] / d['redis_cpu_us']:.2f}",
                f"{d['memory_mb']:.1f}",
                f"{d.get('worker_mb', float('nan')):.0f}",
            ]
        )
    body = (
        f"Command: `{command}`\n\n"
        f"{drains[0]['events']:,} simulator events (20 k users x 14 d world), private "
        f"redis-server 7.0 on a free port, load avg before {load_before[0]:.1f}/{load_before[1]:.1f}, after "
        f"{load[0]:.1f}/{load[1]:.1f} (2 cores; other processes may share them). CPU µs per event: the worker "
        "process(es) and redis-server from /proc CPU times over the measured window. `default GC`: the worker with "
        "Python's default garbage collector thresholds (`FREQCAP_STREAM_GC=default`), the baseline of the tuned one "
        "(`freqcap.cli.main.long_lived_gc`), run back to back. `push direct` (the default): the online rows are the "
        "pairs' state, each commit unit appends the changed pairs' states to a pending log, and the rows are encoded "
        "and pushed once per micro-batch after the atomic writes; `push atomic`: the rows written by the flush script "
        "itself, every unit (`stream.push_mode: atomic`). `overlapped` (the default with `direct`): a micro-batch's "
        "push is written by a thread while the next micro-batch is decided (`stream.overlap_push`); `awaited`: "
        "each push waited for where it is sent, its baseline, alternated with it twice. Worker busy: its CPU time over "
        "the drain's wall time (per worker process): the share of the time it computes rather than waits on Redis, "
        "steadier from run to run than events/s on a box whose speed varies. `codec native` (the default where it is "
        "built): the worker's per-pair steps in C (row encoding and the push's commands, the pending-log records, a "
        "unit's counting: `freqcap.adapters.native.MODULES`); `codec python`: the same steps in Python "
        "(`FREQCAP_NATIVE=off`), its baseline, alternated with it twice on the warm drain. "
        "Worker ÷ Redis CPU: this box's speed changes from minute to minute (both CPU times rise and fall together "
        "from one drain to the next), while Redis does the same work per event whichever codec the worker runs: "
        "the ratio compares the codecs with the box's speed taken out. "
        "Redis MB: `used_memory` the drain added (its own keys). Worker MB: the worker process's peak resident "
        "memory (VmHWM; the largest of several workers).\n\n"
        + table(
            [
                "path",
                "events/s",
                "vs floor",
                "worker CPU µs/event",
                "worker busy",
                "Redis CPU µs/event",
                "worker ÷ Redis CPU",
                "Redis MB",
                "worker MB",
            ],
            rows,
        )
        + "\n\n"
        + "\n".join(
            f"Drain {d['partitions']}p/{d['workers']}w{_warm_label(d)} ({d['gc']} GC, {_push_label(d)}): "
            f"{d['events']:,} events in "
            f"{d['seconds']:.2f} s, "
            f"{d['pairs_pushed']:,} pair rows pushed to Feast's Redis layout."
            for d in drains
        )
        + "\n\nEnd-to-end lag: event XADD -> visible through Feast `get_online_features` on the stream "
        f"view (probe events every ~50 ms, {args.seconds:.0f} s per rate; the producer and the prober share the "
        "2 cores with the worker(s) and Redis). One worker on one partition at each rate, then two workers on two "
        "partitions at the `--sharded-rates` (the producer routes each event to its user's partition; CPU per event "
        "summed over the workers):\n\n"
        + table(
            [
                "workers",
                "target rate/s",
                "produced/s",
                "probes",
                "lag p50 s",
                "lag p99 s",
                "lag max s",
                "worker µs/ev",
                "Redis µs/ev",
            ],
            [
                [
                    r.get("workers", 1),
                    f"{r['rate']:,.0f}",
                    f"{r['produced_per_s']:,.0f}",
                    r["probes"],
                    f"{r['lag_p50_s']:.3f}",
                    f"{r['lag_p99_s']:.3f}",
                    f"{r['lag_max_s']:.3f}",
                    f"{r['worker_cpu_us']:.1f}",
                    f"{r['redis_cpu_us']:.1f}",
                ]
                for r in lags
            ],
        )
    )
    # The default configuration's drain (tuned GC, direct push, overlapped), the first one run.
    default = next(
        (
            d
            for d in drains
            if d["gc"] == "tuned" and d["mode"] == "direct" and d["overlap"] and d["workers"] == 1 and not d["warm"]
        ),
        None,
    )
    warm = next((d for d in drains if d["warm"] and d["workers"] == 1 and d["codec"] == "native"), None)
    if default is not None and default.get("commands"):
        body += (
            "\n\nWhere Redis's CPU goes, command by command, in the first drain of the default configuration (1 "
            "partition, 1 worker, tuned GC, direct push, overlapped): `INFO commandstats` reset as the workers resume "
            "and read when the drain is done, beside the redis-server process's CPU per event over the same window "
            f"({default['redis_cpu_us']:.1f} µs). The pair rows are Feast's Redis layout (one hash per entity key): "
            "a pair the worker does not hold in memory is read first (`HMGET` of its stream row), each changed pair "
            "is written once per micro-batch (`HSET` of the changed fields) and a key's TTL is set when this "
            "process has not refreshed it within the hour (`EXPIRE`, the first write of every new pair). The "
            "atomic commit of each unit (dedup marks, pending log, counters) is the `EVALSHA`; `HGETALL` and "
            "`EXISTS` include the benchmark's own polling for the end of the drain.\n\n" + _command_table(default)
        )
    if warm is not None and warm.get("commands"):
        body += (
            f"\n\nThe same for the warm drain (1 partition, 1 worker, after {warm['warm']:,} earlier events: the "
            f"next {warm['events']:,} events of the world; Redis CPU {warm['redis_cpu_us']:.1f} µs per event):\n\n"
            + _command_table(warm)
        )
    write_result("stream", "Streaming worker: throughput, CPU per event and end-to-end lag", body)
    (RESULTS / "stream.json").write_text(
        json.dumps({"floor": fl, "drain": drains, "lag": lags, "recorded": datetime.now(UTC).isoformat()}, indent=2)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rates", default="5000,10000,20000")
    parser.add_argument("--sharded-rates", default="20000", help="lag with two workers on two partitions")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=5000, help="XREADGROUP count of the floor (stream.batch_size)")
    args = parser.parse_args()
    command = "python benchmarks/bench_stream.py " + " ".join(sys.argv[1:])
    load_before = os.getloadavg()
    # The first N events (every drain, the lag runs), then the next N (the warm drains, after the first N).
    everything = _events(2 * args.events)
    messages, later = everything[: args.events], everything[args.events :]
    print(f"{len(messages)} + {len(later)} simulator events", flush=True)
    server = PrivateRedis()
    try:
        fl = floor(server, messages, args.batch)
        print("floor", fl, flush=True)
        drains = []
        for partitions, workers, gc, mode, overlap in (
            (1, 1, "default", "direct", True),
            # The overlapped push and its baseline, alternated twice: single drains vary by ~10 % on this box.
            (1, 1, "tuned", "direct", False),
            (1, 1, "tuned", "direct", True),
            (1, 1, "tuned", "direct", False),
            (1, 1, "tuned", "direct", True),
            (1, 1, "tuned", "atomic", False),
            (2, 2, "tuned", "direct", True),
        ):
            d = drain(server, messages, partitions, workers, gc, mode, overlap)
            print("drain", d, flush=True)
            drains.append(d)
        # A worker that has been running: the next N events. The compiled row codec and its Python reference,
        # alternated twice (single drains vary by ~10 %), then two workers.
        for partitions, workers, codec in (
            (1, 1, "python"),
            (1, 1, "native"),
            (1, 1, "python"),
            (1, 1, "native"),
            (2, 2, "native"),
        ):
            d = drain(server, later, partitions, workers, warm=messages, codec=codec)
            print("drain", d, flush=True)
            drains.append(d)
        lags = []
        runs = [(float(r), 1) for r in args.rates.split(",") if r]
        runs += [(float(r), 2) for r in args.sharded_rates.split(",") if r]
        for rate, workers in runs:
            res = lag_at(server, messages, rate, args.seconds, workers)
            print("lag", res, flush=True)
            lags.append(res)
    finally:
        server.stop()
    _report(args, command, fl, drains, lags, load_before)


if __name__ == "__main__":
    main()
