"""Forget benchmark: `forget_users` on a simulated world in Redis, against the floor of any scan-based forget.

The world goes through the real features jobs (validate -> build -> check -> bulk materialize into Redis under a
project of its own) plus a training set, so the data directory holds what a deployment's does: raw and clean
events, the quarantine, feature runs, daily offline snapshots, a training set, the users table. Then batches of
`--batches` sizes are forgotten (different users each time, the busiest first: they are in every store), each
`--repeat` times; the stream's Redis is not visited (no stream here) and the byte search afterwards (`--verify`)
is timed separately on the last batch.

The floor, measured in the same run between the batches: what any forget that finds users by scanning must do at
least — read every Parquet file under the data directory once (`pyarrow.parquet.read_table`) and one `SCAN MATCH
*<project>` over Redis, nothing decoded, nothing written.

    .venv/bin/python benchmarks/bench_forget.py [--users 5000] [--days 14] [--batches 1 10 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, median, table, write_result

REDIS = os.environ.get("FREQCAP_BENCH_REDIS", "127.0.0.1:6379")


def _settings(root: Path, project: str):
    from freqcap.config import load_settings

    return load_settings(
        environ={
            "FREQCAP__DATA_DIR": str(root / "data"),
            "FREQCAP__FEAST__PROJECT": project,
            "FREQCAP__FEAST__ONLINE__KIND": "redis",
            "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": REDIS,
            "FREQCAP__PRIVACY__KEYS__K1": "bench-forget-key-" + "b" * 32,
        }
    )


def build_world(root: Path, settings, users: int, days: int) -> tuple[list[str], dict]:
    """The world through the real jobs; returns the users, busiest first, and what was built."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import yaml

    from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
    from freqcap.config import SimulationConfig
    from freqcap.jobs.features import build_features_job, check_features_job, materialize_job, validate_events_job
    from freqcap.jobs.training import backfill_snapshots_job, build_training_set_job
    from freqcap.layout import DataLayout, parse_as_of
    from freqcap.resources import model_config_path

    layout = DataLayout.of(settings)
    sim = simulate_to_dir(layout.raw_dir, SimulationConfig(users=users, days=days, seed=5))
    events = str(sim.events_dir)
    window = load_ground_truth(layout.raw_dir)["window"]
    start, as_of = parse_as_of(window["start"]), parse_as_of(window["end"])
    config = yaml.safe_load(model_config_path().read_text())
    config["label"]["attribution_window"] = "1d"
    (root / "model.yaml").write_text(yaml.safe_dump(config))
    backfill_snapshots_job(events, (start + timedelta(days=1)).isoformat(), (as_of - timedelta(days=1)).isoformat(), settings)  # fmt: skip
    training = build_training_set_job(events, as_of.isoformat(), settings, model_config=str(root / "model.yaml"))
    report = validate_events_job(events, as_of.isoformat(), settings)
    users_path = str(layout.raw_dir / "users.parquet")
    built = check_features_job(build_features_job(report["clean_path"], as_of.isoformat(), settings, users_path), settings)  # fmt: skip
    materialized = materialize_job(built, settings)
    counts = pc.value_counts(pq.read_table(events, columns=["user_id"]).column("user_id")).to_pylist()
    ranked = [c["values"] for c in sorted(counts, key=lambda c: (-c["counts"], c["values"]))]
    return ranked, {
        "events": sum(c["counts"] for c in counts),
        "online_rows": materialized["rows"],
        "training_rows": training["rows"],
        "parquet_files": sum(1 for _ in layout.root.rglob("*.parquet")),
        "parquet_mb": round(sum(p.stat().st_size for p in layout.root.rglob("*.parquet")) / 1e6, 1),
    }


