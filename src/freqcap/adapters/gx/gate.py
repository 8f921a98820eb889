"""Running a declarative Great Expectations suite as a gate on one table: the machinery the hand-off gates share.

The feature-table, training-set and decision-log gates each load a GX 1.x ExpectationSuite document from
`resources/gx/` (`name`, `expectations: [{type, kwargs, meta}]`, `meta`), run it in an ephemeral context on a
pandas frame, and turn every expectation's result into a `RuleOutcome` named by its `meta.rule`. A gate fails when
any expectation fails; `GateReport.failure_message()` names each failed rule with what GX observed (the number of
unexpected rows and a few of their values, or the observed aggregate), so the error alone says what broke.

Two `meta` keys are read here:

- `rule` (required, unique): the stable name used in messages, reports and Data Docs.
- `optional: true`: skipped (and reported as skipped) when one of its columns is not in the table.

Great Expectations is imported lazily, inside the calls.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from freqcap.adapters.gx.docs import publish_runs
from freqcap.adapters.gx.errors import ValidationSuiteError
from freqcap.adapters.gx.runtime import ephemeral_context, import_gx
from freqcap.adapters.gx.suite import read_document

log = logging.getLogger(__name__)

SAMPLE_VALUES = 3  # unexpected values quoted per failed rule in a message
# SUMMARY gives counts and a partial list of unexpected values, enough for a message and Data Docs; the events
# gate needs COMPLETE (row ids) for its quarantine, the other gates stop the whole table and do not.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}


def read_suite_document(path: str | Path) -> dict[str, Any]:
    """A suite document (JSON, or YAML by suffix) with a name and expectations that each carry a unique meta.rule."""
    path = Path(path)
    doc = read_document(path)
    if not doc["expectations"]:
        raise ValidationSuiteError(f"{path}: the suite has no expectations")
    seen: set[tuple[str, str]] = set()
    for i, exp in enumerate(doc["expectations"]):
        if not isinstance(exp, dict) or not isinstance(exp.get("type"), str) or not isinstance(exp.get("kwargs"), dict):
            raise ValidationSuiteError(f"{path}: expectations[{i}] needs a 'type' and a 'kwargs' mapping")
        meta = exp.get("meta") or {}
        rule = meta.get("rule")
        if not isinstance(rule, str) or not rule:
            raise ValidationSuiteError(f"{path}: expectations[{i}] ({exp['type']}) needs meta.rule")
        key = (str(meta.get("applies_to", "")), rule)  # a rule name is unique within the tables it applies to
        if key in seen:
            raise ValidationSuiteError(f"{path}: meta.rule {rule!r} is used twice")
        seen.add(key)
    return doc


def expectation_columns(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    if "column" in kwargs:
        return (kwargs["column"],)
    if "column_A" in kwargs:
        return (kwargs["column_A"], kwargs["column_B"])
    column_list = kwargs.get("column_list", ())
    return tuple(column_list) if isinstance(column_list, list | tuple) else ()


def plain(value: Any) -> Any:
    """`value` as plain JSON-friendly Python (numpy scalars, timestamps, tuples, NaN -> None)."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if hasattr(value, "isoformat"):  # pandas Timestamp / NaT
        try:
            return value.isoformat() if value == value else None
        except (TypeError, ValueError):
            return str(value)
    if hasattr(value, "item"):  # numpy scalar
        return plain(value.item())
    return str(value)


