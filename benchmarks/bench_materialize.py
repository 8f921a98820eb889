"""Online materialization benchmark: freqcap's bulk path vs Feast's `materialize` vs the raw-write floor.

One view (`user_ad`: 12 window counts, `imp_decayed`, `last_imp_ts`; two string join keys) with N synthetic rows
shaped like `build_features` output. Per online store:

* **bulk** — `freqcap.adapters.feast.bulk.bulk_materialize`, full write of N rows (then an incremental run against a second
  snapshot in which `--changed` of the rows differ); on SQLite once per write strategy (`sqlite_strategy`: upsert in
  place, and rebuild of the table in one transaction), each in its own process, for every `--changed` share given;
* **floor** — the same bytes with nothing computed: Redis, the RESP of the bulk path's HSET+EXPIRE commands built
  before the clock starts and streamed over one pipelined connection; SQLite, the same rows pre-built as Python
  tuples and written with `executemany` of Feast's own per-row upsert (plus, for context, SQLite's engine limit: a
  C-level `INSERT ... SELECT` of the same rows from a temp table);
* **feast** — `FeatureStore.materialize` with `online_write_batch_size: 50000` on a smaller sample (stated).

Each measurement runs in a fresh interpreter; peak RSS is that process's VmHWM (Feast's imports included; the RSS
after imports is shown too). Repeated variants are interleaved; medians are quoted. A last section runs the real
pipeline on the default simulated world (features build -> publish -> bulk) for two consecutive daily snapshots to
show how many rows an incremental run actually rewrites.

    .venv/bin/python benchmarks/bench_materialize.py [--rows 1000000] [--repeat 3] [--sqlite-rows 1000000]
        [--feast-rows 100000] [--changed 0.1] [--sqlite-changed 0.1 0.9] [--skip-redis] [--skip-sqlite]
        [--skip-world] [--name NAME]
    .venv/bin/python benchmarks/bench_materialize.py --rows 10000000 --sqlite-rows 1000000   # the 10 M run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, WORK, median, peak_rss_mb, run_isolated, table, write_result

HERE = Path(__file__).resolve()
AS_OF = datetime(2026, 10, 20, tzinfo=UTC)
VIEW = "user_ad"
REDIS = os.environ.get("FREQCAP_BENCH_REDIS", "127.0.0.1:6379")


def reset_peak() -> None:
    """Restart this process's VmHWM from its current RSS (Linux clear_refs 5), to measure one phase."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------------------------------------------------------
# Synthetic snapshots
# ---------------------------------------------------------------------------------------------------------------


