"""Offline policy evaluation: the same simulated traffic replayed under several frequency policies.

    from freqcap.domain.evaluation import EvaluationConfig, run_evaluation
    report = run_evaluation(EvaluationConfig(users=20_000, days=14, seeds=5), load_settings().features)

Layout: `traffic` (opportunities, candidates, scores, common random numbers), `policies` (the engine's rule
compiled to arrays; no cap, global cap, personalized, oracle policies), `replay` (one policy or a user split
played step by step, the simulator's true response), `fitting` (`freqcap curves fit` on a replay's events),
`frontier` (equal impression volume by reserve), `stats` (intervals over seeds, holdout lift), `holdout`
(hash assignment), `core` (the evaluation per seed and across seeds). The report's tables and plot are
`freqcap.adapters.reports.evaluation`, its MLflow run `freqcap.adapters.mlflow.evaluation`, and what
`freqcap evaluate` runs `freqcap.jobs.evaluate`.
"""

from freqcap.domain.evaluation.core import (
    EvaluationConfig,
    EvaluationReport,
    SeedEvaluation,
    evaluate_seed,
    run_evaluation,
)
from freqcap.domain.evaluation.holdout import holdout_assignment
from freqcap.domain.evaluation.policies import ReplayPolicy, global_cap_policy, no_cap, oracle_penalty, oracle_policy
from freqcap.domain.evaluation.replay import ReplayResult, replay
from freqcap.domain.evaluation.traffic import AuctionConfig, Traffic, build_traffic

__all__ = [
    "AuctionConfig",
    "EvaluationConfig",
    "EvaluationReport",
    "ReplayPolicy",
    "ReplayResult",
    "SeedEvaluation",
    "Traffic",
    "build_traffic",
    "evaluate_seed",
    "global_cap_policy",
    "holdout_assignment",
    "no_cap",
    "oracle_penalty",
    "oracle_policy",
    "replay",
    "run_evaluation",
]