@dataclass(frozen=True)
class RuleOutcome:
    """One expectation of a gate on one table."""

    rule: str
    expectation_type: str
    columns: tuple[str, ...]
    success: bool | None  # None: skipped
    table: str = ""
    observed: Any = None
    unexpected_count: int | None = None
    element_count: int | None = None
    sample: tuple[Any, ...] = ()
    skipped: str | None = None
    error: str | None = None  # Great Expectations raised while evaluating it (counts as failed)
    expected: dict[str, Any] = field(default_factory=dict)  # the bounds / set it was held to (parameters resolved)

    @property
    def name(self) -> str:
        """`table.rule` when the gate checks several tables, else the rule."""
        return f"{self.table}.{self.rule}" if self.table else self.rule

    def describe(self) -> str:
        """`rule (type on columns): what was observed` — the text a failure message lists."""
        cols = f" on {', '.join(self.columns)}" if self.columns else ""
        what: list[str] = []
        if self.error:
            what.append(f"raised {self.error}")
        if self.unexpected_count:
            of = f" of {self.element_count}" if self.element_count is not None else ""
            what.append(f"{self.unexpected_count}{of} rows unexpected")
        if self.sample:
            what.append("e.g. " + ", ".join(_short(v) for v in self.sample[:SAMPLE_VALUES]))
        if self.observed is not None:
            what.append(f"observed {_short(self.observed)}")
        if self.expected:
            what.append("expected " + ", ".join(f"{k}={_short(v)}" for k, v in self.expected.items()))
        return f"{self.name} ({self.expectation_type}{cols})" + (f": {'; '.join(what)}" if what else "")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "table": self.table,
            "expectation_type": self.expectation_type,
            "columns": list(self.columns),
            "success": self.success,
        }
        for key in ("observed", "unexpected_count", "element_count", "skipped", "error"):
            value = getattr(self, key)
            if value is not None:
                out[key] = plain(value)
        if self.sample:
            out["sample"] = plain(list(self.sample))
        if self.expected:
            out["expected"] = plain(self.expected)
        return out


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(plain(value), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class GateReport:
    """The outcome of one gate run: every rule of every table, and where the Data Docs page is."""

    gate: str
    suite: str
    suite_path: str
    rows: dict[str, int]
    outcomes: tuple[RuleOutcome, ...]
    parameters: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    data_docs: str | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[RuleOutcome, ...]:
        return tuple(o for o in self.outcomes if o.success is False)

    @property
    def success(self) -> bool:
        return not self.failed

    @property
    def failed_rules(self) -> list[str]:
        return [o.name for o in self.failed]

    def failure_message(self) -> str | None:
        """None when the gate passed; else one line naming every failed rule with what was observed."""
        if self.success:
            return None
        evaluated = sum(1 for o in self.outcomes if o.success is not None)
        where = ", ".join(f"{k}={v}" for k, v in self.context.items())
        head = f"{self.gate} validation failed (suite {self.suite!r}{', ' + where if where else ''}): "
        head += f"{len(self.failed)} of {evaluated} expectations failed: "
        tail = f". Data Docs: {self.data_docs}" if self.data_docs else ""
        return head + "; ".join(o.describe() for o in self.failed) + tail

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "suite": self.suite,
            "suite_path": self.suite_path,
            "success": self.success,
            "failed_rules": self.failed_rules,
            "failure": self.failure_message(),
            "rows": dict(self.rows),
            "context": plain(self.context),
            "parameters": plain(self.parameters),
            "expectations": sum(1 for o in self.outcomes if o.success is not None),
            "skipped": [o.name for o in self.outcomes if o.success is None],
            "outcomes": [o.to_dict() for o in self.outcomes],
            "seconds": round(self.seconds, 3),
            "data_docs": self.data_docs,
        }

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path


@dataclass
class TableRun:
    """What one table's validation produced: outcomes in suite order, and the raw GX result for Data Docs."""

    table: str
    suite_name: str
    expectations: list[dict[str, Any]]  # the expectations that ran, as GX configuration dicts
    outcomes: list[RuleOutcome]
    rows: int
    gx_result: Any = None  # great_expectations ExpectationSuiteValidationResult (None when nothing ran)


def to_gx_frame(table: Any) -> Any:
    """A pyarrow table as pandas with strings as categoricals (GX runs several times faster on integer codes)."""
    columns = {
        name: (
            table.column(name).dictionary_encode()
            if pa.types.is_string(table.column(name).type) or pa.types.is_large_string(table.column(name).type)
            else table.column(name)
        )
        for name in table.column_names
    }
    return pa.table(columns).to_pandas()


def _gx_copy(exp: Mapping[str, Any]) -> dict[str, Any]:
    """A fresh copy of an expectation for GX (which may mutate what it is given), without freqcap-only meta keys."""
    meta = {k: v for k, v in (exp.get("meta") or {}).items() if k not in ("for_each", "applies_to")}
    return json.loads(json.dumps({"type": exp["type"], "kwargs": exp["kwargs"], "meta": meta}, default=str))


