"""Online read benchmark: the feature fetch of `decide`, beside the floor and Feast's standard path, same run.

For 1, 10, 100 and 300 candidates (per 100 candidates: 100 ads, 20 campaigns, 5 advertisers), p50/p99 of
* floor: a raw pipelined redis-py HMGET (`pipeline(transaction=False)`) of exactly the keys and hash fields the
  fast reader asks for (keys built beforehand, replies not decoded): the floor (what any client must do);
* strict floor: the same HMGETs pre-packed as RESP bytes, one write, one `read_response` per reply (what the fast
  reader's transport does, minus building keys and decoding values): redis-py's per-command bookkeeping removed;
* fast: `RedisFeatureReader.read` (keys built, one pipelined round trip, values decoded into a `UserState`);
* fast + decide: the reader plus the policy engine's `decide` (the whole in-process decision);
* feast: `FeastReader.read` (Feast's `get_online_features`, one call per request).
The reader's memo of decoded values is cleared before every request (no cross-request cache hits).
The data are real: simulated events -> `build_features` -> snapshot -> Feast `materialize` into Redis.
Variants are interleaved request by request (same user and candidates for each), so load on the box hits all alike.

    .venv/bin/python benchmarks/bench_online_read.py [--iterations 2000 --users 60 --redis 127.0.0.1:6379]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, WORK, table, write_result

SIZES = (1, 10, 100, 300)
ADVERTISERS, CAMPAIGNS_PER_ADV, ADS_PER_CAMPAIGN = 60, 4, 5  # 1200 ads, 240 campaigns
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)

POLICY = {
    "version": "bench",
    "created_at": "2026-10-01T00:00:00Z",
    "penalty": {"onset": 1.0, "at_cap": 0.5, "floor": 0.05},
    "defaults": [
        {"level": "advertiser", "caps": [{"window": "28d", "max": 12}]},
        {"level": "campaign", "caps": [{"window": "24h", "max": 6}, {"window": "7d", "max": 9}]},
        {"level": "ad", "caps": [{"window": "1h", "max": 1}, {"window": "7d", "max": 2}], "min_gap": "30m"},
    ],
    "rules": [
        {
            "match": {"signal_tier": "converter"},
            "level": "ad",
            "caps": [{"window": "28d", "max": 3}],
            "mode": "hard",
            "stop_after_conversion": True,
        }
    ],
}


def catalog() -> list[tuple[str, str, str]]:
    """(ad, campaign, advertiser), grouped by advertiser then campaign."""
    out = []
    for v in range(ADVERTISERS):
        for c in range(CAMPAIGNS_PER_ADV):
            for a in range(ADS_PER_CAMPAIGN):
                out.append((f"ad{v}-{c}-{a}", f"c{v}-{c}", f"v{v}"))
    return out


def write_world(events_dir: Path, users: int, density: float, seed: int) -> int:
    """Events in the 28 days before AS_OF: each user touches ~`density` of the ads (so ~1-density of the
    (user, ad) keys a request asks for are missing, as for ads a user never saw)."""
    import numpy as np
    import pyarrow as pa

    from freqcap.adapters.events_files import write_events

    rng = np.random.default_rng(seed)
    ads = catalog()
    rows: dict[str, list] = {k: [] for k in ("user_id", "ad", "kind", "age")}
    for u in range(users):
        seen = rng.random(len(ads)) < density
        idx = np.flatnonzero(seen)
        n = rng.integers(1, 4, len(idx))
        for i, k in zip(idx, n, strict=True):
            rows["user_id"] += [f"user{u}"] * int(k)
            rows["ad"] += [i] * int(k)
        rows["kind"] += list(rng.choice(["impression"] * 7 + ["click"] * 2 + ["conversion"], int(n.sum())))
        rows["age"] += list(rng.integers(0, 28 * 86400 - 1, int(n.sum())))
    total = len(rows["user_id"])
    ts = [AS_OF - timedelta(seconds=int(s)) for s in rows["age"]]
    table_ = pa.table(
        {
            "event_id": [f"e{i}" for i in range(total)],
            "event_type": rows["kind"],
            "event_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "user_id": rows["user_id"],
            "advertiser_id": [ads[i][2] for i in rows["ad"]],
            "campaign_id": [ads[i][1] for i in rows["ad"]],
            "ad_id": [ads[i][0] for i in rows["ad"]],
            "format": ["feed"] * total,
            "conversion_value": [1.0 if k == "conversion" else None for k in rows["kind"]],
        }
    )
    write_events(table_, events_dir / "part-0.parquet")
    return total


def requests(n_candidates: int, count: int, users: int, seed: int):
    """`count` (user, candidates): ceil(n/20) random advertisers, their campaigns, the first n of their ads."""
    from freqcap.domain.policy.engine import Candidate

    rng = random.Random(seed)
    ads = catalog()
    per_adv = CAMPAIGNS_PER_ADV * ADS_PER_CAMPAIGN
    out = []
    for _ in range(count):
        advs = rng.sample(range(ADVERTISERS), -(-n_candidates // per_adv))
        chosen = [ads[v * per_adv + i] for v in advs for i in range(per_adv)][:n_candidates]
        out.append((f"user{rng.randrange(users + users // 10)}", [Candidate(*x) for x in chosen]))  # ~9% unknown
    return out


def _parts(fields):
    from freqcap.adapters.feast.fast_reader import _hmget_parts

    return _hmget_parts(fields)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=2000, help="requests per size (each variant)")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--density", type=float, default=0.8)
    parser.add_argument("--redis", default=os.environ.get("FREQCAP_BENCH_REDIS", "127.0.0.1:6379"))
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    import redis

    from freqcap.adapters.duckdb.features import build_features
    from freqcap.adapters.feast.fast_reader import RedisFeatureReader, make_reader, pack_hmget
    from freqcap.adapters.feast.reader import FeastReader
    from freqcap.adapters.feast.snapshots import publish_snapshot
    from freqcap.adapters.feast.store import apply_definitions, materialize, open_store
    from freqcap.config import load_settings
    from freqcap.domain.policy import parse_policy
    from freqcap.domain.policy.engine import decide
    from freqcap.layout import offline_root

    root = WORK / "online_read"
    shutil.rmtree(root, ignore_errors=True)
    project = f"bench{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        environ={
            "FREQCAP__DATA_DIR": str(root),
            "FREQCAP__FEAST__ONLINE__KIND": "redis",
            "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": args.redis,
            "FREQCAP__FEAST__PROJECT": project,
        }
    )
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    n_events = write_world(root / "events", args.users, args.density, args.seed)
    build = build_features(root / "events", AS_OF, root / "features", settings.features)
    repo = root / "feast"
    store = open_store(settings, repo)
    publish_snapshot(build, offline_root(repo))
    apply_definitions(store, settings, repo)
    t0 = time.perf_counter()
    materialize(store, AS_OF - timedelta(seconds=1), AS_OF + timedelta(seconds=1))
    materialize_s = time.perf_counter() - t0
    rows = sum(build.rows.values())
    print(f"seeded {rows:,} rows from {n_events:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    try:
        fast = make_reader(store, settings)
        assert isinstance(fast, RedisFeatureReader) and fast.fast_keys
        feast = FeastReader(store, settings.features)
        policy = parse_policy(POLICY)
        host, port = args.redis.split(":")
        raw = redis.Redis(host=host, port=int(port))

        def floor(keys):
            with raw.pipeline(transaction=False) as pipe:
                for key, fields in keys:
                    pipe.hmget(key, fields)
                return pipe.execute()

        def strict_floor(packed: bytes, n: int):
            conn = raw.connection_pool.get_connection()
            try:
                conn.send_packed_command([packed], check_health=False)
                return [conn.read_response() for _ in range(n)]
            finally:
                raw.connection_pool.release(conn)

        results = []
        for n in SIZES:
            reqs = requests(n, args.iterations, args.users, seed=args.seed * 1000 + n)
            # Same answers, and the warm-up: registry caches, connections.
            for user, cands in reqs[:50]:
                assert fast.read(user, cands) == feast.read(user, cands)
            times: dict[str, list[float]] = {v: [] for v in ("floor", "strict", "fast", "fast+decide", "feast")}
            keys_per_req = []
            for user, cands in reqs:
                keys = fast.keys_and_fields(user, cands)
                packed = b"".join(pack_hmget(k, _parts(f)) for k, f in keys)
                assert strict_floor(packed, len(keys)) == floor(keys)
                keys_per_req.append(len(keys))
                order = list(times)
                random.Random(len(keys_per_req)).shuffle(order)
                for variant in order:
                    # No cross-request hits in the reader's decoded-value memo: this world has few users, so
                    # they would repeat far more often than in production.
                    fast.clear_caches()
                    t = time.perf_counter_ns()
                    if variant == "floor":
                        floor(keys)
                    elif variant == "strict":
                        strict_floor(packed, len(keys))
                    elif variant == "fast":
                        fast.read(user, cands)
                    elif variant == "fast+decide":
                        state = fast.read(user, cands)
                        decide(policy, state.audience, state.signal_tier, cands, state.states, AS_OF)
                    else:
                        feast.read(user, cands)
                    times[variant].append((time.perf_counter_ns() - t) / 1e6)
            gc.collect()
            floor_p50, floor_p99 = pct(times["floor"], 0.5), pct(times["floor"], 0.99)
            strict_p50, strict_p99 = pct(times["strict"], 0.5), pct(times["strict"], 0.99)
            for variant, values in times.items():
                p50, p99 = pct(values, 0.5), pct(values, 0.99)
                results.append(
                    {
                        "candidates": n,
                        "keys": round(sum(keys_per_req) / len(keys_per_req), 1),
                        "variant": variant,
                        "iterations": len(values),
                        "p50_ms": round(p50, 3),
                        "p99_ms": round(p99, 3),
                        "p50_vs_floor": round(p50 / floor_p50, 2),
                        "p99_vs_floor": round(p99 / floor_p99, 2),
                        "p50_vs_strict_floor": round(p50 / strict_p50, 2),
                        "p99_vs_strict_floor": round(p99 / strict_p99, 2),
                    }
                )
            print(f"{n} candidates done", file=sys.stderr)
    finally:
        store.teardown()

    labels = {
        "floor": "floor: redis-py pipelined HMGET (same keys and fields)",
        "strict": "strict floor: pre-packed RESP pipeline, no decoding",
        "fast": "freqcap RedisFeatureReader.read",
        "fast+decide": "freqcap read + policy decide (in-process decision)",
        "feast": "FeastReader.read (Feast get_online_features)",
    }
    body = (
        f"Redis {args.redis} (local), Feast 0.67 Redis online store; {rows:,} online rows materialized by Feast "
        f"({args.users} users, each with ~{args.density:.0%} of {len(catalog())} ads; {materialize_s:.0f} s to "
        f"materialize); ~9% of requests for unknown users. {args.iterations} requests per size, variants "
        "interleaved in random order per request; the fast reader's decoded-value memo is cleared before each request; times in ms.\n\n"
    )
    body += table(
        ["candidates", "keys/req", "variant", "p50 ms", "p99 ms", "p50/floor", "p99/floor", "p99/strict floor"],
        [
            [
                r["candidates"],
                r["keys"],
                labels[r["variant"]],
                f"{r['p50_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                f"{r['p50_vs_floor']:.2f}x",
                f"{r['p99_vs_floor']:.2f}x",
                f"{r['p99_vs_strict_floor']:.2f}x",
            ]
            for r in results
        ],
    )
    body += (
        f"\n\nLoad average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after the run on this shared "
        f"{os.cpu_count()}-core box: absolute times scale with it, the ratios (same run, interleaved) much less."
        "\n\nTargets: feature fetch for 100 candidates p99 <= 2x the floor; whole in-process decision "
        "p99 <= 5 ms.\n\nCommand: `.venv/bin/python benchmarks/bench_online_read.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "redis")
        + "`"
    )
    write_result("online_read", "Online read benchmark (decide's feature fetch)", body)
    (RESULTS / "online_read.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "events": n_events,
                "materialize_seconds": materialize_s,
                "args": vars(args),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