def write_snapshot(path: Path, rows: int, as_of: datetime, seed: int = 3, changed: float = 0.0) -> None:
    """`rows` user_ad rows in the snapshot schema; with `changed` > 0, that share of rows gets new values."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    chunk = 1_000_000
    base_us = int(as_of.timestamp() * 1_000_000)
    anchor_us = int(AS_OF.timestamp() * 1_000_000)  # same last_imp_ts in every snapshot of this size
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        rng = np.random.default_rng(seed + start)
        idx = np.arange(start, start + n)
        cols: dict[str, pa.Array] = {
            "user_id": pa.array(np.char.add("u", (idx // 7).astype(str))),
            "ad_id": pa.array(np.char.add("ad", (idx % 7919).astype(str))),
        }
        for prefix, lam in (("imp", 3.0), ("clk", 0.2), ("conv", 0.05)):
            acc = np.zeros(n, np.int64)
            for window in ("1h", "24h", "7d", "28d"):
                acc = acc + rng.poisson(lam, n)
                cols[f"{prefix}_{window}"] = acc
        decayed = rng.random(n) * 5
        last = anchor_us - rng.integers(0, 28 * 86400 * 1_000_000, n)
        null_last = rng.random(n) < 0.03
        if changed:
            flip = np.random.default_rng(seed + 10_000 + start).random(n) < changed
            cols["imp_1h"] = np.where(flip, cols["imp_1h"] + 1, cols["imp_1h"])
            decayed = np.where(flip, decayed * 0.5 + 0.25, decayed)
        for name in list(cols)[2:]:
            cols[name] = pa.array(cols[name])
        cols["imp_decayed"] = pa.array(decayed)
        cols["last_imp_ts"] = pa.array(last, pa.timestamp("us", tz="UTC"), mask=null_last)
        cols["event_timestamp"] = pa.array(np.full(n, base_us), pa.timestamp("us", tz="UTC"))
        batch = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(str(path), batch.schema, compression="zstd")
        writer.write_table(batch)
    writer.close()


def snapshot_name(as_of: datetime) -> str:
    return f"snapshot_{as_of:%Y%m%dT%H%M%SZ}.parquet"


def source_snapshot(rows: int, as_of: datetime, changed: float = 0.0) -> Path:
    """A cached synthetic snapshot file under benchmarks/work (written once per size)."""
    tag = f"{rows}-{int(changed * 1000)}"
    path = WORK / "materialize" / f"src-{tag}" / snapshot_name(as_of)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_snapshot(tmp, rows, as_of, changed=changed)
        tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# One measurement per process
# ---------------------------------------------------------------------------------------------------------------


def _store(kind: str, rows_tag: str):
    """A fresh Feast repo (unique project) with `user_ad` + the other views applied; returns (settings, store, repo)."""
    from freqcap.adapters.feast.store import apply_definitions, open_store
    from freqcap.config import load_settings
    from freqcap.layout import offline_root

    project = f"bench{kind[:2]}{uuid.uuid4().hex[:8]}"
    env = {"FREQCAP__FEAST__ONLINE__KIND": kind, "FREQCAP__FEAST__PROJECT": project}
    if kind == "redis":
        env["FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING"] = REDIS
    settings = load_settings(environ=env)
    repo = WORK / "materialize" / f"repo-{kind}-{rows_tag}-{project}"
    shutil.rmtree(repo, ignore_errors=True)
    store = open_store(settings, repo)
    for other in ("user_advertiser", "user_campaign", "user", VIEW):
        (offline_root(repo) / other).mkdir(parents=True, exist_ok=True)
    apply_definitions(store, settings, repo)
    return settings, store, repo


def _place(repo: Path, src: Path) -> Path:
    """Hard-link (or copy) a cached snapshot into the repo's offline store, where `publish_snapshot` would put it."""
    from freqcap.layout import offline_root

    target = offline_root(repo) / VIEW / src.name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, target)
    except OSError:
        shutil.copyfile(src, target)
    return target


def _redis_cpu() -> float:
    """CPU seconds the Redis server's main thread has used (every client's commands, not only ours)."""
    import redis

    host, port = REDIS.split(":")[:2]
    info = redis.Redis(host=host, port=int(port)).info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def _redis_cleanup(project: str) -> int:
    """UNLINK every key of this benchmark project (keys end with the project name) and its bulk state."""
    import redis

    host, port = REDIS.split(":")[:2]
    client = redis.Redis(host=host, port=int(port))
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=b"*" + project.encode(), count=20_000):
        batch.append(key)
        if len(batch) >= 20_000:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    for key in client.scan_iter(match=b"freqcap:bulk_state:" + project.encode() + b":*"):
        client.unlink(key)
    return deleted


