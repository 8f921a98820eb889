"""Training-DAG jobs owned outside `freqcap.domain.training`: fitting the empirical curves and attaching them, with the
proposed policy, to the MLflow run of the model. Plain JSON values in and out."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from freqcap.config import Settings
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)


def curves_dir(settings: Settings, as_of: str) -> Path:
    return DataLayout.of(settings).curves_dir(as_of)


def fit_curves_job(
    events_dir: str, as_of: str, settings: Settings, users: str | None = None, floor: float | None = None
) -> dict[str, Any]:
    """Fit survivorship-robust exposure–response curves and propose caps and a policy (freqcap.domain.curves)."""
    from freqcap.jobs.curves import fit_curves_to_dir

    kwargs: dict[str, Any] = {"users": Path(users) if users else None}
    if floor is not None:
        kwargs["floor"] = floor
    summary = fit_curves_to_dir(Path(events_dir), curves_dir(settings, as_of), **kwargs)
    return json.loads(json.dumps(summary.to_dict(), default=str))


def attach_curves_job(
    trained: dict[str, Any], gated: dict[str, Any], curves: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """Log curves, caps, plots, the model-vs-empirical cross-check and the proposed policy to the model's run;
    tag the registered version with the policy it proposes."""
    import mlflow

    from freqcap.adapters.mlflow.tracking import client, configure
    from freqcap.domain.policy import load_policy

    configure(settings)
    out_dir = Path(curves["out_dir"])
    policy = load_policy(out_dir / "policy.yaml")
    mc = client(settings)
    run_id = trained["run_id"]
    for path in sorted(out_dir.iterdir()):
        if path.is_file():
            mc.log_artifact(run_id, str(path), artifact_path="curves" if path.suffix != ".png" else "curves/plots")
    comparison = _cross_check(trained, out_dir)
    flagged = int(comparison["flagged"].sum())
    mc.log_metric(run_id, "curve_disagreements", flagged)
    mc.log_text(run_id, comparison.to_csv(index=False), "curves/model_vs_empirical.csv")
    if flagged:
        log.warning(
            "model and empirical curves disagree for %d cohort x level(s): see curves/model_vs_empirical.csv", flagged
        )
    mc.set_tag(run_id, "freqcap.policy_version", policy.version)
    mc.set_model_version_tag(gated["registered_model"], gated["version"], "policy_version", policy.version)
    mlflow.end_run()
    return {
        "run_id": run_id,
        "policy_version": policy.version,
        "policy_path": str(out_dir / "policy.yaml"),
        "model_version": gated["version"],
        "promoted": gated["promoted"],
        "curve_disagreements": flagged,
        "curve_pairs_compared": len(comparison),
    }


def _cross_check(trained: dict[str, Any], out_dir: Path):
    """Per cohort × level: does the model-based curve (logged by training) leave the empirical CI?"""
    import mlflow
    import pandas as pd

    from freqcap.domain.curves import compare_model_curves

    local = mlflow.artifacts.download_artifacts(run_id=trained["run_id"], artifact_path="curves/model_curve.parquet")
    return compare_model_curves(pd.read_parquet(local), out_dir / "curves.parquet")
