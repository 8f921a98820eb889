"""Batch features benchmark: 10 M simulated events -> all tiers, beside the floor of one raw DuckDB GROUP BY.

Also records Feast's standard materialization path (rows/s, peak memory) into SQLite and Redis.
Every measurement runs in a fresh interpreter (peak RSS is that process's own); medians of --repeat runs.

    .venv/bin/python benchmarks/bench_features.py [--users 150000 --days 14 --repeat 3 --materialize-rows 200000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, median, peak_rss_mb, run_isolated, table, write_result

HERE = Path(__file__).resolve()


def _as_of(world: Path):
    from freqcap.adapters.simulation_files import load_ground_truth
    from freqcap.layout import parse_as_of

    truth = load_ground_truth(world)
    return parse_as_of(truth["window"]["end"])


def one(kind: str, world: str, extra: str) -> dict:
    import duckdb

    from freqcap.config import load_settings

    settings = load_settings(environ={})
    world_dir = Path(world)
    events = world_dir / "events"
    glob = str(events / "**" / "*.parquet")
    as_of = _as_of(world_dir)
    started = time.perf_counter()
    result: dict = {}
    if kind == "freqcap":
        from freqcap.adapters.duckdb.features import build_features

        build = build_features(events, as_of, WORK / "features-out", settings.features, deduplicate=False)
        result = {"rows": sum(build.rows.values()), "events": build.events_scanned}
    elif kind in ("floor", "naive"):
        con = duckdb.connect()
        con.execute(f"SET threads = {settings.features.threads}")
        con.execute("SET preserve_insertion_order = false")
        src = f"read_parquet('{glob}', hive_partitioning = false)"
        if kind == "floor":
            # The floor: a single raw GROUP BY over the same events, nothing computed but a count.
            q = f"SELECT user_id, ad_id, count(*) AS n FROM {src} GROUP BY ALL"
            con.execute(f"COPY ({q}) TO '{WORK / 'floor.parquet'}' (FORMAT parquet)")
        else:
            # The naive alternative: each tier aggregated separately from the raw events (three scans).
            T = f"TIMESTAMPTZ '{as_of.isoformat()}'"
            for level, h in (("advertiser", 7 * 86400), ("campaign", 3 * 86400), ("ad", 86400)):
                aggs = []
                for p, e in (("imp", "impression"), ("clk", "click"), ("conv", "conversion")):
                    for w, s in (("1h", 3600), ("24h", 86400), ("7d", 604800), ("28d", 2419200)):
                        aggs.append(
                            f"count(*) FILTER (WHERE event_type='{e}' AND event_ts > {T} - INTERVAL {s} SECOND) AS {p}_{w}"
                        )
                aggs.append(
                    f"sum(pow(2, -(epoch({T}) - epoch(event_ts)) / {h})) FILTER (WHERE event_type='impression') AS imp_decayed"
                )
                aggs.append("max(event_ts) FILTER (WHERE event_type='impression') AS last_imp_ts")
                q = (
                    f"SELECT user_id, {level}_id, {', '.join(aggs)} FROM {src} "
                    f"WHERE event_ts > {T} - INTERVAL 28 DAY AND event_ts <= {T} GROUP BY ALL"
                )
                con.execute(f"COPY ({q}) TO '{WORK / f'naive_{level}.parquet'}' (FORMAT parquet)")
        con.close()
    elif kind.startswith("materialize-"):
        import shutil

        import duckdb as ddb

        from freqcap.adapters.feast.snapshots import publish_snapshot
        from freqcap.adapters.feast.store import apply_definitions, materialize, open_store
        from freqcap.domain.features import FeatureBuild
        from freqcap.layout import offline_root

        store_kind = kind.split("-", 1)[1]
        n = int(extra)
        src_dir = WORK / "features-out"
        sub = WORK / f"mat-{store_kind}"
        shutil.rmtree(sub, ignore_errors=True)
        sub.mkdir(parents=True)
        # One view (user_ad) with exactly n rows, so rows/s is per online row written.
        ddb.sql(
            f"COPY (SELECT * FROM read_parquet('{src_dir / 'user_ad.parquet'}') LIMIT {n}) TO '{sub / 'user_ad.parquet'}' (FORMAT parquet)"
        )
        env = {"FREQCAP__FEAST__ONLINE__KIND": store_kind, "FREQCAP__FEAST__PROJECT": f"bench{store_kind}"}
        settings = load_settings(environ=env)
        repo = sub / "feast"
        store = open_store(settings, repo)
        build = FeatureBuild(as_of, {"user_ad": sub / "user_ad.parquet"}, {"user_ad": n}, 0, 0.0)
        publish_snapshot(build, offline_root(repo))
        for other in ("user_advertiser", "user_campaign", "user"):
            (offline_root(repo) / other).mkdir(parents=True, exist_ok=True)
            ddb.sql(
                f"COPY (SELECT * FROM read_parquet('{src_dir / (other + '.parquet')}') LIMIT 0) TO '{offline_root(repo) / other / 'empty.parquet'}' (FORMAT parquet)"
            )
        apply_definitions(store, settings, repo)
        started = time.perf_counter()
        materialize(store, as_of - timedelta(seconds=1), as_of + timedelta(seconds=1), views=["user_ad"])
        result = {"rows": n}
        if store_kind == "redis":
            store.teardown()
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs="*")
    parser.add_argument("--users", type=int, default=150_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--materialize-rows", type=int, default=200_000)
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    if args.one is not None:
        kind, world, *extra = args.one
        print(json.dumps(one(kind, world, extra[0] if extra else "")))
        return

    from freqcap.adapters.simulation_files import simulate_to_dir
    from freqcap.config import SimulationConfig

    WORK.mkdir(parents=True, exist_ok=True)
    world = WORK / f"world-{args.users}-{args.days}-{args.seed}"
    if not (world / "ground_truth.json").exists():
        print(f"simulating {args.users} users x {args.days} days ...", flush=True)
        simulate_to_dir(world, SimulationConfig(users=args.users, days=args.days, seed=args.seed))
    runs: dict[str, list[dict]] = {"floor": [], "freqcap": [], "naive": []}
    for i in range(args.repeat):
        for kind in runs:  # interleaved, so background load hits every variant alike
            runs[kind].append(run_isolated(HERE, kind, str(world)))
            print(f"  run {i + 1} {kind}: {runs[kind][-1]['seconds']:.2f}s", flush=True)
    events = runs["freqcap"][0]["events"]
    floor_s = median([r["seconds"] for r in runs["floor"]])
    rows = []
    for kind, label in (
        ("floor", "floor: one raw GROUP BY (user, ad) count(*)"),
        ("freqcap", "freqcap build_features (3 tiers + user table)"),
        ("naive", "naive: one query per tier from raw events"),
    ):
        s = median([r["seconds"] for r in runs[kind]])
        rss = median([r["peak_rss_mb"] for r in runs[kind]])
        rows.append([label, f"{s:.2f}", f"{events / s / 1e6:.2f}", f"{rss:.0f}", f"{s / floor_s:.2f}x"])
    body = (
        f"Events in the 28-day window: {events:,} ({args.users:,} simulated users x {args.days} days, seed {args.seed}); "
        f"median of {args.repeat} interleaved runs, each in a fresh process; DuckDB threads=2.\n\n"
    )
    body += table(["variant", "seconds (median)", "M events/s", "peak RSS MB", "vs floor"], rows)
    body += f"\n\nfreqcap output rows (all tables): {runs['freqcap'][0]['rows']:,}. Target: freqcap within 1.5x the floor.\n"

    mat_rows = []
    for store_kind in ("sqlite", "redis"):
        if store_kind == "redis" and args.skip_redis:
            continue
        r = run_isolated(HERE, f"materialize-{store_kind}", str(world), str(args.materialize_rows))
        mat_rows.append(
            [
                store_kind,
                f"{r['rows']:,}",
                f"{r['seconds']:.1f}",
                f"{r['rows'] / r['seconds']:,.0f}",
                f"{r['peak_rss_mb']:.0f}",
            ]
        )
    body += (
        "\n## Feast standard materialization (one view, user_ad, 16 features; online_write_batch_size=50000)\n\n"
        + table(["online store", "rows", "seconds", "rows/s", "peak RSS MB"], mat_rows)
        + "\n\nPeak RSS includes the Feast/ibis imports of the process.\n"
    )
    write_result("features", "Batch features benchmark", body)


if __name__ == "__main__":
    main()
