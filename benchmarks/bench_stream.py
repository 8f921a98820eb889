"""Streaming benchmark: worker throughput and end-to-end lag, beside the raw Redis Streams floor, same run.

* floor: raw `XADD` (pipelined, 500 per round trip) and raw `XREADGROUP` + `XACK` (2000 per read) of the same
  messages — what Redis Streams alone costs, no parsing, no state, no push;
* drain: the worker (`freqcap stream`, its own process) consuming a pre-filled stream of N simulator events to
  the end — parse, dedup, bucket counters (Lua), ack, push changed pairs to Feast's Redis layout: sustained
  events/s per worker, as a ratio to the XREADGROUP+XACK floor;
* lag at several rates: a producer paces simulator events into the stream while the worker runs; probe events
  (a user of their own, one every ~50 ms) are timed from just before their XADD until `get_online_features`
  on Feast's stream view returns them; p50/p99 over the probes, plus the worker's applied rate.

    .venv/bin/python benchmarks/bench_stream.py [--events 200000 --rates 5000,10000,20000,30000 --seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, WORK, table, write_result


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _events(n: int) -> list[dict]:
    """Simulator events (20 k users x 14 days by default), as stream messages, in event-time order."""
    from freqcap.adapters.simulation_files import simulate_to_dir
    from freqcap.adapters.stream.produce import load_events
    from freqcap.config import SimulationConfig

    out = WORK / "stream-sim"
    if not (out / "events").exists():
        simulate_to_dir(out, SimulationConfig(users=20_000, days=14, seed=7))
    messages = load_events(out / "events")
    return messages[:n]


def _settings(redis_url: str, tag: str):
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
    }
    return load_settings(environ=env), env


def _cleanup(client, tag: str) -> None:
    for pattern in (f"b{tag}:*",):
        keys = list(client.scan_iter(match=pattern, count=10_000))
        for i in range(0, len(keys), 10_000):
            client.delete(*keys[i : i + 10_000])


def floor(client, messages: list[dict]) -> dict:
    key = f"bfloor{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    for i in range(0, len(messages), 500):
        pipe = client.pipeline(transaction=False)
        for m in messages[i : i + 500]:
            pipe.xadd(key, m)
        pipe.execute()
    xadd = len(messages) / (time.perf_counter() - t0)
    client.xgroup_create(key, "g", id="0")
    t0 = time.perf_counter()
    n = 0
    while True:
        reply = client.xreadgroup("g", "c", {key: ">"}, count=2000)
        entries = reply[0][1] if reply else []
        if not entries:
            break
        client.xack(key, "g", *[i for i, _ in entries])
        n += len(entries)
    read = n / (time.perf_counter() - t0)
    client.delete(key)
    return {"xadd_per_s": xadd, "xreadgroup_xack_per_s": read}


def _start_worker(env: dict, settings) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "freqcap.cli", "stream", "--consumer", "bench"]
    return subprocess.Popen(cmd, env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _prepare(settings):
    from freqcap.adapters.feast.store import apply_definitions, open_store
    from freqcap.layout import DataLayout

    repo = DataLayout.of(settings).feast_repo
    store = open_store(settings, repo)
    apply_definitions(store, settings, repo)
    return store


def drain(client, redis_url: str, messages: list[dict]) -> dict:
    from freqcap.adapters.stream.produce import produce

    tag = uuid.uuid4().hex[:8]
    settings, env = _settings(redis_url, tag)
    store = _prepare(settings)
    produce(client, settings.stream.stream_key, messages)
    status = f"{settings.stream.state_prefix}:status"
    proc = _start_worker(env, settings)
    t0 = None
    try:
        while True:
            applied = int(client.hget(status, "applied") or 0)
            if t0 is None and applied > 0:
                t0, a0 = time.perf_counter(), applied  # from the first applied batch: excludes process start-up
            if applied >= len(messages):
                break
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            time.sleep(0.01)
        # Drained: wait until everything is pushed too (the dirty set is empty).
        while client.zcard(f"{settings.stream.state_prefix}:dirty"):
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
        pushed = int(client.hget(status, "pushed") or 0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        store.teardown()
        _cleanup(client, tag)
    return {
        "events": len(messages) - a0,
        "seconds": seconds,
        "events_per_s": (len(messages) - a0) / seconds,
        "pairs_pushed": pushed,
    }


def lag_at(client, redis_url: str, messages: list[dict], rate: float, seconds: float) -> dict:
    tag = uuid.uuid4().hex[:8]
    settings, env = _settings(redis_url, tag)
    store = _prepare(settings)
    key = settings.stream.stream_key
    status = f"{settings.stream.state_prefix}:status"
    proc = _start_worker(env, settings)
    deadline = time.monotonic() + 120
    while not client.hexists(status, "heartbeat_us"):  # worker start-up (imports, registry) is not lag
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("stream worker did not start: " + proc.stderr.read().decode()[-2000:])
        time.sleep(0.05)
    total = int(rate * seconds)
    probes: dict[str, float] = {}
    lags: list[float] = []
    stop = threading.Event()
    last_ts = [messages[0]["event_ts"]]

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
                    entity_rows=[{"user_id": u, "ad_id": "probe-ad"} for u in users],
                ).to_dict()
                now = time.perf_counter()
                for u, counts in zip(users, out["imp_counts"], strict=True):
                    if counts:
                        lags.append(now - pending.pop(u))
            time.sleep(0.005)

    thread = threading.Thread(target=prober, daemon=True)
    thread.start()
    sent = 0
    started = time.perf_counter()
    next_probe = started
    chunk = max(50, int(rate / 100))  # ~10 ms of events per round trip
    try:
        while sent < total:
            batch = [dict(messages[(sent + j) % len(messages)], event_id=f"{tag}-{sent + j}") for j in range(chunk)]
            probe = None
            now = time.perf_counter()
            if now >= next_probe:
                next_probe = now + 0.05
                probe = f"probe-{sent}"
                last_ts[0] = batch[-1]["event_ts"]
                batch.append(
                    {
                        **batch[-1],
                        "event_id": f"{tag}-p{sent}",
                        "event_type": "impression",
                        "user_id": probe,
                        "ad_id": "probe-ad",
                    }
                )
            pipe = client.pipeline(transaction=False)
            for m in batch:
                pipe.xadd(key, m)
            t_send = time.perf_counter()
            pipe.execute()
            if probe:
                probes[probe] = t_send
            sent += chunk
            due = started + sent / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        produced_s = time.perf_counter() - started
        deadline = time.perf_counter() + 60
        while (probes or thread.is_alive()) and time.perf_counter() < deadline:
            stop.set()
            thread.join(timeout=0.5)
        applied = int(client.hget(status, "applied") or 0)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)
        store.teardown()
        _cleanup(client, tag)
    return {
        "rate": rate,
        "produced_per_s": sent / produced_s,
        "applied": applied,
        "probes": len(lags),
        "lag_p50_s": statistics.median(lags) if lags else float("nan"),
        "lag_p99_s": _quantile(lags, 0.99),
        "lag_max_s": max(lags) if lags else float("nan"),
    }


def main() -> None:
    import redis

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rates", default="5000,10000,20000,30000")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--redis", default="127.0.0.1:6379")
    args = parser.parse_args()
    host, port = args.redis.split(":")
    client = redis.Redis(host=host, port=int(port))
    messages = _events(args.events)
    print(f"{len(messages)} simulator events", flush=True)
    fl = floor(client, messages)
    print("floor", fl, flush=True)
    dr = drain(client, args.redis, messages)
    print("drain", dr, flush=True)
    lags = []
    for rate in [float(r) for r in args.rates.split(",")]:
        res = lag_at(client, args.redis, messages, rate, args.seconds)
        print("lag", res, flush=True)
        lags.append(res)
    load = os.getloadavg()
    rows = [
        ["raw XADD (pipelined 500)", f"{fl['xadd_per_s']:,.0f}", ""],
        ["raw XREADGROUP+XACK (2000/read): floor", f"{fl['xreadgroup_xack_per_s']:,.0f}", "1.00x"],
        [
            "freqcap stream worker, drain (parse, dedup, buckets, ack, push)",
            f"{dr['events_per_s']:,.0f}",
            f"{dr['events_per_s'] / fl['xreadgroup_xack_per_s']:.2f}x",
        ],
    ]
    body = (
        f"{len(messages):,} simulator events (20 k users x 14 d world), Redis {args.redis}, load avg "
        f"{load[0]:.1f}/{load[1]:.1f}. Throughput (events/s, one worker process):\n\n"
        + table(["path", "events/s", "vs floor"], rows)
        + f"\n\nDrain pushed {dr['pairs_pushed']:,} pair rows to Feast's Redis layout in {dr['seconds']:.1f} s.\n\n"
        "End-to-end lag, event XADD -> visible through Feast `get_online_features` on the stream view "
        f"(probe events every ~50 ms, {args.seconds:.0f} s per rate):\n\n"
        + table(
            ["target rate/s", "produced/s", "probes", "lag p50 s", "lag p99 s", "lag max s"],
            [
                [
                    f"{r['rate']:,.0f}",
                    f"{r['produced_per_s']:,.0f}",
                    r["probes"],
                    f"{r['lag_p50_s']:.3f}",
                    f"{r['lag_p99_s']:.3f}",
                    f"{r['lag_max_s']:.3f}",
                ]
                for r in lags
            ],
        )
    )
    write_result("stream", "Streaming worker: throughput and end-to-end lag", body)
    (RESULTS / "stream.json").write_text(
        json.dumps({"floor": fl, "drain": dr, "lag": lags, "recorded": datetime.now(UTC).isoformat()}, indent=2)
    )


if __name__ == "__main__":
    main()
