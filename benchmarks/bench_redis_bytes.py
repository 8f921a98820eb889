"""Bytes per active (user, entity) pair in Redis, and active pairs per user, for the capacity plan.

For each simulated world the real pipeline runs into a private `redis-server` on a free port (no persistence; the
server is stopped by its PID afterwards, nothing is written to a shared Redis): `build_features` as of the world's
last day minus one -> `bulk_materialize` into Feast's Redis layout; then the stream worker replays the last 24 h
into the same server (its views share the pair's hash; its own state lives under `freqcap:stream:*`). Measured:

* active pairs per user, per tier (the rows of each feature table per user: mean, p50, p90, p99) — the input the
  capacity plan scales by the user count;
* bytes per key (`MEMORY USAGE ... SAMPLES 0`, mean over a sample) and `used_memory` growth per key written (the
  allocator's real cost, dict and expiry entries included), batch alone and with the stream views;
* the stream's own state: bytes per dedup mark (the `seen` hashes), per pair-state key, per stream entry.

Worlds: the default world (20 k users x 14 d, the simulator's 40-advertiser catalog) and, because the plan's
worlds carry 10 k campaigns and a 28-day window, a wide-catalog world over 28 days (`--wide-advertisers`
advertisers, ~4 campaigns each) with fewer users.

    .venv/bin/python benchmarks/bench_redis_bytes.py [--users 20000 --wide-users 5000 --wide-advertisers 2500]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, WORK, free_port, key_level, table, write_result

KINDS = ("user", "advertiser", "campaign", "ad")
TIER_TABLES = {"advertiser": "user_advertiser", "campaign": "user_campaign", "ad": "user_ad"}


def _usage(client, keys: list[bytes]) -> list[int]:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return [int(x or 0) for x in pipe.execute()]


def _pairs_per_user(paths: dict[str, Path], users_total: int) -> dict[str, dict[str, float]]:
    """Rows per user in each tier table: mean over users with any row, and over every simulated user."""
    import duckdb

    out = {}
    # A user's impressions in the window: every impression belongs to exactly one ad pair.
    imps = f"SELECT user_id, sum(imp_28d) AS imps FROM read_parquet('{paths['user_ad']}') GROUP BY user_id"
    for level, name in TIER_TABLES.items():
        q = f"""
            WITH per AS (SELECT user_id, count(*) AS n FROM read_parquet('{paths[name]}') GROUP BY user_id),
                 act AS ({imps})
            SELECT count(*), avg(n), quantile_cont(n, 0.5), quantile_cont(n, 0.9), quantile_cont(n, 0.99), sum(n),
                   regr_slope(ln(n), ln(imps)) FILTER (WHERE imps > 0)
            FROM per JOIN act USING (user_id)"""
        users, avg, p50, p90, p99, total, slope = duckdb.sql(q).fetchall()[0]
        out[level] = {
            # d log(pairs) / d log(impressions) across users: how pairs grow with a user's activity.
            "activity_elasticity": float(slope),
            "users_with_pairs": int(users),
            "mean_active": float(avg),
            "p50": float(p50),
            "p90": float(p90),
            "p99": float(p99),
            "pairs": int(total),
            "mean_all_users": float(total) / users_total,
        }
    return out


def _start_redis() -> tuple[subprocess.Popen, int]:
    import redis

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return server, port
        except redis.ConnectionError:
            time.sleep(0.05)
    server.terminate()
    raise RuntimeError("private redis-server did not start")


def measure_world(name: str, users: int, days: int, advertisers: int | None, sample: int) -> dict:
    """Simulate one world, write its online store and stream state into a private Redis, measure bytes."""
    import redis

    from freqcap.adapters.duckdb.features import build_features
    from freqcap.adapters.feast.bulk import bulk_materialize
    from freqcap.adapters.feast.snapshots import publish_snapshot
    from freqcap.adapters.feast.store import apply_definitions, open_store
    from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
    from freqcap.adapters.stream.produce import load_events, produce
    from freqcap.config import SimulationConfig, load_settings
    from freqcap.domain.simulate.params import ModelParams
    from freqcap.jobs.stream import redis_worker
    from freqcap.layout import offline_root, parse_as_of

    params = ModelParams(n_advertisers=advertisers) if advertisers else None
    world = WORK / f"bytes-{users}-{days}-{advertisers or 'default'}"
    if not (world / "ground_truth.json").exists():
        simulate_to_dir(world, SimulationConfig(users=users, days=days, seed=7), params)
    truth = load_ground_truth(world)
    end = parse_as_of(truth["window"]["end"])
    as_of = end - timedelta(days=1)  # batch cut-off; the stream replays (as_of, end]

    server, port = _start_redis()
    url = f"127.0.0.1:{port}"
    client = redis.Redis(port=port)
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        environ={
            "FREQCAP__DATA_DIR": str(WORK / f"bytes-{tag}"),
            "FREQCAP__FEAST__ONLINE__KIND": "redis",
            "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": url,
            "FREQCAP__FEAST__PROJECT": "freqcap",
            "FREQCAP__STREAM__ENABLED": "true",
            "FREQCAP__STREAM__REDIS_URL": url,
            "FREQCAP__STREAM__ALLOWED_LATENESS": "6h",
            # One worker and nobody to take over: a long lease keeps a starved worker (busy box) from losing it.
            "FREQCAP__STREAM__LEASE_TTL": "300s",
        }
    )
    repo = WORK / f"bytes-{tag}" / "feast"
    try:
        store = open_store(settings, repo)
        base = client.info("memory")["used_memory"]
        build = build_features(world / "events", as_of, repo.parent / "features", settings.features)
        pairs = _pairs_per_user(build.paths, truth["counts"]["users"])
        snaps = publish_snapshot(build, offline_root(repo))
        apply_definitions(store, settings, repo)
        bulk_materialize(store, settings, snaps, as_of)
        after_batch = client.info("memory")["used_memory"]
        keys = [k for k in client.scan_iter(count=10_000) if not k.startswith(b"freqcap:")]
        by_kind: dict[str, list[bytes]] = {k: [] for k in KINDS}
        for k in keys:
            by_kind[key_level(k)].append(k)
        rng = random.Random(1)
        picked = {k: rng.sample(v, min(sample, len(v))) for k, v in by_kind.items()}
        batch_bytes = {k: mean(_usage(client, v)) for k, v in picked.items() if v}

        messages = load_events(world / "events", since=as_of, until=end)
        produce(client, settings.stream.stream_key, messages, coverage_start=as_of)
        stream_entry_bytes = (client.memory_usage(settings.stream.stream_key, samples=0) or 0) / max(len(messages), 1)
        before_stream = client.info("memory")["used_memory"]
        with redis_worker(settings, store, consumer="bytes") as worker:
            stats = worker.run(until_caught_up=True)
        after_stream = client.info("memory")["used_memory"]
        if stats.applied != len(messages):  # the per-event figures below divide by what was applied
            raise RuntimeError(f"the stream worker applied {stats.applied:,} of {len(messages):,} events")
        stream_bytes = {k: mean(_usage(client, v)) for k, v in picked.items() if v}
        prefix = settings.stream.state_prefix
        seen_keys = list(client.scan_iter(match=f"{prefix}:*seen:*", count=10_000))
        marks = sum(client.hlen(k) for k in seen_keys)
        seen_bytes = sum(_usage(client, seen_keys))
        state_keys = list(client.scan_iter(match=f"{prefix}:*:s:*", count=10_000))
        state_sample = rng.sample(state_keys, min(sample, len(state_keys)))
        state_bytes = mean(_usage(client, state_sample)) if state_sample else 0.0
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(WORK / f"bytes-{tag}", ignore_errors=True)

    n_keys = sum(len(v) for v in by_kind.values())
    counts = truth["counts"]
    return {
        "name": name,
        "users": users,
        "days": days,
        "advertisers": counts["advertisers"],
        "campaigns": counts["campaigns"],
        "ads": counts["ads"],
        "impressions": counts["impressions"],
        "events": counts["events"],
        "impressions_per_user_day": counts["impressions"] / users / days,
        "events_replayed": len(messages),
        "events_applied": stats.applied,
        "keys": {k: len(v) for k, v in by_kind.items()},
        "pairs_per_user": pairs,
        "batch_bytes_per_key": batch_bytes,
        "with_stream_bytes_per_key": stream_bytes,
        "used_memory_batch": after_batch - base,
        "used_memory_per_key_batch": (after_batch - base) / n_keys,
        "used_memory_stream": after_stream - before_stream,
        "dedup_marks": marks,
        "bytes_per_dedup_mark": seen_bytes / marks if marks else 0.0,
        "stream_pair_states": len(state_keys),
        "bytes_per_pair_state": state_bytes,
        "bytes_per_stream_entry": stream_entry_bytes,
    }


def _report(worlds: list[dict], command: str, load: str) -> str:
    rows_pairs = []
    rows_bytes = []
    for w in worlds:
        label = f"{w['name']}: {w['users']:,} users x {w['days']} d, {w['campaigns']:,} campaigns"
        p = w["pairs_per_user"]
        rows_pairs.append(
            [label, f"{w['impressions_per_user_day']:.1f}"]
            + [
                f"{p[lv]['mean_all_users']:.1f} / {p[lv]['mean_active']:.1f} ({p[lv]['p50']:.0f}, "
                f"{p[lv]['p90']:.0f}, {p[lv]['p99']:.0f}); elasticity {p[lv]['activity_elasticity']:.2f}"
                for lv in TIER_TABLES
            ]
        )
        rows_bytes.append(
            [label]
            + [
                f"{w['batch_bytes_per_key'].get(k, 0):.0f} / {w['with_stream_bytes_per_key'].get(k, 0):.0f}"
                for k in KINDS
            ]
            + [
                f"{w['used_memory_per_key_batch']:.0f}",
                f"{w['bytes_per_dedup_mark']:.1f}",
                f"{w['bytes_per_pair_state']:.0f}",
                f"{w['bytes_per_stream_entry']:.0f}",
            ]
        )
    return (
        f"Command: `{command}`\n\n{load}\n\n"
        "Each world: `build_features` as of its last day minus one, `bulk_materialize` into Feast's Redis layout "
        "in a private redis-server 7 (no persistence), then the stream worker replays the last 24 h into the same "
        "server. Nothing else runs in that server.\n\n"
        "## Active pairs per user (rows of each tier table per user)\n\n"
        "Cells: mean over every simulated user / mean over users with a pair (p50, p90, p99 of those); "
        "elasticity: the slope of log(pairs) on log(impressions in the window) across users — how a user's pairs "
        "grow with their activity (the capacity plan scales pairs per user by it when its users are more active "
        "than the simulator's).\n\n"
        + table(["world", "impressions / user / day", "user x advertiser", "user x campaign", "user x ad"], rows_pairs)
        + "\n\n## Bytes\n\n"
        "Per key kind: `MEMORY USAGE ... SAMPLES 0`, mean over a sample, batch only / with the stream views in the "
        "same hash. `used_memory` per key: growth of `used_memory` over the batch write divided by the keys "
        "written (what the allocator really spent, Redis' dict and expiry entries included). Stream state: bytes "
        "per dedup mark (the `seen` hashes' `MEMORY USAGE` / marks), per pair-state key, per stream entry.\n\n"
        + table(
            [
                "world",
                "user B",
                "user x advertiser B",
                "user x campaign B",
                "user x ad B",
                "used_memory B / key",
                "B / dedup mark",
                "B / stream pair state",
                "B / stream entry",
            ],
            rows_bytes,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--wide-users", type=int, default=5_000)
    parser.add_argument("--wide-days", type=int, default=28)
    parser.add_argument("--wide-advertisers", type=int, default=2_500)
    parser.add_argument("--sample", type=int, default=3000)
    args = parser.parse_args()
    command = ".venv/bin/python benchmarks/bench_redis_bytes.py " + " ".join(sys.argv[1:])
    load_before = os.getloadavg()[0]
    worlds = [
        measure_world("default", args.users, 14, None, args.sample),
        measure_world("wide catalog", args.wide_users, args.wide_days, args.wide_advertisers, args.sample),
    ]
    load = f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores, shared)."
    write_result("redis_bytes", "Redis bytes per active pair and active pairs per user", _report(worlds, command, load))
    (RESULTS / "redis_bytes.json").write_text(json.dumps({"command": command, "worlds": worlds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