def floor_seconds(settings) -> tuple[float, int]:
    """Read every Parquet file once + one SCAN of the project's keys: (seconds, keys seen)."""
    import pyarrow.parquet as pq
    import redis

    from freqcap.layout import DataLayout

    root = DataLayout.of(settings).root
    host, port = REDIS.split(":")
    client = redis.Redis(host=host, port=int(port))
    started = time.perf_counter()
    for path in sorted(root.rglob("*.parquet")):
        pq.read_table(path)
    keys = sum(1 for _ in client.scan_iter(match=f"*{settings.feast.project}", count=1000))
    seconds = time.perf_counter() - started
    client.close()
    return seconds, keys


def cleanup(settings) -> None:
    import redis

    host, port = REDIS.split(":")
    client = redis.Redis(host=host, port=int(port))
    for pattern in (f"*{settings.feast.project}", f"*{settings.feast.project}:*"):
        keys = list(client.scan_iter(match=pattern, count=10_000))
        for i in range(0, len(keys), 5_000):
            client.delete(*keys[i : i + 5_000])
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default="forget")
    args = parser.parse_args()

    from freqcap.jobs.forget import forget_users

    root = WORK / f"forget-{uuid.uuid4().hex[:8]}"
    settings = _settings(root, f"bf{uuid.uuid4().hex[:10]}")
    load_before = os.getloadavg()
    try:
        t = time.perf_counter()
        ranked, world = build_world(root, settings, args.users, args.days)
        build_seconds = time.perf_counter() - t
        queue = iter(ranked)
        rows, floors, keys_seen = [], [], 0
        removed_by_store: Counter[str] = Counter()
        for size in args.batches:
            times, removed = [], []
            for _ in range(args.repeat):
                floor, keys_seen = floor_seconds(settings)
                floors.append(floor)
                batch = [next(queue) for _ in range(size)]
                t = time.perf_counter()
                record = forget_users(batch, settings, stream=False, verify=False)
                times.append(time.perf_counter() - t)
                removed.append(record["removed_total"])
                removed_by_store.update(record["counts"])
            rows.append([size, f"{median(times):.2f}", f"{median(times) / size * 1000:.0f}", f"{median(removed):,.0f}",
                         f"{median(floors[-args.repeat:]):.2f}", f"{median(times) / median(floors[-args.repeat:]):.1f}x"])  # fmt: skip
        t = time.perf_counter()
        verify_batch = [next(queue)]
        forget_users(verify_batch, settings, stream=False, verify=True)
        with_verify = time.perf_counter() - t
    finally:
        cleanup(settings)
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()

    body = (
        f"Command: `.venv/bin/python benchmarks/bench_forget.py --users {args.users} --days {args.days} "
        f"--batches {' '.join(map(str, args.batches))} --repeat {args.repeat}`\n\n"
        f"Machine load (1/5/15 min) before {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f}, "
        f"after {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f}.\n\n"
        f"World: {world['events']:,} events, {world['parquet_files']} Parquet files ({world['parquet_mb']} MB) "
        f"under the data directory, {world['online_rows']:,} feature rows materialized into Redis "
        f"({keys_seen:,} online keys of the project at the end), a training set of {world['training_rows']:,} rows; "
        f"built in {build_seconds:.0f} s through the real jobs.\n\n"
        + table(
            [
                "users per forget",
                "forget s (median)",
                "ms per user",
                "rows + keys removed",
                "floor s",
                "forget / floor",
            ],
            rows,
        )
        + "\n\nFloor: every Parquet file under the data directory read once plus one `SCAN MATCH *<project>` of "
        "Redis, measured before each forget (medians of the same repeats). Forget: every store found by scanning, "
        "matching files rewritten atomically, Redis keys decoded with Feast's deserializer and unlinked, the audit "
        f"record appended; `verify=False`. One more forget of 1 user with the byte search afterwards "
        f"(`verify=True`, every file of the data directory read again): {with_verify:.2f} s.\n\n"
        "Removed per store over all runs: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(removed_by_store.items()) if v)
        + "."
    )
    write_result(args.name, "Forgetting users", body)


if __name__ == "__main__":
    main()
