"""Benchmark of event validation (`freqcap.adapters.gx.validate_events`) on synthetic events.

    .venv/bin/python benchmarks/bench_validation.py                 # 1 M and 5 M rows
    .venv/bin/python benchmarks/bench_validation.py --rows 200000   # a quick run

For each size it generates a Hive-partitioned event directory (one partition per day) and an ads catalog with
numpy/pyarrow (no simulator), with ~1% bad rows of six kinds and ~0.5% exact duplicates, so the quarantine and
dedup paths do real work. It then measures, each in a fresh process so that peak RSS belongs to that run alone:

- `validate_events`: the whole step (Great Expectations in chunks, quarantine, dedup, clean output, report),
  not counting the one-off Great Expectations import, which is reported separately;
- a baseline: one DuckDB SQL query computing the same rule flags (and their counts) straight from the Parquet
  files, with no per-row reasons and no outputs written. Its counts are checked against the GX report.

Prints a Markdown table and writes it to benchmarks/results/validation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

AS_OF = datetime(2026, 10, 15, 0, 0, tzinfo=UTC)
DAYS = 14
FORMATS = ["feed", "stories", "reels", "search", "video"]
RESULTS = Path(__file__).resolve().parent / "results" / "validation.md"


def _ids(prefix: str, values: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(values), pa.string()), "")


def generate(out: Path, n_rows: int, seed: int = 0, bad_share: float = 0.01, dup_share: float = 0.005) -> dict:
    """Write `n_rows` events (including the injected bad rows and duplicates) under `out/events`, and `out/ads.parquet`."""
    rng = np.random.default_rng(seed)
    n_ads = 2_000
    n_users = max(1, n_rows // 25)
    n_dups = int(n_rows * dup_share)
    n = n_rows - n_dups
    ad = rng.integers(0, n_ads, n)
    camp, adv = ad // 10, ad // 100
    kind = rng.choice(np.array([0, 1, 2], np.int8), n, p=[0.9, 0.08, 0.02])
    event_type = np.array(["impression", "click", "conversion"], dtype=object)[kind]
    start = int((AS_OF - timedelta(days=DAYS)).timestamp() * 1e6)
    ts = start + rng.integers(0, DAYS * 86_400 * 10**6, n)
    value = np.where(kind == 2, np.round(rng.gamma(2.0, 15.0, n), 2), np.nan)
    fmt = np.array(FORMATS, dtype=object)[rng.integers(0, len(FORMATS), n)]
    user = rng.integers(0, n_users, n)
    ad_ids, camp_ids, adv_ids = _ids("ad", ad), _ids("cmp", camp), _ids("adv", adv)

    # ~bad_share rows broken in one of six ways
    bad = rng.choice(n, int(n * bad_share), replace=False)
    how = np.arange(len(bad)) % 6
    event_type[bad[how == 0]] = "view"  # event_type_in_set
    fmt[bad[how == 1]] = "banner"  # format_in_set
    user_valid = np.ones(n, bool)
    user_valid[bad[how == 2]] = False  # user_id_not_null
    conv = bad[how == 3]
    event_type[conv], value[conv] = "conversion", -1.0  # conversion_value_non_negative
    ts[bad[how == 4]] = int((AS_OF + timedelta(hours=2)).timestamp() * 1e6)  # event_ts_not_future
    unknown = bad[how == 5]
    event_type[unknown] = "click"  # ad_known (not in the catalog)
    ad_ids = pc.if_else(pa.array(np.isin(np.arange(n), unknown)), pa.scalar("ad-unknown"), ad_ids)

    table = pa.table(
        {
            "event_id": _ids("e", np.arange(n)),
            "event_type": pa.array(event_type, pa.string()),
            "event_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "user_id": pc.if_else(pa.array(user_valid), _ids("u", user), pa.nulls(n, pa.string())),
            "advertiser_id": adv_ids,
            "campaign_id": camp_ids,
            "ad_id": ad_ids,
            "format": pa.array(fmt, pa.string()),
            "conversion_value": pa.array(value, pa.float64(), from_pandas=True),
        }
    )
    dups = table.take(pa.array(rng.choice(n, n_dups, replace=False)))
    table = pa.concat_tables([table, dups])
    day = pc.cast(
        pc.floor(pc.divide(pc.cast(pc.cast(table["event_ts"], pa.int64()), pa.float64()), 86_400e6)), pa.int64()
    ).to_numpy()
    events = out / "events"
    for d in np.unique(day):
        part = table.filter(pa.array(day == d))
        date = datetime.fromtimestamp(int(d) * 86_400, UTC).date().isoformat()
        (events / f"date={date}").mkdir(parents=True, exist_ok=True)
        pq.write_table(part, events / f"date={date}" / "part-0.parquet")
    all_ads = np.arange(n_ads)
    pq.write_table(
        pa.table(
            {
                "ad_id": _ids("ad", all_ads),
                "campaign_id": _ids("cmp", all_ads // 10),
                "advertiser_id": _ids("adv", all_ads // 100),
            }
        ),
        out / "ads.parquet",
    )
    return {"rows": table.num_rows, "injected_bad": len(bad), "duplicates": n_dups}


BASELINE_SQL = """
WITH e AS (
    SELECT event_id, event_type, CAST(event_ts AS TIMESTAMPTZ) AS event_ts, user_id, advertiser_id, campaign_id,
           ad_id, format, conversion_value
    FROM read_parquet($glob, hive_partitioning = true, union_by_name = true)
),
f AS (
    SELECT
        event_id IS NULL AS event_id_not_null, event_type IS NULL AS event_type_not_null,
        event_ts IS NULL AS event_ts_not_null, user_id IS NULL AS user_id_not_null,
        e.advertiser_id IS NULL AS advertiser_id_not_null, e.campaign_id IS NULL AS campaign_id_not_null,
        e.ad_id IS NULL AS ad_id_not_null, format IS NULL AS format_not_null,
        event_type NOT IN ('impression', 'click', 'conversion') AS event_type_in_set,
        format NOT IN (SELECT unnest($formats)) AS format_in_set,
        conversion_value < 0 AS conversion_value_non_negative,
        event_type = 'conversion' AND (conversion_value IS NULL OR isnan(conversion_value)) AS conversion_value_present,
        event_ts > $max_ts AS event_ts_not_future,
        event_type IN ('click', 'conversion') AND e.ad_id IS NOT NULL AND a.ad_id IS NULL AS ad_known,
        e.campaign_id <> a.campaign_id AS campaign_matches_catalog,
        e.advertiser_id <> a.advertiser_id AS advertiser_matches_catalog,
        count(*) OVER (PARTITION BY event_id) > 1 AND event_id IS NOT NULL AS event_id_unique
    FROM e LEFT JOIN read_parquet($ads) a ON e.ad_id = a.ad_id
)
SELECT count(*) AS total_rows, {sums}, count(*) FILTER (WHERE {any_bad}) AS invalid_rows FROM f
"""
RULES = [
    "event_id_not_null",
    "event_type_not_null",
    "event_ts_not_null",
    "user_id_not_null",
    "advertiser_id_not_null",
    "campaign_id_not_null",
    "ad_id_not_null",
    "format_not_null",
    "event_type_in_set",
    "format_in_set",
    "conversion_value_non_negative",
    "conversion_value_present",
    "event_ts_not_future",
    "ad_known",
    "campaign_matches_catalog",
    "advertiser_matches_catalog",
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_validate(data: Path) -> dict:
    import logging

    from freqcap.adapters.gx import validate_events
    from freqcap.adapters.gx.runtime import import_gx
    from freqcap.config import ValidationConfig

    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    import_gx()
    gx_import = time.perf_counter() - t
    t = time.perf_counter()
    report = validate_events(
        data / "events", as_of=AS_OF, config=ValidationConfig(), out_dir=data / "out", ads_catalog=data / "ads.parquet"
    )
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "gx_import": gx_import, "rss_mb": _rss_mb(), "report": report.to_dict()}


def worker_baseline(data: Path) -> dict:
    import duckdb

    from freqcap.config import ValidationConfig, parse_duration

    cfg = ValidationConfig()
    sums = ", ".join(f"count(*) FILTER (WHERE {r}) AS {r}" for r in [*RULES, "event_id_unique"])
    any_bad = " OR ".join(f"coalesce({r}, false)" for r in RULES)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    t = time.perf_counter()
    rel = con.sql(
        BASELINE_SQL.format(sums=sums, any_bad=any_bad),
        params={
            "glob": str(data / "events" / "**" / "*.parquet"),
            "ads": str(data / "ads.parquet"),
            "formats": list(cfg.allowed_formats),
            "max_ts": AS_OF + parse_duration(cfg.future_tolerance),
        },
    )
    row = rel.fetchall()[0]
    seconds = time.perf_counter() - t
    counts = dict(zip(["total_rows", *RULES, "event_id_unique", "invalid_rows"], row, strict=True))
    return {"seconds": seconds, "rss_mb": _rss_mb(), "counts": counts}


def _spawn(kind: str, data: Path) -> dict:
    env = {**os.environ, "PYTHONPYCACHEPREFIX": os.environ.get("PYTHONPYCACHEPREFIX", "/tmp/pycache")}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--data", str(data)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(report: dict, counts: dict) -> list[str]:
    """Where the GX run and the SQL baseline disagree (they implement the same rules independently)."""
    problems = []
    by_rule = {e["rule"]: e for e in report["expectations"]}
    for rule in RULES:
        if by_rule[rule]["unexpected_count"] != counts[rule]:
            problems.append(f"{rule}: GX {by_rule[rule]['unexpected_count']} vs SQL {counts[rule]}")
    if report["total_rows"] != counts["total_rows"]:
        problems.append(f"total_rows: {report['total_rows']} vs {counts['total_rows']}")
    if report["invalid_rows"] != counts["invalid_rows"]:
        problems.append(f"invalid_rows: {report['invalid_rows']} vs {counts['invalid_rows']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--worker", choices=["validate", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update the results file")
    args = parser.parse_args()
    if args.worker:
        fn = worker_validate if args.worker == "validate" else worker_baseline
        print(json.dumps(fn(args.data), default=str))
        return 0

    load_at_start = os.getloadavg()[0]
    lines = [
        "| rows | validate_events s | rows/s | peak RSS MB | DuckDB one-query baseline s | ratio | "
        "read | GX | reasons+dedup | write | invalid | duplicates |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    gx_imports = []
    for n in args.rows:
        with tempfile.TemporaryDirectory(prefix="freqcap-bench-") as tmp:
            data = Path(tmp)
            t = time.perf_counter()
            gen = generate(data, n)
            print(f"generated {gen['rows']:,} rows in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
            v = _spawn("validate", data)
            b = _spawn("baseline", data)
        rep, tm = v["report"], v["report"]["timings"]
        gx_imports.append(v["gx_import"])
        mismatch = _check(rep, b["counts"])
        if mismatch:
            notes.append(f"- {n:,} rows: GX and the SQL baseline disagree: {'; '.join(mismatch)}")
        write = tm.get("write_quarantine", 0) + tm.get("write_clean", 0)
        lines.append(
            f"| {rep['total_rows']:,} | {v['seconds']:.1f} | {rep['total_rows'] / v['seconds']:,.0f} | "
            f"{v['rss_mb']:,.0f} | {b['seconds']:.2f} | {v['seconds'] / b['seconds']:.0f}× | {tm['read']:.1f} | "
            f"{tm['great_expectations']:.1f} | {tm['reasons_and_dedup']:.1f} | {write:.1f} | "
            f"{rep['invalid_rows']:,} | {rep['duplicates_removed']:,} |"
        )
        print(lines[-1], file=sys.stderr, flush=True)

    import duckdb
    import great_expectations

    header = [
        "# Event validation benchmark",
        "",
        f"`benchmarks/bench_validation.py`, {datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, great-expectations {great_expectations.__version__}, "
        f"duckdb {duckdb.__version__}, pyarrow {pa.__version__}.",
        "",
        "Synthetic events over 14 days in Hive day partitions, with an ads catalog; ~1% bad rows (six kinds) and "
        "~0.5% exact duplicates. `validate_events` is the whole step: Great Expectations (ephemeral context, pandas, "
        "chunks of 1 M rows, `COMPLETE` results keyed by `_row`), quarantine, dedup, clean output and report. It "
        f"excludes the one-off GX import ({min(gx_imports):.1f}–{max(gx_imports):.1f}s here). "
        "Peak RSS is the whole process, import included. The baseline is one DuckDB query computing the same rule "
        "flags and their counts straight from Parquet: no per-row reasons, no outputs. Its counts are checked "
        f"against the GX report. Load average at the start: {load_at_start:.1f} (the machine is shared; "
        "timings vary by ±30% between runs).",
        "",
    ]
    text = (
        "\n".join(
            [*header, *lines, *(["", *notes] if notes else ["", "GX and the SQL baseline agree on every rule count."])]
        )
        + "\n"
    )
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        print(f"wrote {RESULTS}", file=sys.stderr)
    return 1 if notes else 0


if __name__ == "__main__":
    sys.exit(main())
