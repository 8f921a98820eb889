"""The evaluation end to end on simulated worlds (pure: no files, no tracking; see `freqcap.adapters.reports.evaluation`).

Per seed (one simulated world each, `SimulationConfig(users, days, seed = base_seed + i)`):

1. `build_traffic`: the world's opportunities with K candidates, scores and common random numbers.
2. **No cap** (reserve 0), recorded; `freqcap curves fit` on its events gives the **personalized** policy
   (`fitting.fit_policy`): soft as proposed (penalty shape `penalty_shape`, by default the fitted curve's), and
   the same caps in hard mode.
3. **Global cap sweep**: one hard cap for every user at the campaign level (28 d window by default) for each
   value in `global_caps` (extended upwards while the best is the largest); the **best global cap** is the one
   with the most conversions on this world (chosen in-sample, which can only flatter the baseline).
4. The natural run (reserve 0) of every policy, plus the two oracles: **oracle caps** (the simulator's true caps,
   hard, on the true effective exposure count) and the **oracle penalty** (the true fatigue multiplier).
5. **Equal volume**: for each comparison (A vs B) the volume is v = min(natural impressions of A, of B); the
   policy whose natural volume is above v is replayed with reserves until a run lands within `volume_tolerance`
   of v (`frontier.match_volume`), and its conversions at v are interpolated between the bracketing runs.
6. **Holdout**: `holdout_share` of users (hash of user id) stay on the best global cap, the others get the
   personalized soft penalty at the reserve that matched the global cap's volume; one replay of that split.
   The lift estimated from the split is compared with the replay's counterfactual lift (the same two policies,
   each played for everyone).

Across seeds every metric is a mean with a Student-t interval over the per-seed values (the seeds are
independent worlds; within a seed all policies share the traffic and the random draws, so paired differences
are much tighter than the metrics themselves). The holdout is also pooled over all seeds' users.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from freqcap.config import FeaturesConfig, SimulationConfig, parse_duration
from freqcap.domain.curves.policy import PenaltyShape
from freqcap.domain.evaluation.fitting import fit_policy
from freqcap.domain.evaluation.frontier import FrontierPoint, interpolate, match_volume, nearest_gap
from freqcap.domain.evaluation.holdout import DEFAULT_SALT, holdout_assignment
from freqcap.domain.evaluation.policies import (
    ReplayPolicy,
    global_cap_policy,
    no_cap,
    oracle_penalty,
    oracle_policy,
    true_caps,
    with_mode,
)
from freqcap.domain.evaluation.replay import ReplayResult, replay
from freqcap.domain.evaluation.stats import Interval, LiftEstimate, mean_ci, ratio_lift
from freqcap.domain.evaluation.traffic import AuctionConfig, build_traffic
from freqcap.domain.policy import Policy
from freqcap.domain.simulate.model import simulate_world
from freqcap.domain.simulate.params import ModelParams
from freqcap.domain.simulate.tables import dictionaries

log = logging.getLogger(__name__)

NO_CAP, GLOBAL, HARD, SOFT, ORACLE_CAPS, ORACLE_PENALTY, GIVEN = (
    "no_cap",
    "global_best",
    "personalized_hard",
    "personalized_soft",
    "oracle_caps",
    "oracle_penalty",
    "given_policy",
)
LABELS = {
    NO_CAP: "no cap",
    GLOBAL: "best global campaign cap",
    HARD: "personalized hard caps",
    SOFT: "personalized soft penalty",
    ORACLE_CAPS: "oracle: true caps (hard)",
    ORACLE_PENALTY: "oracle: true fatigue penalty",
    GIVEN: "given policy",
}
ORACLES = (ORACLE_CAPS, ORACLE_PENALTY)


@dataclass(frozen=True)
class EvaluationConfig:
    users: int = 20_000
    days: int = 14
    seeds: int = 5
    base_seed: int = 7
    start: str = "2026-10-01T00:00:00+00:00"
    auction: AuctionConfig = field(default_factory=AuctionConfig)
    floor: float = 0.5  # relative floor of the fitted caps and of the true caps
    penalty_shape: PenaltyShape = "curve"  # of the fitted policy's soft penalty (as `training.penalty_shape`)
    attribution_window: str = "2d"  # of the curve fit (14-day worlds: 96 % of conversions come within 2 days)
    global_caps: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12, 15)
    global_level: str = "campaign"
    global_window: str = "28d"
    volume_tolerance: float = 0.01
    max_match_runs: int = 3
    holdout_share: float = 0.1
    holdout_salt: str = DEFAULT_SALT
    confidence: float = 0.95
    signal_lookback: str = "28d"
    given_policy: Policy | None = None  # an extra policy to evaluate (e.g. the champion's), replayed as written
    given_policy_name: str = "given policy"

    def simulation(self, i: int) -> SimulationConfig:
        return SimulationConfig(users=self.users, days=self.days, seed=self.base_seed + i, start=self.start)

    def to_params(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("auction", "given_policy")}
        out.update({f"auction_{k}": v for k, v in asdict(self.auction).items()})
        out["given_policy"] = None if self.given_policy is None else self.given_policy.version
        return out


@dataclass
class SeedEvaluation:
    seed: int
    users: int
    opportunities: int
    global_cap: int
    sweep: list[dict[str, float]]
    natural: dict[str, dict[str, float]]  # policy key -> summary of its reserve-0 run
    frontier: dict[str, list[FrontierPoint]]  # policy key -> every run (natural and reserve-matched)
    comparisons: list[dict[str, Any]]  # A vs B at equal volume
    holdout: dict[str, Any]
    holdout_users: dict[str, np.ndarray]  # y, treated, opportunities (for pooling over seeds)
    fitted_caps: pd.DataFrame
    fitted_policy: Policy
    true_caps: dict[str, dict[str, int]]
    replays: int
    seconds: dict[str, float]


def _point(r: ReplayResult) -> FrontierPoint:
    return FrontierPoint(r.reserves[0], float(r.impressions), float(r.conversions), r.expected_conversions)


def evaluate_seed(
    config: EvaluationConfig, i: int, features: FeaturesConfig, params: ModelParams | None = None
) -> SeedEvaluation:
    """Everything for one world (see the module docstring)."""
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(seconds.get(stage, 0.0) + now - clock, 3)
        clock = now

    sim = config.simulation(i)
    world = simulate_world(sim, params)
    traffic = build_traffic(world, config.auction, sim.seed)
    lookback = int(parse_duration(config.signal_lookback).total_seconds() * 1_000_000)
    lap("world")
    n_replays = 0

    def play(policy: ReplayPolicy, **kw) -> ReplayResult:
        nonlocal n_replays
        n_replays += 1
        return replay(traffic, policy, floor=config.floor, signal_lookback_us=lookback, **kw)

    base = play(no_cap(LABELS[NO_CAP]), record=True)
    assert base.log is not None
    fitted = fit_policy(
        world,
        base.log,
        features,
        floor=config.floor,
        attribution_window=config.attribution_window,
        penalty_shape=config.penalty_shape,
    )
    lap("baseline_and_fit")

    # -- the global cap sweep
    sweep: dict[int, ReplayResult] = {}
    caps = sorted(set(config.global_caps))
    while caps:
        for cap in caps:
            sweep[cap] = play(ReplayPolicy(f"global cap {cap}", _global(config, cap)))
        top = max(sweep)
        best = _best_cap(sweep)
        caps = [int(np.ceil(top * 1.5))] if best == top and top < 200 else []
    global_cap = _best_cap(sweep)
    lap("sweep")

    policies: dict[str, ReplayPolicy] = {
        NO_CAP: no_cap(LABELS[NO_CAP]),
        GLOBAL: ReplayPolicy(LABELS[GLOBAL], _global(config, global_cap)),
        HARD: ReplayPolicy(LABELS[HARD], with_mode(fitted.policy, "hard")),
        SOFT: ReplayPolicy(LABELS[SOFT], fitted.policy),
        ORACLE_CAPS: ReplayPolicy(LABELS[ORACLE_CAPS], oracle_policy(world.params, config.floor), counts="effective"),
        ORACLE_PENALTY: oracle_penalty(LABELS[ORACLE_PENALTY]),
    }
    if config.given_policy is not None:
        policies[GIVEN] = ReplayPolicy(config.given_policy_name, config.given_policy)
    runs: dict[str, list[tuple[FrontierPoint, np.ndarray, ReplayResult]]] = {
        NO_CAP: [(_point(base), base.best_value, base)],
        GLOBAL: [(_point(sweep[global_cap]), sweep[global_cap].best_value, sweep[global_cap])],
    }
    for key, pol in policies.items():
        if key not in runs:
            r = play(pol)
            runs[key] = [(_point(r), r.best_value, r)]
    natural = {key: runs[key][0][2].summary() for key in policies}
    lap("policies")

    # -- equal volume
    def ensure(key: str, volume: float) -> None:
        def run(reserve: float, _key=key) -> tuple[FrontierPoint, np.ndarray]:
            r = play(policies[_key].with_reserve(reserve))
            runs[_key].append((_point(r), r.best_value, r))
            return _point(r), r.best_value

        known = [(p, b) for p, b, _ in runs[key]]
        match_volume(run, known, volume, tolerance=config.volume_tolerance, max_runs=config.max_match_runs)

    pairs = [(k, NO_CAP) for k in policies if k != NO_CAP]
    pairs += [(k, GLOBAL) for k in policies if k not in (GLOBAL, NO_CAP)]
    pairs += [(ORACLE_PENALTY, k) for k in policies if k not in (ORACLE_PENALTY, NO_CAP, GLOBAL)]
    pairs = list(dict.fromkeys(pairs))
    comparisons = []
    for a, b in pairs:
        volume = min(natural[a]["impressions"], natural[b]["impressions"])
        for key in (a, b):
            if natural[key]["impressions"] > volume:
                ensure(key, volume)
        pa, pb = [p for p, _, _ in runs[a]], [p for p, _, _ in runs[b]]
        ca, cb = interpolate(pa, volume), interpolate(pb, volume)
        comparisons.append(
            {
                "a": a,
                "b": b,
                "volume": volume,
                "conversions_a": ca,
                "conversions_b": cb,
                "difference": ca - cb,
                "relative": ca / cb - 1.0 if cb else float("nan"),
                "expected_a": interpolate(pa, volume, "expected_conversions"),
                "expected_b": interpolate(pb, volume, "expected_conversions"),
                "gap_a": nearest_gap(pa, volume),
                "gap_b": nearest_gap(pb, volume),
            }
        )
    lap("equal_volume")

    # -- the holdout split: soft at the global cap's volume for most users, the global cap for the holdout
    target = natural[GLOBAL]["impressions"]
    soft_run = min(runs[SOFT], key=lambda x: abs(x[0].impressions - target))[2]
    global_run = runs[GLOBAL][0][2]
    user_ids = dictionaries(world).user_ids.to_pylist()
    held = holdout_assignment(user_ids, config.holdout_share, config.holdout_salt)
    soft_matched = policies[SOFT].with_reserve(soft_run.reserves[0])
    split = play([soft_matched, policies[GLOBAL]], arm_of_user=held.astype(np.int64))
    treated = ~held
    plain = ratio_lift(split.user_conversions, treated, confidence=config.confidence)
    cuped = ratio_lift(
        split.user_conversions, treated, covariate=split.user_opportunities, confidence=config.confidence
    )
    replay_lift = soft_run.conversions / global_run.conversions - 1.0
    holdout = {
        "treatment": f"{LABELS[SOFT]} (reserve {soft_run.reserves[0]:.4g})",
        "control": f"{LABELS[GLOBAL]} ({global_cap})",
        "share": config.holdout_share,
        "replay_lift": replay_lift,
        "replay_impressions_ratio": soft_run.impressions / global_run.impressions,
        "treated_conversions_replay": soft_run.conversions,
        "control_conversions_replay": global_run.conversions,
        "estimate": plain.to_dict(),
        "estimate_cuped": cuped.to_dict(),
        "covered": plain.covers(replay_lift),
        "covered_cuped": cuped.covers(replay_lift),
        "impressions_per_user_ratio": _per_user_ratio(split.user_impressions, treated),
    }
    lap("holdout")
    return SeedEvaluation(
        seed=sim.seed,
        users=sim.users,
        opportunities=traffic.n_opportunities,
        global_cap=global_cap,
        sweep=[{"cap": c, **r.summary()} for c, r in sorted(sweep.items())],
        natural=natural,
        frontier={k: [p for p, _, _ in v] for k, v in runs.items()},
        comparisons=comparisons,
        holdout=holdout,
        holdout_users={
            "y": split.user_conversions,
            "treated": treated,
            "opportunities": split.user_opportunities,
        },
        fitted_caps=fitted.fit.caps,
        fitted_policy=fitted.policy,
        true_caps=true_caps(world.params, config.floor),
        replays=n_replays,
        seconds=seconds,
    )


def _global(config: EvaluationConfig, cap: int) -> Policy:
    return global_cap_policy(cap, level=config.global_level, window=config.global_window)


def _best_cap(sweep: dict[int, ReplayResult]) -> int:
    """Most conversions; ties go to the cap with fewer impressions."""
    return max(sweep, key=lambda c: (sweep[c].conversions, -sweep[c].impressions))


def _per_user_ratio(values: np.ndarray, treated: np.ndarray) -> float:
    return float(values[treated].mean() / values[~treated].mean())


# ------------------------------------------------------------------------------------------------ across seeds


@dataclass
class EvaluationReport:
    config: EvaluationConfig
    seeds: list[SeedEvaluation]
    seconds: float

    # ---- tables
    def policy_keys(self) -> list[str]:
        return list(self.seeds[0].natural)

    def comparison(self, a: str, b: str, field_: str = "relative") -> Interval:
        vals = [next(c[field_] for c in s.comparisons if c["a"] == a and c["b"] == b) for s in self.seeds]
        return mean_ci(vals, self.config.confidence)

    def has_comparison(self, a: str, b: str) -> bool:
        return any(c["a"] == a and c["b"] == b for c in self.seeds[0].comparisons)

    def policy_table(self) -> pd.DataFrame:
        """One row per policy: each metric's mean and CI over seeds."""
        rows = []
        conf = self.config.confidence
        for key in self.policy_keys():
            row: dict[str, Any] = {"policy": key, "label": self.label(key)}
            for metric in ("impressions", "conversions", "conversions_per_mille", "past_optimal_share", "fill_rate"):
                iv = mean_ci([s.natural[key][metric] for s in self.seeds], conf)
                row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = iv.mean, iv.low, iv.high
            for ref, tag in ((NO_CAP, "vs_no_cap"), (GLOBAL, "vs_global")):
                for fld, suffix in (("difference", "incremental"), ("relative", "relative")):
                    if key == ref or not self.has_comparison(key, ref):
                        iv = Interval(float("nan"), float("nan"), float("nan"), 0)
                    else:
                        iv = self.comparison(key, ref, fld)
                    name = f"{suffix}_{tag}"
                    row[name], row[f"{name}_low"], row[f"{name}_high"] = iv.mean, iv.low, iv.high
            rows.append(row)
        return pd.DataFrame(rows)

    def sweep_table(self) -> pd.DataFrame:
        frames = [pd.DataFrame(s.sweep).assign(seed=s.seed) for s in self.seeds]
        df = pd.concat(frames, ignore_index=True)
        conf = self.config.confidence
        rows = []
        for cap, g in df.groupby("cap"):
            row: dict[str, Any] = {"cap": int(cap), "seeds": len(g)}
            for metric in ("impressions", "conversions", "conversions_per_mille", "past_optimal_share"):
                iv = mean_ci(g[metric].tolist(), conf)
                row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = iv.mean, iv.low, iv.high
            row["chosen_in_seeds"] = sum(s.global_cap == cap for s in self.seeds)
            rows.append(row)
        return pd.DataFrame(rows)

    def label(self, key: str) -> str:
        if key == GIVEN:
            return self.config.given_policy_name
        if key == GLOBAL:
            caps = sorted({s.global_cap for s in self.seeds})
            return f"{LABELS[GLOBAL]} ({'/'.join(map(str, caps))} per {self.config.global_window})"
        return LABELS[key]

    # ---- acceptance
    def headline(self) -> dict[str, Any]:
        """Personalized soft penalty vs the best global cap at the global cap's impression volume."""
        rel = self.comparison(SOFT, GLOBAL, "relative")
        diff = self.comparison(SOFT, GLOBAL, "difference")
        return {
            "relative": rel.to_dict(),
            "incremental_conversions": diff.to_dict(),
            "target": 0.05,
            "meets_target": bool(rel.mean >= 0.05 and rel.excludes_zero()),
            "interval_excludes_zero": rel.excludes_zero(),
            "lower_bound_meets_target": bool(rel.low >= 0.05),
        }

    def oracle_check(self) -> dict[str, Any]:
        """Does the oracle penalty beat every other policy at that policy's volume, in every seed?"""
        out = {}
        for key in self.policy_keys():
            if key == ORACLE_PENALTY or not self.has_comparison(ORACLE_PENALTY, key):
                continue
            diffs = [next(c for c in s.comparisons if c["a"] == ORACLE_PENALTY and c["b"] == key) for s in self.seeds]
            rel = mean_ci([d["relative"] for d in diffs], self.config.confidence)
            out[key] = {
                "relative": rel.to_dict(),
                "wins_in_seeds": int(sum(d["difference"] > 0 for d in diffs)),
                "seeds": len(diffs),
            }
        return {"policies": out, "beats_all": all(v["wins_in_seeds"] == v["seeds"] for v in out.values())}

    def holdout_pooled(self) -> dict[str, Any]:
        """The holdout over every seed's users together, against the pooled replay lift."""
        y = np.concatenate([s.holdout_users["y"] for s in self.seeds])
        t = np.concatenate([s.holdout_users["treated"] for s in self.seeds])
        x = np.concatenate([s.holdout_users["opportunities"] for s in self.seeds])
        conf = self.config.confidence
        plain: LiftEstimate = ratio_lift(y, t, confidence=conf)
        cuped: LiftEstimate = ratio_lift(y, t, covariate=x, confidence=conf)
        treated = sum(s.holdout["treated_conversions_replay"] for s in self.seeds)
        control = sum(s.holdout["control_conversions_replay"] for s in self.seeds)
        lift = treated / control - 1.0
        return {
            "replay_lift": lift,
            "estimate": plain.to_dict(),
            "estimate_cuped": cuped.to_dict(),
            "covered": plain.covers(lift),
            "covered_cuped": cuped.covers(lift),
            "seeds_covered": int(sum(s.holdout["covered"] for s in self.seeds)),
            "seeds_covered_cuped": int(sum(s.holdout["covered_cuped"] for s in self.seeds)),
            "seeds": len(self.seeds),
        }

    def frontier_table(self) -> pd.DataFrame:
        rows = []
        for s in self.seeds:
            for key, points in s.frontier.items():
                for p in points:
                    rows.append({"seed": s.seed, "policy": key, **asdict(p)})
        return pd.DataFrame(rows)

    def summary(self) -> dict[str, Any]:
        return {
            "config": self.config.to_params(),
            "seeds": [s.seed for s in self.seeds],
            "global_caps": [s.global_cap for s in self.seeds],
            "policies": self.policy_table().to_dict(orient="records"),
            "headline": self.headline(),
            "oracle_check": self.oracle_check(),
            "holdout": self.holdout_pooled(),
            "holdout_by_seed": [s.holdout | {"seed": s.seed} for s in self.seeds],
            "replays": sum(s.replays for s in self.seeds),
            "seconds": self.seconds,
            "seconds_by_stage": _sum_stages(self.seeds),
        }


