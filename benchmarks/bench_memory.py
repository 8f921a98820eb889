"""Redis memory per (user, entity) key for the default simulated world .

The real pipeline on a private `redis-server` (nothing else in it): simulated world (20 k users x 14 d) ->
`build_features` as of its last day -> `bulk_materialize` into Feast's Redis layout; then the stream worker replays
the world's last 24 h into the same keys (stream views share the pair's hash). Reported:

* total `used_memory` growth, keys per kind (user, user x advertiser/campaign/ad), `MEMORY USAGE` per key
  (median / mean over a sample) after the batch write and after the stream replay;
* what serving never reads: per tier view, `clk_*`, `conv_` of every window but the longest and `imp_decayed`
  (8 of 15 fields), and 4 of the user view's 6 fields. `MEMORY USAGE` of the sampled keys is measured again after
  deleting exactly those fields (HDEL) — the saving of writing only what serving reads, measured, not estimated.

    .venv/bin/python benchmarks/bench_memory.py [--users 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from statistics import mean, median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, WORK, free_port, key_level, table, write_result

KINDS = ("user", "advertiser", "campaign", "ad")


def _unread_fields(store, settings) -> dict[str, list[bytes]]:
    """Per kind, the hash fields of batch features serving never reads (freqcap.adapters.feast.fast_reader)."""
    from feast.infra.online_stores.helpers import _mmh3

    from freqcap.domain.features import USER_TABLE, serving_columns, tier_tables

    user_cols, tiers = serving_columns(settings.features)
    out = {}
    view = store.get_feature_view(USER_TABLE)
    out["user"] = [_mmh3(f"{USER_TABLE}:{f.name}") for f in view.features if f.name not in user_cols]
    for cols, table_ in zip(tiers, tier_tables(settings.features), strict=True):
        view = store.get_feature_view(table_.name)
        out[cols.level] = [_mmh3(f"{table_.name}:{f.name}") for f in view.features if f.name not in cols.features]
    return out


def _usage(client, keys: list[bytes]) -> list[int]:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return [int(x or 0) for x in pipe.execute()]


def main() -> None:
    import redis

    from freqcap.adapters.duckdb.features import build_features
    from freqcap.adapters.feast.bulk import bulk_materialize
    from freqcap.adapters.feast.snapshots import publish_snapshot
    from freqcap.adapters.feast.store import apply_definitions, open_store
    from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
    from freqcap.adapters.stream.produce import load_events, produce
    from freqcap.config import SimulationConfig, load_settings
    from freqcap.jobs.stream import redis_worker
    from freqcap.layout import offline_root, parse_as_of

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--sample", type=int, default=3000)
    args = parser.parse_args()

    world = WORK / f"world-{args.users}-14-7"
    if not (world / "ground_truth.json").exists():
        simulate_to_dir(world, SimulationConfig(users=args.users, days=14, seed=7))
    end = parse_as_of(load_ground_truth(world)["window"]["end"])
    as_of = end - timedelta(days=1)  # batch cut-off; the stream replays (as_of, end]

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"127.0.0.1:{port}"
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        environ={
            "FREQCAP__DATA_DIR": str(WORK / f"memory-{tag}"),
            "FREQCAP__FEAST__ONLINE__KIND": "redis",
            "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": url,
            "FREQCAP__FEAST__PROJECT": "freqcap",
            "FREQCAP__STREAM__ENABLED": "true",
            "FREQCAP__STREAM__REDIS_URL": url,
            "FREQCAP__STREAM__ALLOWED_LATENESS": "6h",
        }
    )
    repo = WORK / f"memory-{tag}" / "feast"
    try:
        store = open_store(settings, repo)
        base = client.info("memory")["used_memory"]
        build = build_features(world / "events", as_of, repo.parent / "features", settings.features)
        snaps = publish_snapshot(build, offline_root(repo))
        apply_definitions(store, settings, repo)
        bulk_materialize(store, settings, snaps, as_of)
        after_batch = client.info("memory")["used_memory"]
        # Feast's entity-key hashes only (not freqcap's own bookkeeping keys such as the bulk state).
        keys = [k for k in client.scan_iter(count=10_000) if not k.startswith(b"freqcap:")]
        by_kind: dict[str, list[bytes]] = {k: [] for k in KINDS}
        for k in keys:
            by_kind[key_level(k)].append(k)
        rng = random.Random(1)
        sample = {k: rng.sample(v, min(args.sample, len(v))) for k, v in by_kind.items()}
        batch_usage = {k: _usage(client, v) for k, v in sample.items()}

        # The stream's last 24 h into the same hashes (its worker state lives under freqcap:stream:*).
        messages = load_events(world / "events", since=as_of, until=end)
        produce(client, settings.stream.stream_key, messages, coverage_start=as_of)
        with redis_worker(settings, store, consumer="mem") as worker:
            stats = worker.run(until_caught_up=True)
        after_stream = client.info("memory")["used_memory"]
        state_keys = sum(1 for _ in client.scan_iter(match=f"{settings.stream.state_prefix}:s:*", count=10_000))
        seen_keys = sum(1 for _ in client.scan_iter(match=f"{settings.stream.state_prefix}:seen:*", count=10_000))
        stream_bytes = client.memory_usage(settings.stream.stream_key, samples=0) or 0
        stream_usage = {k: _usage(client, v) for k, v in sample.items()}

        # Serving-only layout: drop the fields serving never reads from the sampled keys, measure again.
        unread = _unread_fields(store, settings)
        pipe = client.pipeline(transaction=False)
        for kind, ks in sample.items():
            for k in ks:
                pipe.hdel(k, *unread[kind])
        pipe.execute()
        trimmed_usage = {k: _usage(client, v) for k, v in sample.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(WORK / f"memory-{tag}", ignore_errors=True)

    rows = []
    total_batch = total_trim = 0.0
    for kind in KINDS:
        n = len(by_kind[kind])
        b, s_, t = batch_usage[kind], stream_usage[kind], trimmed_usage[kind]
        total_batch += mean(b) * n
        total_trim += mean(t) * n
        rows.append(
            [
                kind if kind == "user" else f"user x {kind}",
                f"{n:,}",
                f"{median(b):.0f}",
                f"{mean(b):.0f}",
                f"{mean(s_):.0f}",
                f"{mean(t):.0f} ({mean(t) / mean(b):.2f}x)",
            ]
        )
    body = (
        f"Default world ({args.users:,} users x 14 d), batch as of {as_of:%Y-%m-%d %H:%M}, stream replaying the "
        f"next 24 h ({stats.applied:,} events). Private redis-server; `MEMORY USAGE ... SAMPLES 0` over up to "
        f"{args.sample:,} keys per kind.\n\n"
        + table(
            ["key", "keys", "batch: median B", "batch: mean B", "+ stream view: mean B", "serving fields only: mean B"],
            rows,
        )
        + "\n\n"
        + table(
            ["total", "MB"],
            [
                ["used_memory growth, batch write", f"{(after_batch - base) / 1e6:.1f}"],
                ["Σ keys x mean MEMORY USAGE, batch", f"{total_batch / 1e6:.1f}"],
                ["same, serving fields only", f"{total_trim / 1e6:.1f}"],
                [
                    "used_memory growth, + stream (views, worker state, dedup marks, stream)",
                    f"{(after_stream - after_batch) / 1e6:.1f}",
                ],
            ],
        )
        + f"\n\nStream worker state: {state_keys:,} pair hashes, {seen_keys:,} dedup marks (expire after "
        f"`dedup_ttl`), the stream itself {stream_bytes / 1e6:.1f} MB (trimmed by the producer's MAXLEN in "
        "production). Unread fields per tier key: `clk_*` (4), `conv_1h/24h/7d` (3), `imp_decayed` (1); user key: "
        "`imp_24h`, `imp_7d`, `clk_28d`, `conv_28d`."
    )
    write_result("memory", "Redis memory per (user, entity) key, default world", body)
    (RESULTS / "memory.json").write_text(
        json.dumps(
            {
                "keys": {k: len(v) for k, v in by_kind.items()},
                "batch_mean_bytes": {k: mean(v) for k, v in batch_usage.items()},
                "stream_mean_bytes": {k: mean(v) for k, v in stream_usage.items()},
                "serving_only_mean_bytes": {k: mean(v) for k, v in trimmed_usage.items()},
                "used_memory_batch": after_batch - base,
                "used_memory_stream": after_stream - after_batch,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
