"""Where the soft penalty's remaining gap to the true-fatigue oracle comes from (quality, not speed).

On simulated worlds with seeds *outside* the evaluation benchmark's (7…11: nothing here is tuned on them), the
policies are replayed on the same traffic and compared at equal impressions (the smallest natural volume of the
four; the others are matched with reserves, as in `freqcap.domain.evaluation`), each step adding one piece of
knowledge:

1. `soft`: the personalized soft penalty as fitted (cohort caps on the raw count in the window: what serving does);
2. `true_caps_raw`: the same soft penalty with the simulator's true cohort caps, still on the raw count — the
   step from 1 is the error of the fitted caps;
3. `true_caps_effective`: the true caps on each user's *true effective* count (decayed n_eff − 1 with the true
   recovery half-lives) — the step from 2 is what knowing exactly how far each individual has recovered adds to
   a cohort penalty, i.e. the most an individual, recovery-aware adjustment could gain;
4. `oracle`: the true fatigue multiplier as the penalty — the step from 3 is the penalty's shape.

Beside that chain, `curve`: the same fitted caps with the soft penalty shaped like each cohort's fitted curve
(`penalty_shape="curve"`, `freqcap.domain.curves.shape`), on the raw count like serving; its column "curve closes"
is the share of the soft → oracle gap it closes, (curve − soft) / (oracle − soft).

The ranker's score already holds each user's own propensity (b_u · format), so a softening by the user's own
conversion propensity has nothing left to add in this world: the oracle's edge is about fatigue alone.

    .venv/bin/python benchmarks/bench_oracle_gap.py [--users 20000 --days 14 --seeds 3 --base-seed 101]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import pairwise
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_result

from freqcap.config import SimulationConfig, load_settings, parse_duration
from freqcap.domain.curves.policy import build_policy
from freqcap.domain.evaluation.core import EvaluationConfig
from freqcap.domain.evaluation.fitting import fit_policy
from freqcap.domain.evaluation.frontier import FrontierPoint, interpolate, match_volume
from freqcap.domain.evaluation.policies import CREATED_AT, ReplayPolicy, no_cap, oracle_penalty, oracle_policy
from freqcap.domain.evaluation.replay import replay
from freqcap.domain.evaluation.stats import mean_ci
from freqcap.domain.evaluation.traffic import build_traffic
from freqcap.domain.simulate import simulate_world

POLICIES = ("soft", "true_caps_raw", "true_caps_effective", "oracle")  # the chain of the decomposition
SHOWN = ("soft", "curve", *POLICIES[1:])  # the table's conversion columns
LABELS = {
    "soft": "fitted soft penalty (generic shape), raw count",
    "curve": "fitted caps, curve-shaped penalty, raw count",
    "true_caps_raw": "true caps (soft), raw count",
    "true_caps_effective": "true caps (soft), true effective count",
    "oracle": "oracle: true fatigue penalty",
}


def one_world(users: int, days: int, seed: int) -> dict:
    cfg = EvaluationConfig(users=users, days=days)
    world = simulate_world(SimulationConfig(users=users, days=days, seed=seed), None)
    traffic = build_traffic(world, cfg.auction, seed)
    lookback = int(parse_duration(cfg.signal_lookback).total_seconds() * 1_000_000)

    def play(policy: ReplayPolicy, **kw):
        return replay(traffic, policy, floor=cfg.floor, signal_lookback_us=lookback, **kw)

    def point(r) -> FrontierPoint:
        return FrontierPoint(r.reserves[0], float(r.impressions), float(r.conversions), r.expected_conversions)

    base = play(no_cap("no cap"), record=True)
    fitted = fit_policy(
        world, base.log, load_settings().features, floor=cfg.floor, attribution_window=cfg.attribution_window
    )
    true_soft = oracle_policy(world.params, cfg.floor, mode="soft")
    curve = build_policy(fitted.fit.caps, created_at=CREATED_AT, penalty_shape="curve", published=fitted.fit.published)
    policies = {
        "soft": ReplayPolicy(LABELS["soft"], fitted.policy),
        "curve": ReplayPolicy(LABELS["curve"], curve),
        "true_caps_raw": ReplayPolicy(LABELS["true_caps_raw"], true_soft),
        "true_caps_effective": ReplayPolicy(LABELS["true_caps_effective"], true_soft, counts="effective"),
        "oracle": oracle_penalty(LABELS["oracle"]),
    }
    natural = {k: play(p) for k, p in policies.items()}
    runs = {k: [point(r)] for k, r in natural.items()}
    volume = min(p[0].impressions for p in runs.values())
    for key, pol in policies.items():
        if runs[key][0].impressions <= volume:
            continue

        def run(reserve: float, _key=key, _pol=pol):
            r = play(_pol.with_reserve(reserve))
            runs[_key].append(point(r))
            return point(r), r.best_value

        match_volume(
            run,
            [(runs[key][0], natural[key].best_value)],
            volume,
            tolerance=cfg.volume_tolerance,
            max_runs=cfg.max_match_runs,
        )
    conv = {k: interpolate(runs[k], volume) for k in policies}
    gap = conv["oracle"] - conv["soft"]
    return {
        "seed": seed,
        "volume": volume,
        "conversions": conv,
        "gap_relative": gap / conv["soft"],
        "step": {k: (conv[k] - conv[prev]) / gap for prev, k in pairwise(POLICIES)},
        "curve_closes": (conv["curve"] - conv["soft"]) / gap,
        "curve_relative": (conv["curve"] - conv["soft"]) / conv["soft"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--base-seed", type=int, default=101)
    args = parser.parse_args()
    started = time.perf_counter()
    worlds = [one_world(args.users, args.days, args.base_seed + i) for i in range(args.seeds)]
    seconds = time.perf_counter() - started
    rows = [
        [
            w["seed"],
            f"{w['volume']:,.0f}",
            *(f"{w['conversions'][k]:,.0f}" for k in SHOWN),
            f"{100 * w['gap_relative']:+.2f} %",
            *(f"{100 * w['step'][k]:+.0f} %" for k in POLICIES[1:]),
            f"{100 * w['curve_closes']:+.0f} %",
        ]
        for w in worlds
    ]
    gap_ci = mean_ci([w["gap_relative"] for w in worlds])
    closes = mean_ci([w["curve_closes"] for w in worlds])
    lift = mean_ci([w["curve_relative"] for w in worlds])
    steps = {k: mean_ci([w["step"][k] for w in worlds]) for k in POLICIES[1:]}
    command = "`.venv/bin/python benchmarks/bench_oracle_gap.py " + (
        f"--users {args.users} --days {args.days} --seeds {args.seeds} --base-seed {args.base_seed}`"
    )
    body = "\n".join(
        [
            f"Worlds of {args.users:,} users × {args.days} days, seeds {args.base_seed}…{args.base_seed + args.seeds - 1}"
            f" (not the evaluation's 7…11). Reproduce: {command} ({seconds:.0f} s wall).",
            "",
            table(
                [
                    "seed",
                    "impressions (equal)",
                    *(f"conversions: {LABELS[k]}" for k in SHOWN),
                    "oracle ahead of 1",
                    "share of the gap: 1 → 2 (caps)",
                    "2 → 3 (individual recovery)",
                    "3 → 4 (penalty shape)",
                    "curve closes",
                ],
                rows,
            ),
            "",
            f"Oracle ahead of the soft penalty: **{100 * gap_ci.mean:+.2f} %** (95 % CI {100 * gap_ci.low:+.2f} to "
            f"{100 * gap_ci.high:+.2f} %). Shares of that gap, means over seeds with 95 % CIs: "
            + "; ".join(
                f"{name} **{100 * steps[k].mean:+.0f} %** ({100 * steps[k].low:+.0f} to {100 * steps[k].high:+.0f})"
                for k, name in zip(POLICIES[1:], ("true caps", "individual recovery", "penalty shape"), strict=True)
            )
            + ".",
            "",
            f"Curve-shaped penalty (same fitted caps) vs the generic soft penalty: **{100 * lift.mean:+.2f} %** "
            f"conversions (95 % CI {100 * lift.low:+.2f} to {100 * lift.high:+.2f} %); share of the soft → oracle "
            f"gap it closes: **{100 * closes.mean:+.0f} %** (95 % CI {100 * closes.low:+.0f} to "
            f"{100 * closes.high:+.0f} %).",
        ]
    )
    write_result(
        "oracle_gap", "Soft penalty vs the oracle: what recovery-aware counts and a curve-shaped penalty close", body
    )
    Path(__file__).resolve().parent.joinpath("results", "oracle_gap.json").write_text(
        json.dumps({"worlds": worlds, "seconds": seconds, "args": vars(args)}, indent=2, default=float)
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
