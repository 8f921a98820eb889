"""Offline policy evaluation benchmark: the policy table on the default simulated world, with CIs and run time.

Runs `freqcap.domain.evaluation.run_evaluation` on the default world (`simulation` settings: 20,000 users × 14 days,
seeds 7…11) in `--workers` processes, writes the full report to benchmarks/work/evaluation/ and the summary to
benchmarks/results/evaluation.md (+ .json). With `--sensitivity`, the headline (personalized soft penalty vs the
best global cap at equal impressions) is also measured under other auction assumptions on smaller worlds.

    .venv/bin/python benchmarks/bench_evaluation.py [--users 20000 --days 14 --seeds 5 --workers 2 --sensitivity]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, WORK, peak_rss_mb, table, write_result

REPO = RESULTS.parents[1]

SENS_HEADERS = [
    "auction",
    "soft vs best global cap (equal imps)",
    "≥ +5 %, CI excl. 0",
    "global cap vs no cap",
    "soft vs no cap",
    "best global cap",
    "oracle beats all",
]
SENSITIVITY = {
    "K = 3 candidates": {"candidates": 3},
    "K = 10 candidates": {"candidates": 10},
    "relevance log-sd 1.0": {"relevance_sigma": 1.0},
    "relevance not in the truth": {"relevance_in_truth": False},
    "no ranker noise": {"noise_sigma": 0.0},
}


def _pct(iv: dict) -> str:
    if iv["low"] is None or iv["low"] != iv["low"]:
        return f"{100 * iv['mean']:+.1f} %"
    return f"{100 * iv['mean']:+.1f} % [{100 * iv['low']:+.1f}, {100 * iv['high']:+.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sensitivity", action="store_true")
    parser.add_argument("--sensitivity-users", type=int, default=5000)
    parser.add_argument("--sensitivity-seeds", type=int, default=3)
    args = parser.parse_args()

    from freqcap.adapters.reports.evaluation import (
        headline_markdown,
        holdout_markdown,
        oracle_markdown,
        policy_markdown,
        write_report,
    )
    from freqcap.config import load_settings
    from freqcap.domain.evaluation import AuctionConfig, EvaluationConfig, run_evaluation

    settings = load_settings(environ={})
    sim = settings.simulation
    config = EvaluationConfig(
        users=args.users or sim.users, days=args.days or sim.days, seeds=args.seeds, base_seed=sim.seed, start=sim.start
    )
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    report = run_evaluation(config, settings.features, workers=args.workers)
    wall = time.perf_counter() - started
    out_dir = WORK / "evaluation"
    paths = write_report(report, out_dir)
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = report.summary()
    stages = summary["seconds_by_stage"]
    cpu = sum(stages.values())

    sens_rows, sens = [], {}
    if args.sensitivity:
        base = replace(config, users=args.sensitivity_users, seeds=args.sensitivity_seeds)
        variants = {"default auction": {}, **SENSITIVITY}
        for name, change in variants.items():
            cfg = replace(base, auction=replace(AuctionConfig(), **change))
            t0 = time.perf_counter()
            rep = run_evaluation(cfg, settings.features, workers=args.workers)
            h = rep.headline()
            table_ = rep.policy_table().set_index("policy")
            sens[name] = {
                "headline": h,
                "global_caps": [s.global_cap for s in rep.seeds],
                "soft_vs_no_cap": table_.loc["personalized_soft", "relative_vs_no_cap"],
                "global_vs_no_cap": table_.loc["global_best", "relative_vs_no_cap"],
                "oracle_beats_all": rep.oracle_check()["beats_all"],
                "seconds": time.perf_counter() - t0,
            }
            sens_rows.append([
                name, _pct(h["relative"]), "yes" if h["meets_target"] else "no",
                f"{100 * sens[name]['global_vs_no_cap']:+.1f} %", f"{100 * sens[name]['soft_vs_no_cap']:+.1f} %",
                "/".join(map(str, sens[name]["global_caps"])), "yes" if sens[name]["oracle_beats_all"] else "no",
            ])  # fmt: skip

    h = summary["headline"]
    body = (
        f"`run_evaluation` on the default world: {config.users:,} users × {config.days} days, {config.seeds} seeds "
        f"({config.base_seed}…{config.base_seed + config.seeds - 1}), K = {config.auction.candidates} candidates, "
        f"{args.workers} worker processes (1-minute load average before the run: {load_before:.2f}; the machine "
        f"is shared, so wall time includes waiting).\n\n"
        f"Run time: **{wall:.0f} s wall** for {summary['replays']} replays "
        f"({summary['replays'] / config.seeds:.0f} per seed); per-seed work summed over seeds {cpu:.0f} s "
        + "("
        + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items())
        + "). "
        f"Peak RSS: parent {peak_rss_mb():,.0f} MB, largest worker {children_peak:,.0f} MB.\n\n"
        f"Reproduce: `.venv/bin/freqcap evaluate --out DIR --users {config.users} --days {config.days} "
        f"--seeds {config.seeds} --workers {args.workers}` (same numbers; the full report of this run is in "
        f"`benchmarks/work/evaluation/`).\n\n"
        f"## Headline\n\n{headline_markdown(report)}\n\n"
        f"## Policies (means over seeds, 95 % intervals)\n\n{policy_markdown(report)}\n\n"
        f"## Sanity: the oracle\n\n{oracle_markdown(report)}\n\n"
        f"## Holdout\n\n{holdout_markdown(report)}\n"
    )
    if sens_rows:
        body += (
            f"\n## Sensitivity to the auction model\n\nThe headline under other auction assumptions, on smaller "
            f"worlds ({args.sensitivity_users:,} users × {config.days} days, {args.sensitivity_seeds} seeds each; "
            "everything else as above).\n\n" + table(SENS_HEADERS, sens_rows) + "\n"
        )
    write_result("evaluation", "Offline policy evaluation benchmark", body)
    doc = {
        "summary": summary,
        "wall_seconds": wall,
        "peak_rss_mb": peak_rss_mb(),
        "children_peak_rss_mb": children_peak,
        "load_before": load_before,
        "workers": args.workers,
        # Relative to the checkout: a recorded result names no path of the machine it ran on.
        "report_dir": str(out_dir.relative_to(REPO)),
        "report_files": {k: str(Path(v).resolve().relative_to(REPO)) for k, v in paths.items()},
        "sensitivity": sens,
    }
    (RESULTS / "evaluation.json").write_text(json.dumps(_clean(doc), indent=2, default=str) + "\n")


def _clean(obj):
    from freqcap.adapters.reports.evaluation import _jsonable

    return _jsonable(obj)


if __name__ == "__main__":
    main()
