"""Feature build engines: DuckDB (in process) vs Spark (`local[2]`) on the same simulated events.

Both engines write the same tables (tests/integration/test_spark_features.py holds them equal; this script checks
it again at scale). Per run, in a fresh process each: wall time of the build, CPU time (the Python process, plus the
Spark JVM's, read from /proc before it stops), peak memory (VmHWM of the process, plus the JVM's), and for Spark the
session start-up apart from the build. DuckDB is the baseline: the ratio is Spark / DuckDB. Runs are interleaved
so background load hits both alike; the load average is recorded before each run (the machine is shared).

    .venv/bin/python benchmarks/bench_engines.py [--users 138000 --days 14 --seed 11 --repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, WORK, median, peak_rss_mb, run_isolated, table, write_result

HERE = Path(__file__).resolve()


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int) -> float:
    """utime + stime of process `pid` in seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"VmHWM not found for pid {pid}")


def _as_of(world: Path):
    from freqcap.adapters.simulation_files import load_ground_truth
    from freqcap.layout import parse_as_of

    return parse_as_of(load_ground_truth(world)["window"]["end"])


def one(engine: str, world: str, partitions: str) -> dict:
    from freqcap.config import SparkConfig, load_settings

    settings = load_settings(environ={})
    events, as_of = Path(world) / "events", _as_of(Path(world))
    out = WORK / f"engines-{engine}"
    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    if engine == "duckdb":
        from freqcap.adapters.duckdb.features import build_features

        cpu0, t0 = _cpu_self(), time.perf_counter()
        build = build_features(events, as_of, out, settings.features, deduplicate=False)
        return {
            "seconds": time.perf_counter() - t0,
            "cpu": _cpu_self() - cpu0,
            "peak_mb": peak_rss_mb(),
            "rows": build.rows,
            "events": build.events_scanned,
            "load": load,
        }
    from freqcap.adapters.spark.features import build_features_spark
    from freqcap.adapters.spark.runtime import spark_session

    config = SparkConfig(**{**settings.features.spark.model_dump(), "shuffle_partitions": int(partitions)})
    t_start = time.perf_counter()
    with spark_session(config) as spark:
        jvm = int(spark._jvm.java.lang.ProcessHandle.current().pid())  # the driver JVM (local mode: all of Spark)
        startup = time.perf_counter() - t_start
        cpu0, jvm0, t0 = _cpu_self(), _proc_cpu(jvm), time.perf_counter()
        build = build_features_spark(spark, events, as_of, out, settings.features, deduplicate=False)
        seconds = time.perf_counter() - t0
        cpu = (_cpu_self() - cpu0) + (_proc_cpu(jvm) - jvm0)
        jvm_peak = _proc_hwm_mb(jvm)
    return {
        "seconds": seconds,
        "startup": startup,
        "cpu": cpu,
        "peak_mb": peak_rss_mb() + jvm_peak,
        "jvm_peak_mb": jvm_peak,
        "rows": build.rows,
        "events": build.events_scanned,
        "load": load,
    }


