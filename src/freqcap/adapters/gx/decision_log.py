"""The decision-log gate: `resources/gx/decision_log.json` on serving's decision log, before monitoring reads it.

Cap hit rates are computed from the `hit` flag of each logged decision, so the log must be internally consistent:
a cap hit only where count ≥ cap, never one where count < cap, distance = cap − count, fail-open rows with no
penalty, only the documented fields (no user ids). The gate derives a few columns from the raw rows (`_ts`:
`ts` parsed; `_ts_hour`, `_ts_date`; `_cap_minus_count`) so those rules stay plain column-pair expectations.

    validate_decision_log(source, settings, *, start=None, end=None, now=None, suite_path=None, docs=None)
        -> GateReport   # raises DecisionLogGateError (a DataValidationError) naming each failed rule
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from freqcap.adapters.decision_log import FIELDS, read_log_rows
from freqcap.adapters.gx.docs import docs_root
from freqcap.adapters.gx.errors import DataValidationError
from freqcap.adapters.gx.gate import GateReport, finish, read_suite_document, run_table
from freqcap.config import Settings, parse_duration
from freqcap.layout import DataLayout
from freqcap.resources import suite_path as packaged_suite

log = logging.getLogger(__name__)

SUITE_FILE = "decision_log.json"
DERIVED_COLUMNS = ("_ts", "_ts_hour", "_ts_date", "_cap_minus_count")


class DecisionLogGateError(DataValidationError):
    """The decision log failed `resources/gx/decision_log.json`; the message names each failed rule."""


def prepare_decision_log(frame: pd.DataFrame) -> pd.DataFrame:
    """The logged rows plus the derived columns the suite checks (a copy; `frame` is unchanged)."""
    out = frame.copy()
    ts = pd.to_datetime(out["ts"], utc=True, errors="coerce", format="ISO8601") if len(out) else out["ts"]
    out["_ts"] = ts
    parsed = pd.Series(ts, index=out.index)
    out["_ts_hour"] = parsed.dt.hour if len(out) else pd.Series(dtype="float64")
    out["_ts_date"] = parsed.dt.strftime("%Y-%m-%d") if len(out) else pd.Series(dtype="object")
    out["_cap_minus_count"] = pd.to_numeric(out["cap"], errors="coerce") - pd.to_numeric(out["count"], errors="coerce")
    return out


def _in_window(frame: pd.DataFrame, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    """Rows with start ≤ ts < end; rows whose ts does not parse are kept, so `ts_parseable` sees them."""
    if start is None and end is None:
        return frame
    ts = frame["_ts"]
    keep = ts.isna()
    inside = pd.Series(True, index=frame.index)
    if start is not None:
        inside &= ts >= pd.Timestamp(start)
    if end is not None:
        inside &= ts < pd.Timestamp(end)
    return frame[keep | inside.fillna(False)]


def validate_decision_log(
    source: str | Path | pd.DataFrame,
    settings: Settings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
    suite_path: str | Path | None = None,
    docs: bool | None = None,
) -> GateReport:
    """Check the decision log before monitoring aggregates it.

    `source`: a decision-log directory (`<data_dir>/decision_log`; every field of every line is read) or a frame
    of its rows. `start`/`end` (aware datetimes) keep rows with start ≤ ts < end. `now` (default:
    the current time) + `validation.future_tolerance` bounds `ts`. `docs` (default `validation.data_docs`)
    publishes the run to the Data Docs site under `<data_dir>/gx`.

    Returns the report (`report.rows["decision_log"]` rows checked; an empty log passes with every rule
    skipped). Raises `DecisionLogGateError` naming each failed rule with the number of offending rows and a
    sample of their values.
    """
    started = time.perf_counter()
    for name, value in (("start", start), ("end", end), ("now", now)):
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware (UTC)")
    path = Path(suite_path) if suite_path is not None else packaged_suite(SUITE_FILE, settings.validation.suites_dir)
    doc = read_suite_document(path)
    raw = read_log_rows(source) if isinstance(source, str | Path) else source
    missing = [c for c in FIELDS if c not in raw.columns]
    if missing:
        raise DecisionLogGateError(f"decision-log validation failed: columns_match: missing field(s) {missing}")
    frame = _in_window(prepare_decision_log(raw), start, end)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    # The expected columns are the documented fields: any extra field in the data (a user id...) fails columns_match.
    parameters = {
        "columns": [*FIELDS, *DERIVED_COLUMNS],
        "max_ts": now + parse_duration(settings.validation.future_tolerance),
    }
    # An empty window (a quiet hour, sampling off) is not bad data: every rule is reported as skipped.
    skip = {} if len(frame) else {e["meta"]["rule"]: "no rows to validate" for e in doc["expectations"]}
    run = run_table(
        frame, doc["expectations"], suite_name=doc["name"], table="decision_log", parameters=parameters, skip=skip
    )
    publish = settings.validation.data_docs if docs is None else docs
    report = finish(
        "decision-log",
        doc["name"],
        path,
        [run],
        parameters=parameters,
        started=started,
        context={k: v.isoformat() for k, v in (("start", start), ("end", end)) if v is not None},
        docs_root=docs_root(DataLayout.of(settings).root) if publish else None,
    )
    message = report.failure_message()
    if message:
        log.error("%s", message)
        raise DecisionLogGateError(message, report)
    return report
