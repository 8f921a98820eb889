"""`drift_job`: the current window's rows against the training reference (and the champion's predictions), with
Evidently."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from freqcap.adapters.duckdb.current_rows import read_reference
from freqcap.adapters.mlflow.champion import champion_scorer
from freqcap.config import Settings
from freqcap.domain.monitoring.metrics import (
    ALL,
    MetricRow,
)
from freqcap.domain.training.config import load_model_config
from freqcap.jobs.monitoring.common import resolve_reference, write_json
from freqcap.layout import DataLayout, MonitoringRun, parse_as_of

if TYPE_CHECKING:
    from freqcap.adapters.evidently import DriftResult

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- drift


def drift_job(collected: dict[str, Any], settings: Settings, scorer: Any = None) -> dict[str, Any]:
    """Feature and prediction drift of the current rows against the training reference (Evidently); writes
    `drift.json`, the reference sample, and the latest HTML report (`<data_dir>/monitoring/drift_report.html`).

    Predictions come from `scorer` (a `prediction.Scorer`) when given, else from the champion model in MLflow
    (when `monitoring.drift.prediction` is on and there is one)."""
    started = time.perf_counter()
    cfg = settings.monitoring.drift
    run = MonitoringRun(Path(collected["run_dir"]))
    result: dict[str, Any] = {"computed": False, "rows": [], "notes": [], "columns": []}
    notes = result["notes"]

    def done() -> dict[str, Any]:
        write_json(run.drift, result)
        for n in notes:
            log.info("drift: %s", n)
        return {**result, "drift_path": str(run.drift)}

    if not collected.get("current_path"):
        notes.append("no current rows (no events directory)")
        return done()
    current = pd.read_parquet(collected["current_path"])
    if len(current) < cfg.min_rows:
        notes.append(f"{len(current)} current rows, fewer than drift.min_rows = {cfg.min_rows}: drift not computed")
        return done()
    model_config = load_model_config(settings.training.model_config_path)
    reference_path, source = resolve_reference(settings, model_config)
    result["reference"] = {"path": str(reference_path) if reference_path else None, "source": source}
    if reference_path is None:
        notes.append(f"no reference: {source}")
        return done()

    if scorer is None and cfg.prediction:
        scorer = _champion_scorer(settings, model_config.registered_model, notes)
    wanted = [*cfg.columns, *(scorer.input_columns if scorer else ())]
    reference = read_reference(reference_path, list(dict.fromkeys(wanted)), cfg.max_rows, cfg.seed)
    columns = [c for c in cfg.columns if c in current.columns and c in reference.columns]
    dropped = [c for c in cfg.columns if c not in columns]
    if dropped:
        notes.append(f"columns not on both sides, not compared: {dropped}")
    if not columns:
        notes.append("no column to compare")
        return done()
    if scorer is not None:
        current, reference, scorer = _with_predictions(scorer, current, reference, notes)
        if scorer is not None:
            result["model"] = scorer.name
    keep = [*columns, *(["prediction"] if scorer is not None else [])]
    current, reference = current[keep], reference[keep]
    current.to_parquet(collected["current_path"], index=False)
    reference_sample = run.reference_sample
    reference.to_parquet(reference_sample, index=False)

    drift, rows, html = _evidently_drift(current, reference, columns, settings, parse_as_of(collected["as_of"]))
    result.update(
        computed=True,
        columns=columns,
        drift=drift.to_dict(),
        rows=[r.to_dict() for r in rows],
        reference_sample=str(reference_sample),
        current_sample=collected["current_path"],
        report_html=str(html),
    )
    log.info(
        "drift: %d of %d columns drifted (share %.2f)%s; %d current vs %d reference rows, %.1fs",
        drift.drifted_count, len(columns), drift.drifted_share,
        f", prediction score {drift.prediction.score:.3f}" if drift.prediction else "",
        len(current), len(reference), time.perf_counter() - started,
    )  # fmt: skip
    return done()


def _champion_scorer(settings: Settings, registered_model: str, notes: list[str]) -> Any:
    """The champion model's scorer, or None (with a note: no champion, or it could not be loaded)."""
    try:
        scorer = champion_scorer(settings, registered_model)
    except Exception as exc:  # a broken registry must not stop feature drift; it is said
        notes.append(f"prediction drift skipped: the champion model could not be loaded ({exc})")
        return None
    if scorer is None:
        notes.append("prediction drift skipped: no champion model")
    return scorer


def _with_predictions(
    scorer: Any, current: pd.DataFrame, reference: pd.DataFrame, notes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """Both sides with the model's `prediction` column, and the scorer; the scorer is None (and a note says why)
    when a side lacks the model inputs."""
    missing = sorted(set(scorer.missing(current)) | set(scorer.missing(reference)))
    if missing:
        notes.append(
            f"prediction drift skipped: rows lack the model inputs {missing[:6]}{' ...' if len(missing) > 6 else ''}"
        )
        return current, reference, None
    # float64: models often answer in float32, and the drift score should not depend on that.
    current = current.assign(prediction=np.asarray(scorer.predict(current), dtype=np.float64))
    reference = reference.assign(prediction=np.asarray(scorer.predict(reference), dtype=np.float64))
    return current, reference, scorer


def _evidently_drift(
    current: pd.DataFrame, reference: pd.DataFrame, columns: list[str], settings: Settings, as_of: datetime
) -> tuple[DriftResult, list[MetricRow], Path]:
    """Evidently's drift of `columns` (and `prediction` when present): the result, its metric rows, and the latest
    HTML report (rewritten)."""
    from freqcap.adapters import evidently as evidently_io  # why: Evidently takes seconds to import

    snapshot = evidently_io.run_report(current, reference, columns, settings.monitoring.drift, None, timestamp=as_of)
    drift = evidently_io.drift_result(snapshot, columns, len(current), len(reference))
    html = evidently_io.save_report_html(snapshot, DataLayout.of(settings).drift_report)
    rows = [
        MetricRow("drift_share", ALL, drift.drifted_share, float(len(current))),
        MetricRow("drifted_columns", ALL, float(drift.drifted_count), float(len(current))),
    ]
    rows += [
        MetricRow("feature_drift_score", f"column={c.column}", c.score, float(len(current))) for c in drift.columns
    ]
    if drift.prediction is not None:
        rows.append(MetricRow("prediction_drift_score", ALL, drift.prediction.score, float(len(current))))
    return drift, rows, html
