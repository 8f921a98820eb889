"""A scaled world end to end on one machine: each step's wall time, CPU time, peak memory and output size.

`--scale S` simulates S x the default world (20 k users x 14 d): simulate, validate (Great Expectations),
features on DuckDB and on Spark, materialize to Redis (a private redis-server on a free port, stopped by its PID),
backfill daily snapshots, point-in-time training set (Feast), training-set validation, XGBoost training (MLflow
logging), curves, and a short serving benchmark against the materialized store. Every step runs as its own
subprocess (`--step NAME`, own process group) with a timeout; the parent measures:

* wall seconds; CPU seconds (user + system of the step and every descendant it waited for, from `wait4`);
* peak RSS: the largest single process (`ru_maxrss`) and the peak of the whole process tree's summed RSS,
  sampled every 0.25 s (Spark's JVM and serving's workers are children of the step);
* output size on disk; the machine's 1-minute load average before and after.

On a failure or timeout the run stops at that step and records which step broke first, why (exit status, the
last lines of its stderr, memory / time at that point) and a proposed fix.

    nice -n 15 .venv/bin/python benchmarks/bench_world.py --scale 1 [--root WORK_DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, table, write_result

HERE = Path(__file__).resolve()
BASE_USERS = 20_000
# In run order. Spark, the comparison engine and the slowest step on one machine, runs last so that a deadline
# stops it rather than the steps after it.
STEPS = (
    "simulate",
    "validate",
    "features_duckdb",
    "materialize",
    "backfill",
    "training_set",
    "validate_training",
    "train",
    "curves",
    "serve",
    "features_spark",
)
# What each step reads: a step whose input broke is skipped, the others still run.
NEEDS = {
    "validate": ("simulate",),
    "features_duckdb": ("validate",),
    "features_spark": ("validate",),
    "materialize": ("features_duckdb",),
    "backfill": ("validate",),
    "training_set": ("backfill",),
    "validate_training": ("training_set",),
    "train": ("validate_training",),
    "curves": ("validate",),
    "serve": ("materialize", "curves"),
}
QUIET_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",  # XGBoost's OpenMP threads must not spin on a shared box
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "False",
    "FEAST_USAGE": "False",
}


# --- in the step's own process ------------------------------------------------------------------------------------


def _settings(root: Path, redis_port: int, **extra: str):
    from freqcap.config import load_settings

    env = {
        "FREQCAP__DATA_DIR": str(root / "data"),
        "FREQCAP__FEAST__PROJECT": "world",
        "FREQCAP__FEAST__ONLINE__KIND": "redis",
        "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
        "FREQCAP__VALIDATION__DATA_DOCS": "false",
    }
    env.update(extra)
    return load_settings(environ=env)


def _load(root: Path, step: str) -> dict:
    return json.loads((root / "steps" / f"{step}.json").read_text())


def _window(world: Path):
    from freqcap.adapters.simulation_files import load_ground_truth
    from freqcap.layout import parse_as_of

    w = load_ground_truth(world)["window"]
    return parse_as_of(w["start"]), parse_as_of(w["end"])


def run_step(step: str, root: Path, users: int, days: int, seed: int, redis_port: int, requests: int) -> dict:
    """Run one step in this process and return its own numbers (rows, events, ...)."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    world = root / "world"
    settings = _settings(root, redis_port)
    if step == "simulate":
        from freqcap.adapters.simulation_files import simulate_to_dir
        from freqcap.config import SimulationConfig

        summary = simulate_to_dir(world, SimulationConfig(users=users, days=days, seed=seed))
        return {"events": summary.to_dict().get("events"), "outputs": [str(world)]}
    start, as_of = _window(world)
    if step == "validate":
        from freqcap.jobs.features import validate_events_job

        r = validate_events_job(str(world / "events"), as_of.isoformat(), settings, str(world / "ads.parquet"))
        keep = ("total_rows", "clean_rows", "invalid_rows", "duplicates_removed", "clean_path", "as_of", "success")
        out = {k: r.get(k) for k in keep}
        return {**out, "outputs": [str(Path(r["clean_path"]).parent)]}
    clean = _load(root, "validate")["clean_path"]
    users_path = str(world / "users.parquet")
    if step in ("features_duckdb", "features_spark"):
        from freqcap.jobs.features import build_features_job

        if step == "features_spark":
            # Its own data directory: the same as-of run folder would otherwise be shared with DuckDB's tables.
            settings = _settings(root / "spark", redis_port, FREQCAP__FEATURES__ENGINE="spark")
        build = build_features_job(clean, as_of.isoformat(), settings, users=users_path)
        out_dir = Path(next(iter(build["paths"].values()))).parent
        return {**build, "outputs": [str(out_dir)]}
    if step == "materialize":
        import redis

        from freqcap.jobs.features import materialize_job

        client = redis.Redis(port=redis_port)
        before = client.info("memory")["used_memory"]
        r = materialize_job(_load(root, "features_duckdb"), settings)
        info = client.info("memory")
        return {
            **{k: v for k, v in r.items() if isinstance(v, int | float | str | bool)},
            "redis_used_memory_growth": info["used_memory"] - before,
            "redis_keys": client.dbsize(),
            "outputs": [],
        }
    if step == "backfill":
        from freqcap.domain.training.config import ConversionModelConfig
        from freqcap.jobs.training import backfill_snapshots_job

        end = as_of - timedelta(seconds=ConversionModelConfig().label.horizon_seconds)
        r = backfill_snapshots_job(clean, start.isoformat(), end.isoformat(), settings, users=users_path)
        return {"snapshots": len(r.get("published", [])), "rows": r.get("rows"), "outputs": []}
    if step == "training_set":
        from freqcap.jobs.training import build_training_set_job

        r = build_training_set_job(clean, as_of.isoformat(), settings, users=users_path)
        return {**r, "outputs": [str(Path(r["path"]).parent)]}
    if step == "validate_training":
        from freqcap.jobs.training import validate_training_set_job

        r = validate_training_set_job(_load(root, "training_set"), settings)
        return {k: v for k, v in r.items() if isinstance(v, int | float | str | bool)} | {"outputs": []}
    if step == "train":
        from freqcap.jobs.training import train_job

        r = train_job(_load(root, "training_set"), settings, validation=_load(root, "validate_training"))
        keep = ("run_id", "best_iteration", "curve_rows", "valid_metrics", "seconds")
        return {k: r.get(k) for k in keep} | {"outputs": [str(root / "data" / "mlflow")]}
    if step == "curves":
        from freqcap.jobs.curves import fit_curves_to_dir

        out = root / "curves"
        s = fit_curves_to_dir(Path(clean), out, users=Path(users_path), features=settings.features, deduplicate=False)
        d = s.to_dict()
        return {"policy_version": d.get("policy_version"), "policy": d["paths"]["policy"], "outputs": [str(out)]}
    if step == "serve":
        return serve_bench(root, world, redis_port, requests)
    raise ValueError(f"unknown step {step!r}")


