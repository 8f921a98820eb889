"""The training-set gate: `resources/gx/training.json` on the point-in-time training set, before XGBoost sees it.

Same suite and parameters as `freqcap.adapters.gx.training_suite` (enough rows, keys, binary labels, the label-rate band
`label_rate_sane`, exposure indices, windows nested...), plus the leakage rules that need the set's as-of time.
Those are column-pair expectations on columns this gate derives, so the suite stays declarative and a runner that
does not derive them simply reports them as skipped (`meta.optional`):

- `_as_of`: the horizon the set was built at (events observed up to it);
- `_labels_complete_ts`: impression_ts + the label horizon (max of the attribution and click windows): when the
  impression's labels are fully known.

`features_before_impression` (feature_ts < impression_ts, i.e. before any event its labels count),
`features_not_after_as_of` and `labels_complete_by_as_of` then say that no feature and no label looks past what was
observable. With `<view>__snapshot_ts` columns (the audit engine's joined snapshot times) the
`*_snapshot_not_after_features` rules check the snapshot Feast joined is not newer than the feature time.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from freqcap.adapters.gx.errors import DataValidationError
from freqcap.adapters.gx.gate import GateReport, finish, read_suite_document, run_table
from freqcap.adapters.gx.training_suite import (
    TrainingValidationError,
    model_suite_path,
    read_for_validation,
    suite_parameters,
)
from freqcap.domain.training.config import ConversionModelConfig

log = logging.getLogger(__name__)

AS_OF_COLUMN = "_as_of"
LABELS_COMPLETE_COLUMN = "_labels_complete_ts"


class TrainingGateError(DataValidationError, TrainingValidationError):
    """The training set failed `resources/gx/training.json`; the message names each failed rule and observation.

    Also a `TrainingValidationError`, so callers of the training jobs catch it as before.
    """


def with_leakage_columns(frame: pd.DataFrame, as_of: datetime, label_horizon: timedelta) -> pd.DataFrame:
    """`frame` plus the derived `_as_of` and `_labels_complete_ts` columns (a shallow copy; `frame` is unchanged)."""
    out = frame.copy(deep=False)
    impression_ts = pd.to_datetime(out["impression_ts"], utc=True)
    unit = getattr(impression_ts.dtype, "unit", "us")
    out[AS_OF_COLUMN] = pd.Series(pd.Timestamp(as_of), index=out.index).astype(f"datetime64[{unit}, UTC]")
    out[LABELS_COMPLETE_COLUMN] = impression_ts + pd.Timedelta(label_horizon)
    return out


def validate_training_table(
    rows: pd.DataFrame | str | Path,
    config: ConversionModelConfig,
    *,
    allowed_formats: tuple[str, ...],
    as_of: datetime,
    suite_path: str | Path | None = None,
    docs_root: Path | None = None,
) -> GateReport:
    """Run the training-set suite with the leakage rules on `rows` (a frame or a Parquet path) as of `as_of`.

    Returns the report when every expectation holds; raises `TrainingGateError` naming each failed rule with
    what Great Expectations observed. With `docs_root`, the run is published to the Data Docs site there.
    """
    started = time.perf_counter()
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware (UTC)")
    as_of = as_of.astimezone(UTC)
    path = Path(suite_path) if suite_path is not None else model_suite_path(config.validation.suite)
    doc = read_suite_document(path)
    frame = read_for_validation(rows) if isinstance(rows, str | Path) else rows
    if "impression_ts" in frame.columns:
        frame = with_leakage_columns(frame, as_of, timedelta(seconds=config.label.horizon_seconds))
    parameters = suite_parameters(config, allowed_formats)
    run = run_table(frame, doc["expectations"], suite_name=doc["name"], table="training_set", parameters=parameters)
    report = finish(
        "training-set",
        doc["name"],
        path,
        [run],
        parameters={**parameters, "as_of": as_of, "label_horizon_seconds": config.label.horizon_seconds},
        started=started,
        context={"as_of": as_of.isoformat()},
        docs_root=docs_root,
    )
    message = report.failure_message()
    if message:
        log.error("%s", message)
        raise TrainingGateError(message, report)
    return report
