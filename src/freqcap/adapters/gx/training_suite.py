"""The training-set gate: Great Expectations runs `resources/gx/training.json` on the rows before training.

The suite is a plain GX 1.x ExpectationSuite document. Each expectation's `meta.rule` names it in messages;
`meta.optional: true` skips it (reported as skipped) when one of its columns is not in the training set (a
Feast feature the model config does not request). Run-time values are suite parameters (`min_rows`,
`label_rate_min`, `label_rate_max`, `allowed_formats`, `max_exposure`, `lookback_hours`). If any expectation
fails, `validate_training_set` raises `TrainingValidationError` naming every failed rule with what GX observed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.adapters.gx.runtime import ephemeral_context, import_gx
from freqcap.domain.training.config import ConversionModelConfig
from freqcap.errors import FreqcapError
from freqcap.resources import suite_path as packaged_suite

log = logging.getLogger(__name__)


def model_suite_path(suite: str | Path) -> Path:
    """The model config's `validation.suite`: a file when it is absolute or exists from the working directory, else
    the packaged suite of that name (`training.json`)."""
    path = Path(suite)
    if path.is_absolute() or path.exists():
        return path
    return packaged_suite(path.name)


class TrainingValidationError(FreqcapError):
    """The training set failed its expectations; nothing may be trained on it. `report` has the details."""

    def __init__(self, message: str, report: TrainingValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ExpectationResult:
    rule: str
    expectation_type: str
    columns: tuple[str, ...]
    success: bool | None  # None: skipped
    observed: Any = None
    unexpected_count: int | None = None
    skipped: str | None = None

    def describe(self) -> str:
        cols = f" on {', '.join(self.columns)}" if self.columns else ""
        what = []
        if self.unexpected_count:
            what.append(f"{self.unexpected_count} unexpected rows")
        if self.observed is not None:
            what.append(f"observed {self.observed}")
        return f"{self.rule} ({self.expectation_type}{cols})" + (f": {'; '.join(what)}" if what else "")


@dataclass(frozen=True)
class TrainingValidationReport:
    suite: str
    rows: int
    success: bool
    results: tuple[ExpectationResult, ...]
    seconds: float
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if r.success is False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["failed_rules"] = [r.rule for r in self.failed]
        return out


def _columns(kwargs: dict[str, Any]) -> tuple[str, ...]:
    if "column" in kwargs:
        return (kwargs["column"],)
    if "column_A" in kwargs:
        return (kwargs["column_A"], kwargs["column_B"])
    return tuple(kwargs.get("column_list", ()))


def load_training_suite(path: str | Path | None = None, config: ConversionModelConfig | None = None) -> dict[str, Any]:
    suite_path = (
        Path(path) if path is not None else model_suite_path((config or ConversionModelConfig()).validation.suite)
    )
    try:
        doc = json.loads(suite_path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingValidationError(f"cannot read the training-set suite {suite_path}: {exc}") from exc
    if not isinstance(doc.get("expectations"), list) or not doc.get("name"):
        raise TrainingValidationError(f"{suite_path}: a suite needs a 'name' and a list of 'expectations'")
    for i, exp in enumerate(doc["expectations"]):
        if not isinstance((exp.get("meta") or {}).get("rule"), str):
            raise TrainingValidationError(f"{suite_path}: expectations[{i}] ({exp.get('type')}) needs meta.rule")
    return doc


def suite_parameters(config: ConversionModelConfig, allowed_formats: tuple[str, ...]) -> dict[str, Any]:
    v = config.validation
    return {
        "min_rows": v.min_rows,
        "label_rate_min": v.label_rate_min,
        "label_rate_max": v.label_rate_max,
        "allowed_formats": list(allowed_formats),
        "max_exposure": v.max_exposure,
        "lookback_hours": config.data.lookback_seconds / 3600.0,
    }


def read_for_validation(path: str | Path) -> pd.DataFrame:
    """The training set as pandas with strings as categoricals (GX runs several times faster on them)."""
    table = pq.read_table(path)
    columns = {
        name: (
            table.column(name).dictionary_encode()
            if pa.types.is_string(table.column(name).type)
            else table.column(name)
        )
        for name in table.column_names
    }
    return pa.table(columns).to_pandas()


def _observed(result: dict[str, Any]) -> Any:
    value = result.get("observed_value")
    if isinstance(value, float):
        return round(value, 6)
    return value


def validate_training_set(
    rows: pd.DataFrame | str | Path,
    config: ConversionModelConfig,
    *,
    allowed_formats: tuple[str, ...],
    suite_path: str | Path | None = None,
    raise_on_failure: bool = True,
) -> TrainingValidationReport:
    """Run the training-set suite on `rows` (a frame or a Parquet path); raise when an expectation fails."""
    started = time.perf_counter()
    frame = read_for_validation(rows) if isinstance(rows, str | Path) else rows
    doc = load_training_suite(suite_path, config)
    present = set(frame.columns)
    active, skipped = [], []
    for exp in doc["expectations"]:
        cols = _columns(exp["kwargs"])
        absent = [c for c in cols if c not in present]
        if absent and (exp.get("meta") or {}).get("optional"):
            skipped.append(
                ExpectationResult(exp["meta"]["rule"], exp["type"], cols, None, skipped=f"no column {absent}")
            )
        else:
            active.append(exp)
    gx = import_gx()
    suite = gx.ExpectationSuite(name=doc["name"], expectations=json.loads(json.dumps(active)))
    loaded = {e.meta.get("rule") for e in suite.expectations}
    rejected = [e["meta"]["rule"] for e in active if e["meta"]["rule"] not in loaded]
    if rejected:
        raise TrainingValidationError(
            f"Great Expectations rejected the expectations of rule(s) {rejected}; check type and kwargs"
        )
    context = ephemeral_context(gx)
    batch = (
        context.data_sources.add_pandas("freqcap_training")
        .add_dataframe_asset("training_set")
        .add_batch_definition_whole_dataframe("batch")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    parameters = suite_parameters(config, allowed_formats)
    outcome = batch.validate(suite, result_format="SUMMARY", expectation_parameters=parameters)
    results: list[ExpectationResult] = []
    for res in outcome.results:
        cfg = res.expectation_config
        info = res.exception_info or {}
        raised = info.get("raised_exception") or any(
            isinstance(v, dict) and v.get("raised_exception") for v in info.values()
        )
        result = res.result or {}
        results.append(
            ExpectationResult(
                rule=cfg.meta.get("rule"),
                expectation_type=cfg.type,
                columns=_columns(cfg.kwargs),
                success=bool(res.success) and not raised,
                observed=_observed(result) if not raised else f"raised: {info.get('exception_message') or info}",
                unexpected_count=result.get("unexpected_count"),
            )
        )
    order = {e["meta"]["rule"]: i for i, e in enumerate(doc["expectations"])}
    all_results = tuple(sorted([*results, *skipped], key=lambda r: order.get(r.rule, 0)))
    report = TrainingValidationReport(
        suite=doc["name"],
        rows=len(frame),
        success=all(r.success is not False for r in all_results),
        results=all_results,
        seconds=round(time.perf_counter() - started, 3),
        parameters=parameters,
    )
    log.info(
        "training-set validation: %d expectations, %d failed, %d skipped (%.1fs)",
        len(results),
        len(report.failed),
        len(skipped),
        report.seconds,
    )
    if not report.success and raise_on_failure:
        listed = "; ".join(r.describe() for r in report.failed)
        raise TrainingValidationError(
            f"training set validation failed: {len(report.failed)} of {len(results)} expectations of suite "
            f"{doc['name']!r} failed: {listed}",
            report,
        )
    return report