def _compare_outputs() -> list[list[object]]:
    """Per table at scale: rows only one engine wrote (all columns but the decayed sum), and the largest relative
    difference of the decayed sums joined on the key."""
    import duckdb

    con = duckdb.connect()
    found = []
    for table_name in ("user_advertiser", "user_campaign", "user_ad", "user"):
        a, b = (f"read_parquet('{WORK / f'engines-{e}' / f'{table_name}.parquet'}')" for e in ("duckdb", "spark"))
        cols = "* EXCLUDE (imp_decayed)" if table_name != "user" else "*"
        only = con.sql(
            f"SELECT (SELECT count(*) FROM (SELECT {cols} FROM {a} EXCEPT ALL SELECT {cols} FROM {b})) + "
            f"(SELECT count(*) FROM (SELECT {cols} FROM {b} EXCEPT ALL SELECT {cols} FROM {a}))"
        ).fetchall()[0][0]
        rel = 0.0
        if table_name != "user":
            key = f"{table_name.removeprefix('user_')}_id"
            rel = con.sql(
                f"SELECT coalesce(max(abs(x.imp_decayed - y.imp_decayed) / greatest(abs(x.imp_decayed), 1e-300)), 0) "
                f"FROM {a} x JOIN {b} y USING (user_id, {key})"
            ).fetchall()[0][0]
        found.append([table_name, only, f"{rel:.1e}"])
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs="*")
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(*args.one)))
        return

    from freqcap.adapters.simulation_files import simulate_to_dir
    from freqcap.config import SimulationConfig

    WORK.mkdir(parents=True, exist_ok=True)
    world = WORK / f"world-{args.users}-{args.days}-{args.seed}"
    if not (world / "ground_truth.json").exists():
        print(f"simulating {args.users} users x {args.days} days ...", flush=True)
        simulate_to_dir(world, SimulationConfig(users=args.users, days=args.days, seed=args.seed))
    runs: dict[str, list[dict]] = {"duckdb": [], "spark": []}
    for i in range(args.repeat):
        for engine in runs:  # interleaved
            runs[engine].append(run_isolated(HERE, engine, str(world), str(args.shuffle_partitions)))
            r = runs[engine][-1]
            print(f"  run {i + 1} {engine}: {r['seconds']:.1f}s cpu {r['cpu']:.1f}s load {r['load']:.2f}", flush=True)
    assert runs["spark"][0]["rows"] == runs["duckdb"][0]["rows"], (runs["spark"][0]["rows"], runs["duckdb"][0]["rows"])
    events = runs["duckdb"][0]["events"]

    def med(engine: str, key: str) -> float:
        return median([r[key] for r in runs[engine]])

    base = {k: med("duckdb", k) for k in ("seconds", "cpu", "peak_mb")}
    rows = []
    for engine, label in (
        ("duckdb", "DuckDB (threads=2)"),
        ("spark", f"Spark local[2], {args.shuffle_partitions} shuffle partitions"),
    ):
        s, cpu, mb = med(engine, "seconds"), med(engine, "cpu"), med(engine, "peak_mb")
        rows.append(
            [
                label,
                f"{s:.1f}",
                f"{max(r['seconds'] for r in runs[engine]):.1f}",
                f"{cpu:.1f}",
                f"{cpu / events * 1e9:.0f}",
                f"{mb:.0f}",
                f"{s / base['seconds']:.2f}x",
                f"{cpu / base['cpu']:.2f}x",
                f"{mb / base['peak_mb']:.2f}x",
            ]
        )
    loads = [f"{r['load']:.2f}" for i in range(args.repeat) for r in (runs["duckdb"][i], runs["spark"][i])]
    body = (
        f"Command: `.venv/bin/python benchmarks/bench_engines.py --users {args.users} --days {args.days} "
        f"--seed {args.seed} --repeat {args.repeat} --shuffle-partitions {args.shuffle_partitions}`\n\n"
        f"Events in the 28-day window: {events:,} ({args.users:,} simulated users x {args.days} days, seed {args.seed}); "
        f"the features job's build (`deduplicate=False`: validated events), all four tables written. Median of "
        f"{args.repeat} interleaved runs, each in a fresh process; the ratio is against DuckDB in the same run.\n\n"
        + table(
            [
                "engine",
                "build s (median)",
                "build s (max)",
                "CPU s",
                "CPU ns / event",
                "peak MB",
                "wall vs DuckDB",
                "CPU vs DuckDB",
                "memory vs DuckDB",
            ],
            rows,
        )
        + f"\n\nSpark start-up (JVM and SparkSession, not in the build time): median {med('spark', 'startup'):.1f} s. "
        f"Spark's peak is the Python process's plus the driver JVM's (median JVM peak {med('spark', 'jvm_peak_mb'):.0f} MB; "
        f"`spark.driver.memory=2g`). CPU time is user + system of both processes.\n\n"
        f"Load average (1 min) before each run, in run order (DuckDB, Spark, ...): {', '.join(loads)}. The machine has "
        f"2 cores and was shared with other work, so absolute times carry noise; the ratios come from interleaved runs.\n\n"
        "## Same tables at scale\n\nRows that only one engine wrote (every column but the decayed sum), and the largest "
        "relative difference of the decayed sums on the same key (floating-point summation order):\n\n"
        + table(["table", "rows in one engine only", "max relative diff, imp_decayed"], _compare_outputs())
        + "\n"
    )
    write_result("engines", "Feature build: DuckDB vs Spark", body)
    (RESULTS / "engines.json").write_text(  # machine-readable beside the .md (benchmarks/capacity_plan.py)
        json.dumps(
            {
                "events": events,
                "duckdb_seconds": med("duckdb", "seconds"),
                "spark_seconds": med("spark", "seconds"),
                "duckdb_cpu_ns_per_event": med("duckdb", "cpu") / events * 1e9,
                "spark_cpu_ns_per_event": med("spark", "cpu") / events * 1e9,
                "duckdb_peak_mb": med("duckdb", "peak_mb"),
                "spark_peak_mb": med("spark", "peak_mb"),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