def one(kind: str, store_kind: str, rows: int, extra: dict) -> dict:
    """Run one variant in this process and return its numbers."""
    from freqcap.adapters.feast.bulk import bulk_materialize

    settings, store, repo = _store(store_kind, str(rows))
    result: dict = {"rows": rows, "rss_after_imports_mb": rss_mb()}
    try:
        src = source_snapshot(rows, AS_OF)
        snap = _place(repo, src)
        if kind in ("bulk", "bulk_hset"):
            # bulk_hset: the same path with RESTORE turned off (every row an HSET + EXPIRE, as before RESTORE).
            options = {"redis_restore": kind == "bulk"}
            cpu = _redis_cpu() if store_kind == "redis" else 0.0
            strategy = extra.get("strategy", "auto")
            started = time.perf_counter()
            rep = bulk_materialize(store, settings, {VIEW: snap}, AS_OF, sqlite_strategy=strategy, **options)
            result["seconds"] = time.perf_counter() - started
            result["strategy"] = rep.views[0].strategy
            if store_kind == "redis":
                result["redis_cpu_s"] = _redis_cpu() - cpu
            result["written"] = rep.rows_written
            result["restored"] = rep.views[0].rows_restored
            result["peak_full_mb"] = peak_rss_mb()
            if extra.get("changed"):
                as_of2 = AS_OF + timedelta(hours=1)
                snap2 = _place(repo, source_snapshot(rows, as_of2, changed=extra["changed"]))
                reset_peak()
                started = time.perf_counter()
                rep2 = bulk_materialize(store, settings, {VIEW: snap2}, as_of2, sqlite_strategy=strategy, **options)
                result["incr_seconds"] = time.perf_counter() - started
                result["incr_strategy"] = rep2.views[0].strategy
                result["incr_written"] = rep2.rows_written
                result["incr_restored"] = rep2.views[0].rows_restored
                result["incr_unchanged"] = rep2.rows_skipped
                result["incr_mode"] = rep2.views[0].mode
                result["peak_incr_mb"] = peak_rss_mb()
                snap = snap2
        elif kind == "feast":
            started = time.perf_counter()
            store.materialize(AS_OF - timedelta(seconds=1), AS_OF + timedelta(seconds=1), feature_views=[VIEW])
            result["seconds"] = time.perf_counter() - started
        elif kind == "floor" and store_kind == "redis":
            result.update(_redis_floor(store, settings, snap))
        elif kind == "floor_restore" and store_kind == "redis":
            result.update(_redis_floor(store, settings, snap, restore=True))
        elif kind == "floor" and store_kind == "sqlite":
            result.update(_sqlite_floor(store, settings, snap, engine=extra.get("engine", False)))
        else:
            raise ValueError(kind)
        result["peak_rss_mb"] = peak_rss_mb()
        result["online_check"] = _spot_check(store, snap)
    finally:
        if store_kind == "redis":
            result["keys_deleted"] = _redis_cleanup(store.project)
        shutil.rmtree(repo, ignore_errors=True)
    return result


def _spot_check(store, snap: Path) -> int:
    """Read 200 rows back with get_online_features and compare with the snapshot; returns rows checked."""
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(snap).read_row_group(0).slice(0, 200).to_pylist()
    refs = [f"{VIEW}:{f.name}" for f in store.get_feature_view(VIEW).features]
    got = store.get_online_features(
        features=refs, entity_rows=[{"user_id": r["user_id"], "ad_id": r["ad_id"]} for r in rows]
    ).to_dict()
    for i, r in enumerate(rows):
        for name in ("imp_1h", "imp_28d", "conv_28d", "imp_decayed"):
            assert got[name][i] == r[name], (name, i, got[name][i], r[name])
        want = r["last_imp_ts"]
        have = got["last_imp_ts"][i]
        assert (want is None and have is None) or int(want.timestamp()) == int(have.timestamp()), (i, want, have)
    return len(rows)


def _encoded_batches(store, settings, snap: Path, target):
    """Encode the snapshot with the bulk path's own encoders (not timed by the floors)."""
    import duckdb

    from freqcap.adapters.feast import bulk

    plan = bulk.view_plan(store, target, VIEW)
    enc = bulk.Encoders()
    con = duckdb.connect()
    reader = con.sql(bulk.source_query(plan, snap, None, ordered=target.kind == "sqlite")).to_arrow_reader(50_000)
    for batch in bulk.record_batches(reader, 50_000):
        yield plan, bulk.encode_batch(batch, plan, enc)
    con.close()


def _redis_floor(store, settings, snap: Path, restore: bool = False) -> dict:
    """Stream pre-built RESP (the bulk path's exact HSET+EXPIRE bytes, or with `restore` its RESTORE commands) over
    one connection; only sending is timed."""
    from freqcap.adapters.feast import bulk

    target = bulk.RedisTarget(store)
    buffers = []
    for plan, encoded in _encoded_batches(store, settings, snap, target):
        if not buffers:
            target.begin(plan, AS_OF)
            target.finish()
            if restore and target._check_restore(encoded):
                raise RuntimeError("RESTORE is not usable on this server")
        if restore:
            cmds, rows = target.restore_commands(encoded)
            if len(rows) != encoded.n:
                raise RuntimeError("a row cannot be RESTOREd")
            buffers.append((cmds, len(rows)))
        else:
            buffers.append(target.commands(encoded))
    conn = target._connection()
    cpu = _redis_cpu()
    started = time.perf_counter()
    for cmds, replies in buffers:
        bulk.send_and_check(conn, bulk.buffer_view(cmds), replies)
    seconds = time.perf_counter() - started
    cpu = _redis_cpu() - cpu
    conn.disconnect()
    return {"seconds": seconds, "redis_cpu_s": cpu, "bytes": sum(len(bulk.buffer_view(c)) for c, _ in buffers)}


