"""The file/tracking adapter: `evaluate_to_dir` is what `freqcap evaluate` runs."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from freqcap.adapters.mlflow.evaluation import DEFAULT_EXPERIMENT, log_evaluation
from freqcap.adapters.reports.evaluation import write_report
from freqcap.domain.evaluation.core import EvaluationConfig, EvaluationReport, SeedEvaluation, run_evaluation

log = logging.getLogger(__name__)


def tracking_configured(settings: Any) -> bool:
    """MLflow logging is on by default only when a tracking URI is configured (settings or environment)."""
    tracking = getattr(settings, "tracking", None)
    return bool(getattr(tracking, "tracking_uri", None))


def evaluate_to_dir(
    out_dir: str | Path,
    config: EvaluationConfig,
    settings: Any,
    *,
    workers: int = 1,
    mlflow: bool | None = None,
    experiment: str | None = None,
) -> tuple[EvaluationReport, dict[str, Path], dict[str, str] | None]:
    """Run the evaluation, write the report under `out_dir` and, when `mlflow` (default: when tracking is
    configured), log it as an MLflow run. Returns (report, written paths, run info or None)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    def progress(s: SeedEvaluation) -> None:
        log.info("seed %d: best global cap %d, %d replays in %.0f s", s.seed, s.global_cap, s.replays,
                 sum(s.seconds.values()))  # fmt: skip

    report = run_evaluation(config, settings.features, workers=workers, progress=progress)
    paths = write_report(report, out_dir)
    run = None
    if tracking_configured(settings) if mlflow is None else mlflow:
        run = log_evaluation(settings, report, out_dir, experiment=experiment or DEFAULT_EXPERIMENT)
        log.info("logged evaluation run %s to %s", run["run_id"], run["tracking_uri"])
    return report, paths, run