def serve_bench(root: Path, world: Path, redis_port: int, requests: int) -> dict:
    """`freqcap serve` on the materialized store with the fitted policy; `requests` decisions one at a time."""
    import http.client
    import random
    import secrets
    import statistics

    import pyarrow.parquet as pq

    ads = pq.read_table(world / "ads.parquet").to_pylist()
    user_ids = pq.read_table(world / "users.parquet", columns=["user_id"]).column(0).to_pylist()
    by_adv: dict[str, list[dict]] = {}
    for a in ads:
        by_adv.setdefault(a["advertiser_id"], []).append(a)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREQCAP")}
    env.update(
        {
            "FREQCAP__DATA_DIR": str(root / "data"),
            "FREQCAP__FEAST__PROJECT": "world",
            "FREQCAP__FEAST__ONLINE__KIND": "redis",
            "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
            "FREQCAP__SERVING__ADMIN_TOKEN": secrets.token_hex(16),
        }
    )
    policy = _load(root, "curves")["policy"]
    cmd = [str(Path(sys.executable).with_name("freqcap")), "serve", "--port", str(port), "--policy", policy]
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("freqcap serve did not become ready: " + (root / "serve.log").read_text()[-2000:])
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        rng = random.Random(5)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        latencies, degraded = [], 0
        advertisers = sorted(by_adv)
        for _ in range(requests):
            candidates = []
            while len(candidates) < 100:
                candidates += by_adv[rng.choice(advertisers)]
            body = {
                "user_id": rng.choice(user_ids),
                "context": {"format": "feed"},
                "candidates": [{k: a[k] for k in ("ad_id", "campaign_id", "advertiser_id")} for a in candidates[:100]],
            }
            payload = json.dumps(body).encode()
            t = time.perf_counter()
            conn.request("POST", "/v1/decide", payload, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            latencies.append(time.perf_counter() - t)
            if resp.status != 200:
                raise RuntimeError(f"decide answered {resp.status}: {answer}")
            degraded += bool(answer.get("degraded"))
        q = statistics.quantiles(latencies, n=100)
        return {
            "requests": requests,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * q[98],
            "degraded": degraded,
            "outputs": [],
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


# --- in the parent ------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _du(paths: list[str]) -> int:
    total = 0
    for p in map(Path, paths):
        files = [p] if p.is_file() else (p.rglob("*") if p.exists() else [])
        total += sum(f.stat().st_size for f in files if f.is_file())
    return total


def _sample_tree(pid: int, cpu_seen: dict[int, float]) -> int:
    """Summed RSS of the process tree under `pid`; records each process's CPU seconds so far in `cpu_seen`
    (a JVM that its parent never waits for is missing from `wait4`'s figures)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            with p.oneshot():
                total += p.memory_info().rss
                t = p.cpu_times()
                cpu_seen[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(step: str, args: argparse.Namespace, root: Path, redis_port: int) -> dict:
    """Run one step as a subprocess in its own process group; wall, CPU, peak RSS, exit status."""
    cmd = [sys.executable, str(HERE), "--step", step, "--root", args.root, "--scale", str(args.scale)]
    cmd += ["--days", str(args.days), "--seed", str(args.seed), "--redis-port", str(redis_port)]
    cmd += ["--requests", str(args.requests)]
    env = {**os.environ, **QUIET_ENV}
    err_path = root / "logs" / f"{step}.err"
    limit = args.timeout
    if args.deadline:
        limit = min(limit, datetime.fromisoformat(args.deadline).timestamp() - time.time())
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with err_path.open("w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    peak_tree, timed_out, rusage, status = 0, False, None, None
    cpu_seen: dict[int, float] = {}
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_tree = max(peak_tree, _sample_tree(proc.pid, cpu_seen))
        if time.monotonic() - started > limit:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.25)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    out_path = root / "steps" / f"{step}.json"
    result = json.loads(out_path.read_text()) if out_path.exists() and proc.returncode == 0 else {}
    return {
        "step": step,
        "limit_s": limit,
        "ok": proc.returncode == 0 and not timed_out,
        "exit": proc.returncode,
        "timed_out": timed_out,
        "wall_s": wall,
        # wait4 counts the step and the children it waited for; the samples also see children it never waited for
        # (to the last 0.25 s): the larger of the two.
        "cpu_s": max(rusage.ru_utime + rusage.ru_stime, sum(cpu_seen.values())),
        "peak_process_mb": rusage.ru_maxrss / 1024,
        "peak_tree_mb": peak_tree / 2**20,
        "output_bytes": _du(result.get("outputs", [])),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "stderr_tail": "" if proc.returncode == 0 and not timed_out else err_path.read_text()[-3000:],
        "result": {k: v for k, v in result.items() if k != "outputs"},
    }


def diagnose(m: dict) -> tuple[str, str]:
    """Why a step broke (from its exit status and stderr) and a proposed fix."""
    tail = m["stderr_tail"]
    if m["timed_out"]:
        return (
            f"time: still running when stopped after {m['wall_s']:.0f} s (its time limit: the step timeout or "
            f"what was left before the run's deadline; CPU {m['cpu_s']:.0f} s, peak tree {m['peak_tree_mb']:.0f} MB)",
            "run the step on more cores (Spark cluster / more executors) or raise the timeout",
        )
    if m["exit"] == -signal.SIGKILL or "MemoryError" in tail or "OutOfMemory" in tail or "Cannot allocate" in tail:
        return (
            f"memory: killed / out of memory at a peak tree RSS of {m['peak_tree_mb']:.0f} MB",
            "bound the step's memory (DuckDB memory_limit / spill, chunked reads, Spark executors) or a bigger box",
        )
    last = [ln for ln in tail.strip().splitlines() if ln.strip()][-1:] or ["(no stderr)"]
    return f"error: exit {m['exit']}: {last[0][:300]}", "see the step's stderr; fix the error and rerun"


def _fmt_bytes(n: int) -> str:
    return "-" if not n else f"{n / 2**20:,.0f} MB" if n < 2**30 else f"{n / 2**30:,.2f} GB"


def report(run: dict) -> str:
    """One run's section of world.md, from its recorded JSON."""
    runs, skipped, scale, users = run["runs"], run.get("skipped", []), run["scale"], run["users"]
    deadline = run.get("deadline")
    rows = []
    for m in runs:
        r = m["result"]
        note = ""
        if m["step"] == "simulate":
            note = f"{r.get('events', 0):,} events"
        elif m["step"] == "validate":
            note = f"{r.get('clean_rows', 0):,} clean of {r.get('total_rows', 0):,}"
        elif m["step"].startswith("features"):
            note = f"{sum((r.get('rows') or {}).values()):,} rows, {r.get('events_scanned', 0):,} events scanned"
        elif m["step"] == "materialize":
            note = f"{r.get('redis_keys', 0):,} keys, Redis +{r.get('redis_used_memory_growth', 0) / 2**20:,.0f} MB"
        elif m["step"] == "backfill":
            note = f"{r.get('snapshots', 0)} snapshots"
        elif m["step"] == "training_set":
            note = f"{r.get('rows', 0):,} rows"
        elif m["step"] == "validate_training":
            note = f"{r.get('expectations', 0)} expectations, {'passed' if r.get('success') else 'failed'}"
        elif m["step"] == "curves":
            note = f"policy {r.get('policy_version')}"
        elif m["step"] == "train":
            note = f"{(r.get('best_iteration') or 0) + 1} rounds, valid AUC {(r.get('valid_metrics') or {}).get('roc_auc', 0):.3f}"
        elif m["step"] == "serve":
            note = (
                f"{r.get('requests', 0):,} decisions one at a time: p50 {r.get('p50_ms', 0):.2f} ms, p99 "
                f"{r.get('p99_ms', 0):.2f} ms, degraded {r.get('degraded', 0)}"
            )
        if not m["ok"]:
            note = "stopped: its numbers up to that point"
        status = "ok" if m["ok"] else ("TIMEOUT" if m["timed_out"] else f"FAILED (exit {m['exit']})")
        rows.append(
            [
                m["step"],
                status,
                f"{m['wall_s']:.1f}",
                f"{m['cpu_s']:.1f}",
                f"{m['peak_process_mb']:,.0f}",
                f"{m['peak_tree_mb']:,.0f}",
                _fmt_bytes(m["output_bytes"]),
                f"{m['load_before']:.1f}",
                note,
            ]
        )
    broken = next((m for m in runs if not m["ok"]), None)
    if broken:
        why, fix = diagnose(broken)
        verdict = f"**First step that broke: `{broken['step']}`** — {why}. Proposed fix: {fix}."
    else:
        verdict = "Every step completed."
    if skipped:
        verdict += " Not run: " + "; ".join(f"`{step}` ({why})" for step, why in skipped) + "."
    total_wall = sum(m["wall_s"] for m in runs)
    total_cpu = sum(m["cpu_s"] for m in runs)
    return (
        f"## {scale:g}x: {users:,} users x {run['days']} days\n\nCommand: `{run['command']}`\n\n"
        + (f"Recorded {run['recorded']}. " if run.get("recorded") else "")
        + f"World: {scale:g} x the default ({users:,} users x {run['days']} d, "
        f"seed {run['seed']}). Each step in its own "
        f"process (timeout {run['timeout']:.0f} s{f', the run ends by {deadline}' if deadline else ''}), "
        "run under `nice`; the box has 2 cores and 24 GiB and is shared "
        "with other work, so the load average at each step's start is shown. CPU s: user + system of the step and "
        "its children; peak process: the largest single process (`ru_maxrss`); peak tree: the summed RSS of the "
        "step's process tree (Spark's JVM, serving's workers), sampled every 0.25 s.\n\n"
        + table(
            ["step", "status", "wall s", "CPU s", "peak process MB", "peak tree MB", "output", "load", "what"], rows
        )
        + f"\n\nTotal: {total_wall:,.0f} s wall, {total_cpu:,.0f} s CPU.\n\n{verdict}\n"
        + "".join(f"\nAdded by hand: {note}\n" for note in run.get("notes", []))
    )


def render_all() -> None:
    """results/world.md from every recorded run (results/world-<scale>x.json), smallest world first."""
    runs = [json.loads(p.read_text()) for p in RESULTS.glob("world-*x.json")]
    runs.sort(key=lambda r: r["scale"])
    intro = (
        "Every step of the pipeline on one scaled world, measured as a separate process. The default world is "
        f"{BASE_USERS:,} users x 14 days; a scale multiplies the users (the simulator's per-user activity and its "
        "ad catalog stay the same, so events grow with the users). Outputs live outside the repository and are "
        "deleted after the run.\n\n"
    )
    write_result(
        "world", "A scaled world end to end on one machine", intro + scaling(runs) + "\n".join(report(r) for r in runs)
    )


def scaling(runs: list[dict]) -> str:
    """Each step's CPU seconds and peak tree memory side by side across the recorded scales."""
    if len(runs) < 2:
        return ""
    by = [{m["step"]: m for m in r["runs"]} for r in runs]
    rows = []
    for step in STEPS:
        cells = []
        for measured in by:
            m = measured.get(step)
            cells.append("-" if m is None else f"{m['cpu_s']:,.0f}{'' if m['ok'] else ' (stopped)'}")
        for measured in by:
            m = measured.get(step)
            cells.append("-" if m is None else f"{m['peak_tree_mb']:,.0f}")
        rows.append([step, *cells])
    labels = [f"{r['scale']:g}x" for r in runs]
    return (
        "## Across scales\n\nCPU seconds and peak tree memory of each step (details per run below; `-`: not run).\n\n"
        + table(["step", *[f"{x} CPU s" for x in labels], *[f"{x} peak MB" for x in labels]], rows)
        + "\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--root", default="/tmp/freqcap-world", help="outputs (outside the repository)")
    parser.add_argument("--timeout", type=float, default=2400.0, help="seconds per step")
    parser.add_argument(
        "--deadline", help="wall-clock time (ISO, UTC) by which the run must end: a step still running then is stopped"
    )
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset, in order")
    parser.add_argument("--requests", type=int, default=2000, help="decisions in the serve step")
    parser.add_argument("--keep", action="store_true", help="keep the outputs")
    parser.add_argument("--render", action="store_true", help="only rewrite world.md from the recorded runs")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    users = round(BASE_USERS * args.scale)
    root = Path(args.root) / f"scale-{args.scale:g}"

    if args.render:
        render_all()
        return
    if args.step:  # a child: one step, its numbers to steps/<step>.json
        result = run_step(args.step, root, users, args.days, args.seed, args.redis_port, args.requests)
        (root / "steps" / f"{args.step}.json").write_text(json.dumps(result, default=str))
        return

    # The scratch directory is this machine's: the published command names it WORK_DIR.
    argv = ["WORK_DIR" if a == args.root else a for a in sys.argv[1:]]
    command = "nice -n 15 .venv/bin/python benchmarks/bench_world.py " + " ".join(argv)
    steps = [s for s in args.steps.split(",") if s]
    if steps[0] == "simulate":
        shutil.rmtree(root, ignore_errors=True)
    for sub in ("steps", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    runs: list[dict] = []
    skipped: list[tuple[str, str]] = []
    try:
        time.sleep(0.5)
        broken: set[str] = set()
        for step in steps:
            missing = [n for n in NEEDS.get(step, ()) if n in broken]
            late = args.deadline and datetime.fromisoformat(args.deadline).timestamp() <= time.time()
            if missing or late:
                broken.add(step)
                skipped.append((step, f"needs {', '.join(missing)}" if missing else "the run's deadline had passed"))
                print(f"[{time.strftime('%H:%M:%S')}] {step}: not run ({skipped[-1][1]})", flush=True)
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {step} ...", flush=True)
            m = measure(step, args, root, port)
            runs.append(m)
            if not m["ok"]:
                broken.add(step)
            print(
                f"    {'ok' if m['ok'] else 'BROKE'}: {m['wall_s']:.1f} s wall, {m['cpu_s']:.1f} s CPU, peak tree "
                f"{m['peak_tree_mb']:.0f} MB, {m['result']}",
                flush=True,
            )
            if not m["ok"]:
                print(m["stderr_tail"], flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    name = f"world-{args.scale:g}x"
    recorded = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    run = {
        "command": command,
        "recorded": recorded,
        "scale": args.scale,
        "users": users,
        "days": args.days,
        "seed": args.seed,
        "timeout": args.timeout,
        "deadline": args.deadline,
        "runs": runs,
        "skipped": skipped,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(run, indent=2) + "\n")
    render_all()
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