def _sqlite_floor(store, settings, snap: Path, engine: bool) -> dict:
    """Pre-built row tuples (Feast's one row per entity per feature), then Feast's upsert via executemany.

    With `engine`, the rows go to a temp table first and one C-level INSERT ... SELECT copies them (SQLite's limit).
    """
    import sqlite3

    from freqcap.adapters.feast import bulk

    target = bulk.SqliteTarget(store, settings)
    rows_by_batch = []
    table = None
    for plan, encoded in _encoded_batches(store, settings, snap, target):
        if table is None:
            target.begin(plan, AS_OF)
            target.finish()
            table = target.table
        keys = encoded.keys.to_numpy(zero_copy_only=False)
        ts = [target._event_ts(t) for t in encoded.ts_uniques]
        cols = [(name, c.objects(), c.texts()) for name, c in zip(plan.feature_names, encoded.columns, strict=True)]
        batch_rows = []
        for i in range(encoded.n):
            for name, vals, texts in cols:
                batch_rows.append((keys[i], name, vals[i], texts[i], ts[encoded.ts_indices[i]], None))
        rows_by_batch.append(batch_rows)
    target.conn.close()
    conn = sqlite3.connect(target.path, isolation_level=None)
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA cache_size=-262144"):
        conn.execute(pragma)
    upsert = (
        f"INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, value_text = excluded.value_text, "
        "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
    )
    if engine:
        conn.execute(
            "CREATE TEMP TABLE staged (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT, "
            "event_ts INT, created_ts INT)"
        )
        conn.execute("BEGIN")
        for batch_rows in rows_by_batch:
            conn.executemany("INSERT INTO staged VALUES (?, ?, ?, ?, ?, ?)", batch_rows)
        conn.execute("COMMIT")
        del rows_by_batch
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute(upsert.replace("VALUES (?, ?, ?, ?, ?, ?)", "SELECT * FROM staged WHERE true ORDER BY 1, 2"))
        conn.execute("COMMIT")
    else:
        started = time.perf_counter()
        for batch_rows in rows_by_batch:
            conn.execute("BEGIN")
            conn.executemany(upsert, batch_rows)
            conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds}


def world(extra: dict) -> dict:
    """The real pipeline on a simulated world: two consecutive daily snapshots, full then incremental bulk runs."""
    from freqcap.adapters.duckdb.features import build_features
    from freqcap.adapters.feast.bulk import bulk_materialize
    from freqcap.adapters.feast.snapshots import publish_snapshot
    from freqcap.adapters.feast.store import apply_definitions, open_store
    from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
    from freqcap.config import SimulationConfig, load_settings
    from freqcap.layout import offline_root, parse_as_of

    users = extra["users"]
    world_dir = WORK / f"world-{users}-14-7"
    if not (world_dir / "ground_truth.json").exists():
        simulate_to_dir(world_dir, SimulationConfig(users=users, days=14, seed=7))
    end = parse_as_of(load_ground_truth(world_dir)["window"]["end"])
    kind = extra["store"]
    project = f"benchw{uuid.uuid4().hex[:8]}"
    env = {"FREQCAP__FEAST__ONLINE__KIND": kind, "FREQCAP__FEAST__PROJECT": project}
    if kind == "redis":
        env["FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING"] = REDIS
    settings = load_settings(environ=env)
    repo = WORK / "materialize" / f"world-repo-{project}"
    store = open_store(settings, repo)
    out: dict = {"users": users, "runs": []}
    try:
        for as_of in (end - timedelta(days=1), end):
            build = build_features(
                world_dir / "events", as_of, repo.parent / f"wf-{project}-{as_of:%d}", settings.features
            )
            snaps = publish_snapshot(build, offline_root(repo))
            apply_definitions(store, settings, repo)
            rep = bulk_materialize(store, settings, snaps, as_of)
            out["runs"].append(
                {
                    "as_of": as_of.isoformat(),
                    "mode": sorted({v.mode for v in rep.views}),
                    "rows": rep.rows_read,
                    "written": rep.rows_written,
                    "unchanged": rep.rows_skipped,
                    "seconds": rep.seconds,
                    "by_view": {v.view: [v.rows_read, v.rows_written, v.strategy] for v in rep.views},
                }
            )
    finally:
        if kind == "redis":
            _redis_cleanup(project)
        shutil.rmtree(repo, ignore_errors=True)
        for p in repo.parent.glob(f"wf-{project}-*"):
            shutil.rmtree(p, ignore_errors=True)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------


