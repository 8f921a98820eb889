"""Curve-fitting benchmark: `fit_curves_to_dir` on ~1 M and ~10 M impressions (default simulator behaviour),
beside a baseline measured in the same run: the naive pooled estimator as plain DuckDB (rank of each impression
per (user, entity) by a window function, last-touch credit by an ASOF join, one GROUP BY per level).

Each measurement runs in a fresh interpreter (peak RSS = that process's VmHWM; imports warmed before the clock).
On the ~1 M world the caps are also checked against the simulator's truth by raw count
(`freqcap.adapters.duckdb.truth_raw`), for the fitted estimator, the naive pooled one and last-touch credit.

    .venv/bin/python benchmarks/bench_curves.py [--sizes 14000,138000 --days 14 --seed 7]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, peak_rss_mb, run_isolated, table, write_result

HERE = Path(__file__).resolve()
ATTRIBUTION_WINDOW = "2d"


def world_dir(users: int, days: int, seed: int) -> Path:
    return WORK / f"curves-world-{users}-{days}-{seed}"


def ensure_world(users: int, days: int, seed: int) -> Path:
    from freqcap.adapters.simulation_files import simulate_to_dir
    from freqcap.config import SimulationConfig

    out = world_dir(users, days, seed)
    if not (out / "ground_truth.json").exists():
        simulate_to_dir(out, SimulationConfig(users=users, days=days, seed=seed))
    return out


def one_fit(world: Path, attribution: str) -> dict:
    import duckdb  # noqa: F401
    import pandas  # noqa: F401

    from freqcap.jobs.curves import fit_curves_to_dir

    out = world / f"fit-{attribution}"
    started = time.perf_counter()
    s = fit_curves_to_dir(
        world / "events", out, attribution_window=ATTRIBUTION_WINDOW, attribution=attribution, plots=True
    )
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "impressions": s.impressions,
        "stages": s.stage_seconds,
        "own": s.own_curves,
        "fallbacks": s.fallbacks,
        "censored": s.censored,
    }


def one_naive(world: Path) -> dict:
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET threads = 2")
    src = f"read_parquet('{world / 'events' / '**' / '*.parquet'}', hive_partitioning = false)"
    con.execute(f"CREATE TEMP TABLE ev AS SELECT * FROM {src}")
    con.execute(
        "CREATE TEMP TABLE credit AS SELECT i.event_id FROM (SELECT * FROM ev WHERE event_type = 'conversion') c "
        "ASOF JOIN (SELECT * FROM ev WHERE event_type = 'impression') i "
        "ON c.user_id = i.user_id AND c.ad_id = i.ad_id AND c.event_ts >= i.event_ts "
        f"WHERE c.event_ts - i.event_ts <= INTERVAL '{ATTRIBUTION_WINDOW[:-1]} days'"
    )
    rows = 0
    for level in ("advertiser", "campaign", "ad"):
        rows += len(
            con.execute(
                f"""SELECT u.audience, n, avg((c.event_id IS NOT NULL)::INT) AS rate, count(*) AS support FROM (
                      SELECT event_id, user_id, row_number() OVER (PARTITION BY user_id, {level}_id
                      ORDER BY event_ts) AS n FROM ev WHERE event_type = 'impression') i
                    LEFT JOIN credit c USING (event_id)
                    JOIN read_parquet('{world / "users.parquet"}') u USING (user_id)
                    GROUP BY ALL"""
            ).fetchall()
        )
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), "rows": rows}


def one_quality(world: Path) -> dict:
    """Share of determined cohorts whose cap is within ±1 of the raw-count truth, per floor and method."""
    from datetime import timedelta

    import pandas as pd

    from freqcap.adapters.duckdb.curve_events import load_event_arrays
    from freqcap.adapters.duckdb.truth_raw import raw_count_truth
    from freqcap.config import load_settings
    from freqcap.domain.curves import FloorSpec
    from freqcap.domain.curves.core import fit_curves
    from freqcap.domain.simulate import cap_from_curve
    from freqcap.jobs.curves import fit_config_from_features

    features = load_settings(environ={}).features
    ev, _ = load_event_arrays(world / "events", world / "users.parquet")
    fits = {}
    for attribution in ("deconvolved", "last_touch"):
        cfg = fit_config_from_features(
            features, floor=FloorSpec(), attribution_window=ATTRIBUTION_WINDOW, attribution=attribution
        )
        fits[attribution] = fit_curves(ev, cfg)
    end = pd.Timestamp(ev.data_end_us, unit="us", tz="UTC").to_pydatetime()
    truth = raw_count_truth(world, attribution_window=ATTRIBUTION_WINDOW, until=end - timedelta(days=2))
    out = {}
    for floor in (0.3, 0.5, 0.7):
        tcaps = {
            (f"{a}/{t}", lv): cap_from_curve(g.sort_values("n")["true_ratio"], floor)
            for (a, t, lv), g in truth[truth["signal_tier"] != "*"].groupby(["audience", "signal_tier", "level"])
        }
        _, caps = fits["deconvolved"].with_floor(FloorSpec("relative", floor))
        _, lt = fits["last_touch"].with_floor(FloorSpec("relative", floor))
        sel = caps[(caps["kind"] == "cohort") & (caps["fallback"] == "none") & caps["determined"]]
        true = pd.Series([tcaps[(c, lv)] for c, lv in zip(sel["cohort"], sel["level"], strict=True)], index=sel.index)
        lt_caps = lt.set_index(["cohort", "level"]).loc[list(zip(sel["cohort"], sel["level"], strict=True)), "cap"]
        out[str(floor)] = {
            "evaluable": len(sel),
            "estimator": float(((sel["cap"] - true).abs() <= 1).mean()) if len(sel) else None,
            "naive": float(((sel["cap_naive"] - true).abs() <= 1).mean()) if len(sel) else None,
            "last_touch": float((abs(lt_caps.to_numpy() - true.to_numpy()) <= 1).mean()) if len(sel) else None,
            "mean_error_estimator": float((sel["cap"] - true).mean()) if len(sel) else None,
            "mean_error_naive": float((sel["cap_naive"] - true).mean()) if len(sel) else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="14000,138000", help="users per world (≈72 impressions per user)")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="fit", help=argparse.SUPPRESS)
    parser.add_argument("--world", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        world = Path(args.world)
        result = {"fit": lambda: one_fit(world, "deconvolved"), "naive": lambda: one_naive(world),
                  "quality": lambda: one_quality(world)}[args.mode]()  # fmt: skip
        print(json.dumps(result))
        return
    load_before = os.getloadavg()[0]
    rows, stages, quality = [], [], None
    sizes = [int(s) for s in args.sizes.split(",")]
    for users in sizes:
        world = ensure_world(users, args.days, args.seed)
        fit = run_isolated(HERE, "--mode", "fit", "--world", str(world))
        naive = run_isolated(HERE, "--mode", "naive", "--world", str(world))
        rows.append([
            f"{fit['impressions']:,}", f"{fit['seconds']:.1f}", f"{fit['peak_rss_mb']:,.0f}",
            f"{naive['seconds']:.1f}", f"{naive['peak_rss_mb']:,.0f}", f"{fit['seconds'] / naive['seconds']:.1f}×",
            f"{fit['own']} / {fit['fallbacks']} / {fit['censored']}",
        ])  # fmt: skip
        stages.append((fit["impressions"], fit["stages"]))
        if users == sizes[0]:
            quality = run_isolated(HERE, "--mode", "quality", "--world", str(world))
    main_table = table(
        ["impressions", "fit (s)", "fit peak RSS (MB)", "baseline (s)", "baseline peak RSS (MB)", "fit / baseline",
         "cohort×level: own / fallback / censored"],
        rows,
    )  # fmt: skip
    stage_names = list(stages[-1][1])
    stage_table = table(
        ["stage", *[f"{imp:,} imps (s)" for imp, _ in stages]],
        [[name, *[f"{st.get(name, 0):.2f}" for _, st in stages]] for name in stage_names],
    )
    body = (
        f"Worlds: `simulate_to_dir` default behaviour, days={args.days}, seed={args.seed}, users={args.sizes}; "
        f"attribution window {ATTRIBUTION_WINDOW}. Each number is one run in a fresh interpreter "
        f"(1-minute load average before the runs: {load_before:.2f}).\n\n"
        "Fit = `fit_curves_to_dir` (DuckDB load, sequences, EM credit, curves, caps, 13 PNG plots, policy). "
        "Baseline = the naive pooled estimator in plain DuckDB (window-function rank, ASOF last-touch credit, "
        "GROUP BY audience × n per level), no CIs, no deconvolution, no fallback.\n\n"
        f"{main_table}\n\nStages of the fit:\n\n{stage_table}\n"
    )
    if quality:
        qrows = [
            [floor, q["evaluable"], f"{q['estimator']:.0%}", f"{q['naive']:.0%}", f"{q['last_touch']:.0%}",
             f"{q['mean_error_estimator']:+.2f}", f"{q['mean_error_naive']:+.2f}"]
            for floor, q in quality.items()
        ]  # fmt: skip
        body += (
            "\nQuality on the first world (default conversion rates, not boosted): share of cohort × level caps "
            "within ±1 exposure of the truth by raw count, over the cohorts whose cap the estimator calls "
            "determined (own data, not censored, 95 % range ≤ 4 exposures); the same cohorts for every method.\n\n"
            + table(
                [
                    "relative floor",
                    "cohorts",
                    "estimator",
                    "naive pooled",
                    "last-touch credit",
                    "mean error (estimator)",
                    "mean error (naive)",
                ],
                qrows,
            )
            + "\n"
        )
    write_result("curves", "Curve fitting benchmark", body)


if __name__ == "__main__":
    main()
