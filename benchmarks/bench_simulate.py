"""Simulator benchmark: ~10 M events (users × days chosen to land near it), written to disk like
`freqcap simulate`.

Each run is a fresh interpreter (peak RSS is that process's own; imports are warmed before the clock starts);
the table shows the median of --repeat runs and the per-stage split of the median run.

    .venv/bin/python benchmarks/bench_simulate.py [--users 138000 --days 14 --seed 7 --repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, peak_rss_mb, run_isolated, table, write_result

HERE = Path(__file__).resolve()


def one(users: int, days: int, seed: int) -> dict:
    import pandas  # noqa: F401  (pyarrow imports it lazily on first use: keep that out of the clock)
    import pyarrow as pa

    from freqcap.adapters.simulation_files import simulate_to_dir
    from freqcap.config import SimulationConfig

    pa.array([0])
    out = Path(tempfile.mkdtemp(prefix="freqcap-bench-simulate-"))
    started = time.perf_counter()
    summary = simulate_to_dir(out, SimulationConfig(users=users, days=days, seed=seed))
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (out / "events").rglob("*.parquet"))
    truth_size = sum(p.stat().st_size for p in (out / "truth").rglob("*.parquet"))
    result = {
        "events": summary.events,
        "impressions": summary.impressions,
        "clicks": summary.clicks,
        "conversions": summary.conversions,
        "seconds": seconds,
        "simulate_seconds": summary.simulate_seconds,
        "write_seconds": summary.write_seconds,
        "stages": summary.stage_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "events_mb": size / 2**20,
        "truth_mb": truth_size / 2**20,
    }
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.users, args.days, args.seed)))
        return

    load_before = os.getloadavg()[0]
    runs = [
        run_isolated(HERE, "--users", str(args.users), "--days", str(args.days), "--seed", str(args.seed))
        for _ in range(max(1, args.repeat))
    ]
    runs.sort(key=lambda r: r["seconds"])
    mid = runs[len(runs) // 2]
    seconds = median([r["seconds"] for r in runs])
    main_table = table(
        ["events", "impressions", "clicks", "conversions", "seconds", "events/s", "peak RSS (MB)",
         "events on disk (MB)", "truth on disk (MB)"],
        [[
            f"{mid['events']:,}", f"{mid['impressions']:,}", f"{mid['clicks']:,}", f"{mid['conversions']:,}",
            f"{seconds:.1f}", f"{mid['events'] / seconds:,.0f}", f"{mid['peak_rss_mb']:,.0f}",
            f"{mid['events_mb']:,.0f}", f"{mid['truth_mb']:,.0f}",
        ]],
    )  # fmt: skip
    stages = table(["stage", "seconds"], [[name, f"{sec:.2f}"] for name, sec in mid["stages"].items()])
    body = (
        f"`simulate_to_dir` with users={args.users:,}, days={args.days}, seed={args.seed}; "
        f"median of {len(runs)} run(s), each in a fresh interpreter with imports warmed "
        f"(1-minute load average before the runs: {load_before:.2f}; other work on the machine slows it).\n\n"
        f"{main_table}\n\nStages of that run (model stages first, then building the event table and writing "
        f"every file: events, users, ads, truth, ground_truth.json):\n\n{stages}"
    )
    write_result("simulate", "Simulator benchmark", body)


if __name__ == "__main__":
    main()