def _fmt_rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs="*")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--sqlite-rows", type=int, default=None, help="rows for the SQLite runs (default: --rows, max 1M)"
    )
    parser.add_argument("--feast-rows", type=int, default=100_000, help="sample for Feast's materialize")
    parser.add_argument(
        "--floor-sqlite-rows", type=int, default=200_000, help="sample for the SQLite executemany floor"
    )
    parser.add_argument(
        "--floor-redis-rows", type=int, default=2_000_000, help="cap for the Redis floor (it holds all RESP in memory)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--changed", type=float, default=0.1, help="share of rows changed in the incremental run")
    parser.add_argument(
        "--sqlite-changed",
        type=float,
        nargs="*",
        default=None,
        help="SQLite: shares changed in the incremental runs, one upsert and one rebuild run each (default --changed)",
    )
    parser.add_argument("--world-users", type=int, default=20_000)
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-world", action="store_true")
    parser.add_argument("--name", default=None, help="results file name (default materialize or materialize-<rows>)")
    args = parser.parse_args()
    if args.one is not None:
        kind, store_kind, rows, extra = args.one[0], args.one[1], int(args.one[2]), json.loads(args.one[3])
        print(json.dumps(world(extra) if kind == "world" else one(kind, store_kind, rows, extra)))
        return

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sqlite_rows = args.sqlite_rows or min(args.rows, 1_000_000)
    load_before = os.getloadavg()[0]
    print(f"preparing synthetic snapshots ({args.rows:,} rows) ...", flush=True)
    floor_redis_rows = min(args.rows, args.floor_redis_rows)
    for n in {args.rows, sqlite_rows, args.feast_rows, args.floor_sqlite_rows, floor_redis_rows}:
        source_snapshot(n, AS_OF)
    sqlite_changed = args.sqlite_changed or [args.changed]
    for n in {args.rows, sqlite_rows}:
        source_snapshot(n, AS_OF + timedelta(hours=1), changed=args.changed)
    for c in sqlite_changed:
        source_snapshot(sqlite_rows, AS_OF + timedelta(hours=1), changed=c)

    def run(kind: str, store_kind: str, rows: int, **extra) -> dict:
        try:
            r = run_isolated(HERE, kind, store_kind, str(rows), json.dumps(extra))
        except subprocess.CalledProcessError as exc:
            print(exc.stderr[-3000:], file=sys.stderr)
            raise
        label = f" {r['strategy']}" if "strategy" in r else ""
        incr = f", incremental {r['incr_seconds']:.2f}s ({r['incr_strategy']})" if "incr_seconds" in r else ""
        print(
            f"  {store_kind} {kind}{label} {rows:,}: {r['seconds']:.2f}s{incr} peak {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        return r

    sections: list[str] = []
    raw: dict = {"rows": args.rows, "sqlite_rows": sqlite_rows, "load_before": load_before}
    for store_kind, n, skip in (("redis", args.rows, args.skip_redis), ("sqlite", sqlite_rows, args.skip_sqlite)):
        if skip:
            continue
        repeat = args.repeat if store_kind == "redis" else 1
        bulk_runs, floor_runs, hset_runs, hset_floor_runs, sqlite_runs = [], [], [], [], []
        for _ in range(repeat):  # interleaved, so background load hits all alike
            if store_kind == "redis":
                bulk_runs.append(run("bulk", store_kind, n, changed=args.changed))
                hset_runs.append(run("bulk_hset", store_kind, n, changed=args.changed))
                floor_runs.append(run("floor_restore", store_kind, floor_redis_rows))
                hset_floor_runs.append(run("floor", store_kind, floor_redis_rows))
        if store_kind == "sqlite":
            for c in sqlite_changed:  # both strategies, interleaved, per share changed
                for strategy in ("upsert", "rebuild"):
                    sqlite_runs.append({**run("bulk", store_kind, n, changed=c, strategy=strategy), "changed": c})
            # The default (auto = upsert) is the headline; the rebuild is shown beside it.
            bulk_runs = [r for r in sqlite_runs if r["strategy"] == "upsert" and r["changed"] == sqlite_changed[0]]
        if store_kind == "sqlite":
            floor_runs.append(run("floor", store_kind, args.floor_sqlite_rows))
            engine = run("floor", store_kind, args.floor_sqlite_rows, engine=True)
        feast_run = run("feast", store_kind, args.feast_rows)
        raw[store_kind] = {"bulk": bulk_runs, "floor": floor_runs, "feast": feast_run}
        if store_kind == "redis":
            raw[store_kind].update({"bulk_hset": hset_runs, "floor_hset": hset_floor_runs})
        if sqlite_runs:
            raw[store_kind]["strategies"] = sqlite_runs
        if store_kind == "sqlite":
            raw[store_kind]["engine"] = engine

        def rate(r: dict) -> float:
            return r["rows"] / r["seconds"]

        bulk_rate = median([rate(r) for r in bulk_runs])
        floor_rate = median([rate(r) for r in floor_runs])
        lines = []
        if store_kind == "sqlite":  # the opt-in rebuild beside the default upsert, same run
            for r in sqlite_runs:
                if r["strategy"] == "rebuild" and r["changed"] == sqlite_changed[0]:
                    lines.append(
                        [
                            "bulk_materialize, full write, sqlite_strategy=rebuild (one transaction)",
                            f"{n:,}",
                            f"{r['seconds']:.2f}",
                            f"{rate(r):,.0f}",
                            f"{r['peak_full_mb']:.0f}",
                            f"{r['rss_after_imports_mb']:.0f}",
                            f"{rate(r) / floor_rate:.2f}x",
                        ]
                    )
        lines += [
            [
                f"bulk_materialize, full write ({len(bulk_runs)} run{'s' if len(bulk_runs) > 1 else ''})"
                + (", default strategy (upsert in place, a transaction per batch)" if store_kind == "sqlite" else ""),
                f"{n:,}",
                f"{median([r['seconds'] for r in bulk_runs]):.2f}",
                f"{bulk_rate:,.0f}",
                f"{median([r.get('peak_full_mb', r['peak_rss_mb']) for r in bulk_runs]):.0f}",
                f"{median([r['rss_after_imports_mb'] for r in bulk_runs]):.0f}",
                f"{bulk_rate / floor_rate:.2f}x",
            ],
            [
                "floor: raw pipelined RESTORE of the same payloads"
                if store_kind == "redis"
                else "floor: raw executemany of Feast's per-row upsert, pre-built rows",
                f"{floor_runs[0]['rows']:,}",
                f"{median([r['seconds'] for r in floor_runs]):.2f}",
                f"{floor_rate:,.0f}",
                f"{median([r['peak_rss_mb'] for r in floor_runs]):.0f}",
                f"{median([r['rss_after_imports_mb'] for r in floor_runs]):.0f}",
                "1.00x",
            ],
        ]
        if store_kind == "redis":
            for label, runs in (
                ("bulk_materialize with RESTORE off (every row HSET+EXPIRE)", hset_runs),
                ("floor: raw pipelined HSET+EXPIRE of the same bytes", hset_floor_runs),
            ):
                lines.append(
                    [
                        label,
                        f"{runs[0]['rows']:,}",
                        f"{median([r['seconds'] for r in runs]):.2f}",
                        f"{median([rate(r) for r in runs]):,.0f}",
                        f"{median([r.get('peak_full_mb', r['peak_rss_mb']) for r in runs]):.0f}",
                        f"{median([r['rss_after_imports_mb'] for r in runs]):.0f}",
                        f"{median([rate(r) for r in runs]) / floor_rate:.2f}x",
                    ]
                )
        if store_kind == "sqlite":
            lines.append(
                [
                    "SQLite engine limit: C-level INSERT ... SELECT of the same rows",
                    f"{engine['rows']:,}",
                    f"{engine['seconds']:.2f}",
                    f"{rate(engine):,.0f}",
                    f"{engine['peak_rss_mb']:.0f}",
                    f"{engine['rss_after_imports_mb']:.0f}",
                    f"{rate(engine) / floor_rate:.2f}x",
                ]
            )
        lines.append(
            [
                "Feast FeatureStore.materialize (online_write_batch_size 50000)",
                f"{feast_run['rows']:,}",
                f"{feast_run['seconds']:.2f}",
                f"{rate(feast_run):,.0f}",
                f"{feast_run['peak_rss_mb']:.0f}",
                f"{feast_run['rss_after_imports_mb']:.0f}",
                f"{rate(feast_run) / floor_rate:.2f}x",
            ]
        )
        incr = [r for r in bulk_runs if "incr_seconds" in r and store_kind == "redis"]
        if sqlite_runs:
            by = {(r["changed"], r["strategy"]): r for r in sqlite_runs}
            full_up, full_rb = by[(sqlite_changed[0], "upsert")], by[(sqlite_changed[0], "rebuild")]
            inc_rows = [
                [
                    "full write (empty table)",
                    f"{n:,}",
                    f"{full_up['seconds']:.2f}",
                    f"{full_rb['seconds']:.2f}",
                    f"{rate(full_up):,.0f}",
                    f"{rate(full_rb):,.0f}",
                    f"{full_up['seconds'] / full_rb['seconds']:.2f}x",
                    f"{full_up['peak_full_mb']:.0f} / {full_rb['peak_full_mb']:.0f}",
                ]
            ]
            for c in sqlite_changed:
                up, rb = by[(c, "upsert")], by[(c, "rebuild")]
                inc_rows.append(
                    [
                        f"incremental, {c:.0%} of rows changed ({up['incr_written']:,} rewritten)",
                        f"{n:,}",
                        f"{up['incr_seconds']:.2f}",
                        f"{rb['incr_seconds']:.2f}",
                        f"{n / up['incr_seconds']:,.0f}",
                        f"{n / rb['incr_seconds']:,.0f}",
                        f"{up['incr_seconds'] / rb['incr_seconds']:.2f}x",
                        f"{up['peak_incr_mb']:.0f} / {rb['peak_incr_mb']:.0f}",
                    ]
                )
        else:
            inc_rows = []
        if store_kind == "sqlite" and len(lines) > 1:
            lines = [lines[1], lines[0], *lines[2:]]  # headline (default strategy) first
        body = f"## {store_kind}\n\n" + table(
            ["variant", "rows", "seconds", "rows/s", "peak RSS MB", "RSS after imports MB", "vs floor"], lines
        )
        body += f"\n\nbulk vs Feast's materialize: **{bulk_rate / rate(feast_run):.1f}x** rows/s.\n"
        if store_kind == "redis":
            hset_rate = median([rate(r) for r in hset_runs])
            restored = median([r["restored"] for r in bulk_runs])
            body += (
                f"\nRESTORE vs HSET: the bulk path wrote {restored:,.0f} of {n:,} rows as RESTOREd hashes "
                f"(an empty store: every key is new); {bulk_rate / hset_rate:.2f}x the rows/s of the same path with "
                f"RESTORE off; the HSET path runs at {hset_rate / median([rate(r) for r in hset_floor_runs]):.2f}x "
                "its own floor.\n"
            )
            for label, runs in (
                ("bulk (RESTORE)", bulk_runs),
                ("bulk (HSET)", hset_runs),
                ("RESTORE floor", floor_runs),
                ("HSET+EXPIRE floor", hset_floor_runs),
            ):
                per_row = [r["redis_cpu_s"] / r["rows"] * 1e6 for r in runs if "redis_cpu_s" in r]
                if per_row:
                    body += (
                        f"\nRedis server CPU per row, {label} (main thread, INFO cpu; other clients included): median "
                        f"{median(per_row):.1f} us, i.e. one Redis core executes at most ~{1e6 / median(per_row):,.0f} "
                        "such rows/s."
                    )
            body += "\n"
            hset_incr = [r for r in hset_runs if "incr_seconds" in r]
            if hset_incr:
                s_ = median([r["incr_seconds"] for r in hset_incr])
                body += (
                    f"\nIncremental run with RESTORE off: {s_:.2f} s (median) = {n / s_:,.0f} snapshot rows/s. "
                    "(With RESTORE on, the changed rows' keys exist, answer BUSYKEY and are merged with HSET; "
                    f"{median([r.get('incr_restored', 0) for r in bulk_runs]):,.0f} rows were new keys.)\n"
                )
        if inc_rows:
            body += (
                "\nSQLite write strategies, each measured in its own process in this run (a full write into the "
                "freshly applied table, then an incremental run on top of it; snapshot rows per second):\n\n"
                + table(
                    [
                        "run",
                        "snapshot rows",
                        "upsert s",
                        "rebuild s",
                        "upsert rows/s",
                        "rebuild rows/s",
                        "rebuild speed-up",
                        "peak RSS MB upsert / rebuild",
                    ],
                    inc_rows,
                )
                + "\n"
            )
        if incr:
            s = median([r["incr_seconds"] for r in incr])
            body += (
                f"\nIncremental run against a second snapshot with {args.changed:.0%} of the {n:,} rows changed: "
                f"{incr[0]['incr_written']:,} rows rewritten, {incr[0]['incr_unchanged']:,} unchanged "
                f"({'TTL refreshed with EXPIRE' if store_kind == 'redis' else 'not touched'}), "
                f"{s:.2f} s (median) = {n / s:,.0f} snapshot rows/s (mode: {incr[0]['incr_mode']}); peak RSS of "
                f"that run {median([r['peak_incr_mb'] for r in incr]):.0f} MB (the exact diff runs in DuckDB, capped by "
                "`duckdb_memory_limit`, default 1 GB, spilling beyond).\n"
            )
        sections.append(body)

    if not args.skip_world:
        for store_kind in [k for k, skip in (("redis", args.skip_redis), ("sqlite", args.skip_sqlite)) if not skip]:
            w = run_isolated(
                HERE, "world", store_kind, "0", json.dumps({"users": args.world_users, "store": store_kind})
            )
            raw[f"world_{store_kind}"] = w
            rows_ = [
                [
                    r["as_of"],
                    ", ".join(r["mode"]),
                    f"{r['rows']:,}",
                    f"{r['written']:,}",
                    f"{r['unchanged']:,}",
                    f"{r['seconds']:.2f}",
                    _fmt_rate(r["rows"], r["seconds"]),
                ]
                for r in w["runs"]
            ]
            sections.append(
                f"## Real pipeline, {store_kind}: simulated world ({w['users']:,} users x 14 days), "
                "two consecutive daily snapshots (all four views)\n\n"
                + table(["as_of", "mode", "snapshot rows", "rewritten", "unchanged", "seconds", "rows/s"], rows_)
                + f"\n\nPer view (rows, rewritten) on the second day: {w['runs'][-1]['by_view']}. Peak RSS {w['peak_rss_mb']:.0f} MB (simulation and features build in the same process).\n"
            )

    load_after = os.getloadavg()[0]
    header = (
        f"One view (`{VIEW}`: 14 features, two string join keys), synthetic rows shaped like `build_features` output; "
        "each measurement in a fresh interpreter; Redis runs interleaved and repeated "
        f"{args.repeat}x (medians), SQLite once. Redis {REDIS} (`key_ttl_seconds` set: a key that does not exist "
        "yet is written as one `RESTORE key ttl payload` of the hash Feast's HSET would build, byte-checked against "
        "HSET on the live server; an existing key gets HSET + EXPIRE, as in Feast). 1-minute load average before/after: "
        f"{load_before:.2f}/{load_after:.2f} on 2 cores shared with other work — absolute rates move with it; "
        "the ratios are measured in the same run. Targets: >= 100k rows/s Redis, >= 30k rows/s SQLite.\n\n"
        "Every bulk run is read back through `get_online_features` (200 rows compared with the snapshot). The "
        "bulk line's peak RSS is that of the full write; the peak is reset before the incremental run, which "
        "reports its own.\n\n"
        "Reading the numbers: with Feast's layout both stores are bound by their own engines, not by the client. "
        "Redis: a 15-field HSET plus an EXPIRE per row costs Redis's one core several times what a RESTORE of the "
        "same hash costs (CPU per row shown below), which is why new keys go in with RESTORE; rows of existing keys "
        "stay bound by the HSET floor. SQLite stores one row per feature (14 per entity row, each into three "
        "B-trees), so the bulk path can only approach the engine-limit line.\n\n"
    )
    name = args.name or ("materialize" if args.rows == 1_000_000 else f"materialize-{args.rows}")
    write_result(name, "Online materialization benchmark", header + "\n".join(sections))
    (RESULTS / f"{name}.json").write_text(json.dumps(raw, indent=2, default=str))


if __name__ == "__main__":
    main()