def run_table(
    frame: Any,
    expectations: Sequence[Mapping[str, Any]],
    *,
    suite_name: str,
    table: str,
    parameters: Mapping[str, Any] | None = None,
    skip: Mapping[str, str] | None = None,
    label_table: bool = False,
) -> TableRun:
    """Validate `frame` with `expectations` in an ephemeral GX context; outcomes come back in suite order.

    `skip` maps rule -> reason for rules the caller leaves out (e.g. no previous run to compare with); a rule
    with `meta.optional` is skipped when one of its columns is missing. `label_table` prefixes rule names with the
    table in messages (for gates over several tables). A rule GX raises on counts as failed, with the error.
    """
    skip = dict(skip or {})
    present = set(frame.columns)
    active: list[dict[str, Any]] = []
    for exp in expectations:
        meta = exp.get("meta") or {}
        rule = meta["rule"]
        missing = [c for c in expectation_columns(exp["kwargs"]) if c not in present]
        if rule not in skip and missing and meta.get("optional"):
            skip[rule] = f"no column {', '.join(missing)}"
        if rule not in skip:
            active.append(_gx_copy(exp))
    results: dict[str, Any] = {}
    gx_result = None
    if active:
        gx = import_gx()
        gx_suite = gx.ExpectationSuite(name=suite_name, expectations=active)
        loaded = {e.meta.get("rule") for e in gx_suite.expectations}
        rejected = [e["meta"]["rule"] for e in active if e["meta"]["rule"] not in loaded]
        if rejected:
            raise ValidationSuiteError(
                f"suite {suite_name}: Great Expectations rejected the expectations of rule(s) {rejected}; "
                "check their type and kwargs"
            )
        batch = (
            ephemeral_context(gx)
            .data_sources.add_pandas(f"freqcap_{suite_name}")
            .add_dataframe_asset(table)
            .add_batch_definition_whole_dataframe("batch")
            .get_batch(batch_parameters={"dataframe": frame})
        )
        gx_result = batch.validate(gx_suite, result_format=RESULT_FORMAT, expectation_parameters=dict(parameters or {}))
        results = {r.expectation_config.meta.get("rule"): r for r in gx_result.results}
    outcomes: list[RuleOutcome] = []
    label = table if label_table else ""
    for exp in expectations:
        rule = exp["meta"]["rule"]
        cols = expectation_columns(exp["kwargs"])
        if rule in skip:
            outcomes.append(RuleOutcome(rule, exp["type"], cols, None, table=label, skipped=skip[rule]))
            continue
        res = results.get(rule)
        if res is None:
            raise ValidationSuiteError(f"suite {suite_name}: Great Expectations returned no result for rule {rule!r}")
        outcomes.append(_outcome(rule, exp["type"], cols, res, label, _expected(exp["kwargs"], parameters or {})))
    return TableRun(table, suite_name, active, outcomes, len(frame), gx_result)


def raised_exception_message(info: Any) -> str | None:
    """The message of an exception GX caught, if any.

    GX reports it either flat (`{"raised_exception": True, "exception_message": ...}`) or, when a metric failed,
    per metric (`{MetricConfigurationID: {"raised_exception": True, ...}}`); either way the expectation then
    comes back unsuccessful with an empty result, which must not be read as "no bad rows".
    """
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


_BOUNDS = ("min_value", "max_value", "value_set", "sum_total")


def _expected(kwargs: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The bounds an expectation holds its column to, with `$PARAMETER`s resolved (for messages)."""
    out: dict[str, Any] = {}
    for key in _BOUNDS:
        value = kwargs.get(key)
        if isinstance(value, Mapping) and "$PARAMETER" in value:
            value = parameters.get(value["$PARAMETER"])
        if value is not None and not (isinstance(value, list | tuple) and len(value) > 10):
            out[key] = plain(value)
    return out


def _outcome(
    rule: str, expectation_type: str, cols: tuple[str, ...], res: Any, table: str, expected: dict[str, Any]
) -> RuleOutcome:
    result = res.result or {}
    error = raised_exception_message(res.exception_info)
    observed = result.get("observed_value")
    mismatched = (result.get("details") or {}).get("mismatched")
    if mismatched and not res.success:  # a column set: say which columns are extra / missing, not all of them
        observed = {k: v for k, v in mismatched.items() if v}
    if observed is None and result.get("partial_missing_list"):
        observed = {"missing": result["partial_missing_list"]}
    unexpected = result.get("unexpected_count")
    sample: Iterable[Any] = (result.get("partial_unexpected_list") or ()) if unexpected else ()
    return RuleOutcome(
        rule=rule,
        expectation_type=expectation_type,
        columns=cols,
        success=bool(res.success) and error is None,
        table=table,
        observed=plain(observed),
        unexpected_count=int(unexpected) if unexpected is not None else None,
        element_count=int(result["element_count"]) if result.get("element_count") is not None else None,
        sample=tuple(plain(v) for v in list(sample)[:SAMPLE_VALUES]),
        error=error,
        expected=expected,
    )


def finish(
    gate: str,
    suite_name: str,
    suite_path: Path,
    runs: Sequence[TableRun],
    *,
    parameters: Mapping[str, Any],
    started: float,
    context: Mapping[str, Any],
    docs_root: Path | None,
) -> GateReport:
    """The gate's report; with `docs_root`, the runs are also published to the local Data Docs site first."""
    data_docs = None
    if docs_root is not None:
        data_docs = publish_runs(docs_root, gate, runs, run_name=str(context.get("as_of") or gate))
    report = GateReport(
        gate=gate,
        suite=suite_name,
        suite_path=str(suite_path),
        rows={r.table: r.rows for r in runs},
        outcomes=tuple(o for r in runs for o in r.outcomes),
        parameters=dict(parameters),
        seconds=time.perf_counter() - started,
        data_docs=data_docs,
        context=dict(context),
    )
    log.info(
        "%s gate: %d expectations on %s, %d failed, %d skipped (%.1fs)",
        gate,
        sum(1 for o in report.outcomes if o.success is not None),
        ", ".join(f"{t}={n}" for t, n in report.rows.items()),
        len(report.failed),
        sum(1 for o in report.outcomes if o.success is None),
        report.seconds,
    )
    return report
