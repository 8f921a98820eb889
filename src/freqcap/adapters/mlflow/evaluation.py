"""MLflow adapter: one run per evaluation, with its parameters, headline metrics and the report as artifacts.

Run name `evaluate-<users>u-<days>d-<seeds>s`, experiment `freqcap-evaluation` by default, tags
`freqcap.kind = policy_evaluation`, `freqcap.meets_target`, `freqcap.git_sha`, `freqcap.code_version`.
Metrics: `<policy>.<metric>` for every policy row (conversions, impressions, conversions_per_mille,
past_optimal_share, relative_vs_no_cap, relative_vs_global, each with `_low` / `_high`),
`headline.relative[_low|_high]`, `holdout.lift[_low|_high]`, `holdout.replay_lift`, `oracle.beats_all`,
`seconds` (e.g. `personalized_soft.relative_vs_global_low` for comparing runs in the MLflow UI).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from freqcap.adapters.mlflow.tracking import code_version, configure, ensure_experiment, git_version
from freqcap.domain.evaluation.core import EvaluationReport

KIND = "policy_evaluation"
DEFAULT_EXPERIMENT = "freqcap-evaluation"
_ROW_METRICS = (
    "impressions",
    "conversions",
    "conversions_per_mille",
    "past_optimal_share",
    "relative_vs_no_cap",
    "relative_vs_global",
)


def evaluation_metrics(report: EvaluationReport) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in report.policy_table().to_dict(orient="records"):
        for m in _ROW_METRICS:
            for suffix in ("", "_low", "_high"):
                out[f"{row['policy']}.{m}{suffix}"] = row[f"{m}{suffix}"]
    h = report.headline()
    out["headline.relative"] = h["relative"]["mean"]
    out["headline.relative_low"] = h["relative"]["low"]
    out["headline.relative_high"] = h["relative"]["high"]
    out["headline.incremental_conversions"] = h["incremental_conversions"]["mean"]
    out["headline.meets_target"] = float(h["meets_target"])
    ho = report.holdout_pooled()
    out["holdout.replay_lift"] = ho["replay_lift"]
    out["holdout.lift"] = ho["estimate"]["lift"]
    out["holdout.lift_low"] = ho["estimate"]["low"]
    out["holdout.lift_high"] = ho["estimate"]["high"]
    out["holdout.covered"] = float(ho["covered"])
    out["oracle.beats_all"] = float(report.oracle_check()["beats_all"])
    out["seconds"] = report.seconds
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def log_evaluation(
    settings: Any,
    report: EvaluationReport,
    out_dir: str | Path,
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
) -> dict[str, str]:
    """Log `report` (and every file under `out_dir`) as one MLflow run; returns run id, name and tracking URI."""
    import mlflow

    resolved = configure(settings)
    experiment_id = ensure_experiment(settings, experiment)
    c = report.config
    run_name = run_name or f"evaluate-{c.users}u-{c.days}d-{c.seeds}s"
    git = git_version()
    tags = {
        "freqcap.kind": KIND,
        "freqcap.meets_target": str(report.headline()["meets_target"]).lower(),
        "freqcap.global_caps": ",".join(str(s.global_cap) for s in report.seeds),
        "freqcap.git_sha": git["git_sha"],
        "freqcap.git_dirty": git["git_dirty"],
        "freqcap.code_version": code_version(),
    }
    params = {k: ("" if v is None else str(v))[:500] for k, v in c.to_params().items()}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(evaluation_metrics(report))
        mlflow.log_artifacts(str(out_dir))
        run_id = run.info.run_id
    return {
        "run_id": run_id,
        "run_name": run_name,
        "experiment_id": experiment_id,
        "tracking_uri": resolved.tracking_uri,
    }