def _sum_stages(seeds: list[SeedEvaluation]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in seeds:
        for k, v in s.seconds.items():
            out[k] = round(out.get(k, 0.0) + v, 3)
    return out


def _seed_job(args: tuple[EvaluationConfig, int, FeaturesConfig, ModelParams | None]) -> SeedEvaluation:
    config, i, features, params = args
    return evaluate_seed(config, i, features, params)


def run_evaluation(
    config: EvaluationConfig,
    features: FeaturesConfig,
    *,
    params: ModelParams | None = None,
    workers: int = 1,
    progress: Callable[[SeedEvaluation], None] | None = None,
) -> EvaluationReport:
    """Evaluate every seed (in `workers` processes) and collect the report."""
    if config.seeds < 1:
        raise ValueError("seeds must be ≥ 1")
    started = time.perf_counter()
    jobs = [(config, i, features, params) for i in range(config.seeds)]
    results: list[SeedEvaluation] = []
    if workers > 1 and config.seeds > 1:
        with ProcessPoolExecutor(max_workers=min(workers, config.seeds)) as pool:
            for res in pool.map(_seed_job, jobs):
                results.append(res)
                if progress:
                    progress(res)
    else:
        for job in jobs:
            res = _seed_job(job)
            results.append(res)
            if progress:
                progress(res)
    return EvaluationReport(replace(config), results, time.perf_counter() - started)
