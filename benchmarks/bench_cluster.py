"""Redis Cluster benchmark: bulk materialization and the 100-candidate read on a 3-master cluster beside one node.

Both stores are started here (same redis-server binary and settings, no persistence): one redis-server, and three
masters joined with `redis-cli --cluster create` (tests/redis_cluster.py). The same world (bench_online_read's:
simulated events -> `build_features` -> one snapshot) is bulk-materialized into each (full write, `--repeat`
times, alternating), then 100-candidate reads are timed, variants interleaved request by request in random order:
* sync: `RedisFeatureReader.read` (one node) vs `RedisClusterFeatureReader.read` (one pipelined write per master,
  every master written before any reply is read);
* async: `AsyncRedisReader.read` vs `AsyncClusterReader.read` on one event loop (what serving runs).
Reported: p50/p99 per variant, the cluster/single ratio of each, and CPU microseconds per read of this process
(thread CPU time; the Redis servers' CPU is not in it). The readers' decoded-value memo is cleared before each read.

    .venv/bin/python benchmarks/bench_cluster.py [--iterations 2000 --users 200 --density 0.8 --repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.redis_cluster: the local cluster launcher
from _common import RESULTS, WORK, table, write_result
from bench_online_read import AS_OF, catalog, pct, requests, write_world

CANDIDATES = 100


def _redis_cpu(ports: list[int]) -> float:
    """CPU seconds (user + sys) the redis-servers on `ports` have used so far."""
    import redis

    total = 0.0
    for port in ports:
        info = redis.Redis(port=port).info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def _settings(root: Path, kind: str, connection: str, project: str):
    from freqcap.config import load_settings

    return load_settings(
        environ={
            "FREQCAP__DATA_DIR": str(root),
            "FREQCAP__FEAST__ONLINE__KIND": kind,
            "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": connection,
            "FREQCAP__FEAST__PROJECT": project,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=2000, help="100-candidate reads per variant")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--density", type=float, default=0.8)
    parser.add_argument("--repeat", type=int, default=3, help="full bulk writes per store")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    from freqcap.adapters.duckdb.features import build_features
    from freqcap.adapters.feast.async_cluster import AsyncClusterReader, async_reader_for
    from freqcap.adapters.feast.async_redis import AsyncRedisReader
    from freqcap.adapters.feast.bulk import bulk_materialize, clear_online_state
    from freqcap.adapters.feast.fast_reader import RedisClusterFeatureReader, RedisFeatureReader, make_reader
    from freqcap.adapters.feast.snapshots import publish_snapshot
    from freqcap.adapters.feast.store import apply_definitions, open_store
    from freqcap.layout import offline_root
    from tests.integration.serving_support import RedisServer
    from tests.redis_cluster import LocalRedisCluster

    root = WORK / "cluster"
    shutil.rmtree(root, ignore_errors=True)
    load_before = os.getloadavg()[0]
    single = RedisServer().start()
    cluster = LocalRedisCluster(workdir=root / "cluster").start()
    project = f"bench{uuid.uuid4().hex[:8]}"
    stores = {
        "single": (_settings(root / "single", "redis", single.address, project), [single.port]),
        "cluster": (_settings(root / "cluster", "redis_cluster", cluster.connection_string, project), cluster.ports),
    }
    try:
        n_events = write_world(root / "events", args.users, args.density, args.seed)
        settings0 = stores["single"][0]
        build = build_features(root / "events", AS_OF, root / "features", settings0.features)
        rows = sum(build.rows.values())
        opened = {}
        for name, (settings, _) in stores.items():
            repo = root / name / "feast"
            store = open_store(settings, repo)
            snaps = publish_snapshot(build, offline_root(repo))
            apply_definitions(store, settings, repo)
            opened[name] = (store, snaps)

        # Bulk materialization: full writes, alternating stores, the state cleared before each (a full rewrite).
        bulk: dict[str, list[dict]] = {name: [] for name in stores}
        for _ in range(args.repeat):
            for name, (settings, ports) in stores.items():
                store, snaps = opened[name]
                clear_online_state(store, settings, list(snaps))
                cpu, redis_cpu, t = time.process_time(), _redis_cpu(ports), time.perf_counter()
                report = bulk_materialize(store, settings, snaps, AS_OF, incremental=False)
                wall = time.perf_counter() - t
                bulk[name].append(
                    {
                        "seconds": wall,
                        "rows": report.rows_written,
                        "cpu_us_per_row": (time.process_time() - cpu) / report.rows_written * 1e6,
                        "redis_cpu_us_per_row": (_redis_cpu(ports) - redis_cpu) / report.rows_written * 1e6,
                    }
                )
                print(f"bulk {name}: {report.rows_written:,} rows in {wall:.2f} s", file=sys.stderr)

        readers = {}
        for name, (settings, _) in stores.items():
            reader = make_reader(opened[name][0], settings)
            assert type(reader) is {"single": RedisFeatureReader, "cluster": RedisClusterFeatureReader}[name]
            readers[name] = reader
        reqs = requests(CANDIDATES, args.iterations, args.users, seed=args.seed * 1000 + CANDIDATES)
        for user, cands in reqs[:50]:  # same answers from both stores (and the warm-up)
            assert readers["single"].read(user, cands) == readers["cluster"].read(user, cands)
        keys_per_master = len(readers["cluster"].topology.current.group(readers["cluster"].prepare_routed(*reqs[0])[3]))

        variants = ("sync single", "sync cluster", "async single", "async cluster")
        times: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}

        async def run() -> None:
            aio = {name: async_reader_for(reader, 4) for name, reader in readers.items()}
            assert type(aio["single"]) is AsyncRedisReader and type(aio["cluster"]) is AsyncClusterReader
            for user, cands in reqs[:50]:
                assert await aio["single"].read(user, cands) == await aio["cluster"].read(user, cands)
            for i, (user, cands) in enumerate(reqs):
                order = list(variants)
                random.Random(i).shuffle(order)
                for variant in order:
                    mode, name = variant.split()
                    readers[name].clear_caches()
                    c, t = time.thread_time_ns(), time.perf_counter_ns()
                    if mode == "sync":
                        readers[name].read(user, cands)
                    else:
                        await aio[name].read(user, cands)
                    times[variant].append((time.perf_counter_ns() - t) / 1e6)
                    cpu[variant].append((time.thread_time_ns() - c) / 1e3)
            for reader in aio.values():
                reader.close()

        gc.collect()
        asyncio.run(run())
        for store, _ in opened.values():
            store.teardown()
    finally:
        cluster.stop()
        single.stop()

    results = []
    for variant in variants:
        mode, name = variant.split()
        base = f"{mode} single"
        results.append(
            {
                "variant": variant,
                "p50_ms": round(pct(times[variant], 0.5), 3),
                "p99_ms": round(pct(times[variant], 0.99), 3),
                "p50_vs_single": round(pct(times[variant], 0.5) / pct(times[base], 0.5), 2),
                "p99_vs_single": round(pct(times[variant], 0.99) / pct(times[base], 0.99), 2),
                "cpu_us_p50": round(pct(cpu[variant], 0.5), 1),
            }
        )
    bulk_rows = []
    for name, runs in bulk.items():
        secs = sorted(r["seconds"] for r in runs)
        median_s = secs[len(secs) // 2]
        bulk_rows.append(
            {
                "store": name,
                "rows": runs[0]["rows"],
                "median_s": round(median_s, 2),
                "rows_per_s": round(runs[0]["rows"] / median_s),
                "cpu_us_per_row": round(sorted(r["cpu_us_per_row"] for r in runs)[len(runs) // 2], 2),
                "redis_cpu_us_per_row": round(sorted(r["redis_cpu_us_per_row"] for r in runs)[len(runs) // 2], 2),
            }
        )
    single_s = bulk_rows[0]["median_s"]
    load_after = os.getloadavg()[0]
    body = (
        f"One redis-server vs a 3-master Redis Cluster (redis-server {_version()}, both local, no persistence), "
        f"same world: {rows:,} online rows from {n_events:,} events ({args.users} users, each with "
        f"~{args.density:.0%} of {len(catalog())} ads). A 100-candidate request reads "
        f"{len(readers['single'].keys_and_fields(*reqs[0]))} keys, spread over {keys_per_master} masters.\n\n"
        f"## Bulk materialization (full write, median of {args.repeat}, stores alternating)\n\n"
    )
    body += table(
        ["store", "rows", "median s", "rows/s", "vs single", "client CPU µs/row", "Redis CPU µs/row (all nodes)"],
        [
            [
                r["store"],
                f"{r['rows']:,}",
                r["median_s"],
                f"{r['rows_per_s']:,}",
                f"{r['median_s'] / single_s:.2f}x time",
                r["cpu_us_per_row"],
                r["redis_cpu_us_per_row"],
            ]
            for r in bulk_rows
        ],
    )
    body += f"\n\n## 100-candidate read ({args.iterations} requests per variant, interleaved in random order)\n\n"
    body += table(
        ["variant", "p50 ms", "p99 ms", "p50 vs single", "p99 vs single", "client CPU µs/read (p50)"],
        [
            [
                r["variant"],
                f"{r['p50_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                f"{r['p50_vs_single']:.2f}x",
                f"{r['p99_vs_single']:.2f}x",
                r["cpu_us_p50"],
            ]
            for r in results
        ],
    )
    body += (
        f"\n\nLoad average (1 min) {load_before:.1f} before, {load_after:.1f} after, on this shared "
        f"{os.cpu_count()}-core box (four redis-servers, the client and other jobs share the cores): absolute "
        "times scale with it; the ratios come from the same run, interleaved.\n\n"
        "Goal: 100-candidate read on the 3-node cluster p99 <= 1.5x the single node in the same run.\n\n"
        "Command: `.venv/bin/python benchmarks/bench_cluster.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
        + "`"
    )
    write_result("cluster", "Redis Cluster benchmark (bulk materialization, 100-candidate read)", body)
    (RESULTS / "cluster.json").write_text(
        json.dumps({"rows": rows, "events": n_events, "args": vars(args), "bulk": bulk_rows, "read": results}, indent=2)
        + "\n"
    )
    shutil.rmtree(root, ignore_errors=True)


def _version() -> str:
    import subprocess

    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return next((p.split("=", 1)[1] for p in out.split() if p.startswith("v=")), "?")


if __name__ == "__main__":
    main()
