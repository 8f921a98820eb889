"""Validate a directory of raw events before any aggregation: Great Expectations decides, bad rows are quarantined.

How a run goes (see `validate_events`):

1. **Files.** Each Parquet file's schema is checked against the contract (`freqcap.adapters.gx.files`). Files that
   conform are read together with DuckDB (`read_parquet(..., hive_partitioning=true, union_by_name=true)`), keeping
   only the contract columns, cast to the contract types (timestamps to µs UTC). Every row of a file that does not
   conform goes to the quarantine with the reason `schema` (its values cast where possible, and the original row
   kept as JSON in `raw`). A file that cannot be read at all fails the run with a message naming it.
2. **Rows.** Every row gets a stable id `_row` (file index << 40 | row number in the file). DuckDB adds lookup
   columns (`_known_ad_id`, `_catalog_campaign_id`, `_catalog_advertiser_id`), then the rows are validated by Great
   Expectations (ephemeral context, pandas, the suite from `monitoring/gx/events.json`) in chunks of about
   `chunk_rows` rows. Chunks split by `hash(event_id)`, so every copy of an event_id is in the same chunk and the
   uniqueness expectation stays exact.
3. **Per-row reasons** come from GX itself: `result_format="COMPLETE"` with `unexpected_index_column_names=["_row"]`
   (the frame is indexed by `_row`), so each expectation returns the ids of exactly the rows it rejected. They are
   keyed by `_row`, not `event_id`, which can be null or repeated. The step checks that the number of ids equals
   GX's `unexpected_count` for every expectation. A row's reason is the `;`-joined names of the rules it failed,
   in suite order.
4. **Duplicates.** Among the rows that passed, duplicates by event_id are removed, keeping the first by
   (event_ts, file, row). They are counted separately (`duplicates_removed`, not part of the bad share) and
   written to the quarantine with the reason `duplicate`, or `duplicate_differs` when the payload differs from
   the kept row. An invalid copy never shadows a valid one, because invalid rows are set aside before dedup.
5. **Outputs.** `out_dir/quarantine.parquet` (always written, possibly empty): the contract columns plus
   `reason`, `as_of`, `source_file` and `raw`. `out_dir/clean/events.parquet`: the contract schema, sorted by
   event_ts. `out_dir/validation_report.json`.
6. **Gate.** If invalid rows / total rows > `max_bad_share`, or a batch-level (`on_failure: error`) expectation
   fails, the step raises `EventValidationError` after writing the quarantine and the report. It writes no clean
   file then, and removes a stale one from an earlier run.

This module runs the steps, each a function named after it. The DuckDB tables (reading, reference ads, reasons
and dedup) are in `event_tables`, the Great Expectations chunks in `event_expectations`, the outcomes and the
gate's message in `event_verdict`, the Parquet outputs in `event_outputs`.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from freqcap.adapters.duckdb.pseudonymize import pseudonymize_column
from freqcap.adapters.gx.errors import EventValidationError
from freqcap.adapters.gx.event_expectations import RuleTally, run_suite, suite_parameters
from freqcap.adapters.gx.event_outputs import QUARANTINE_SCHEMA, write_clean, write_quarantine
from freqcap.adapters.gx.event_tables import flag_rows, load_files, load_reference_ads
from freqcap.adapters.gx.event_verdict import gate_message, publish_docs, rule_outcomes
from freqcap.adapters.gx.files import FileCheck, check_file, discover_files
from freqcap.adapters.gx.report import EventValidationReport, ExpectationOutcome
from freqcap.adapters.gx.runtime import import_gx
from freqcap.adapters.gx.suite import EventSuite, Rule, load_suite
from freqcap.config import ValidationConfig, parse_duration
from freqcap.domain.privacy import Pseudonymizer

__all__ = [
    "CLEAN_FILE",
    "CLEAN_USERS_FILE",
    "DEFAULT_CHUNK_ROWS",
    "QUARANTINE_FILE",
    "QUARANTINE_SCHEMA",
    "REPORT_FILE",
    "validate_events",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 1_000_000
QUARANTINE_FILE = "quarantine.parquet"
CLEAN_FILE = Path("clean") / "events.parquet"
# The users table beside the clean events, pseudonymized like them (written by the features job).
CLEAN_USERS_FILE = Path("clean") / "users.parquet"
REPORT_FILE = "validation_report.json"


@dataclass(frozen=True)
class _Run:
    """What one run validates, against what, and where its outputs go; `timings` fills in as the steps go."""

    events_dir: Path
    as_of: datetime
    max_event_ts: datetime
    config: ValidationConfig
    catalog: Path | None
    suite: EventSuite
    active: tuple[Rule, ...]
    skipped: dict[str, str]
    chunk_rows: int
    out_dir: Path
    started: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def clean_path(self) -> Path:
        return self.out_dir / CLEAN_FILE

    @property
    def quarantine_path(self) -> Path:
        return self.out_dir / QUARANTINE_FILE

    @property
    def report_path(self) -> Path:
        return self.out_dir / REPORT_FILE


@dataclass(frozen=True)
class _Verdict:
    """What the rows came to: the counts, the outcome of every rule, and the failure message if the gate stops."""

    total_rows: int
    clean_rows: int
    invalid_rows: int
    duplicates_removed: int
    duplicates_differing: int
    outcomes: tuple[ExpectationOutcome, ...]
    schema_failures: tuple[dict[str, Any], ...]
    failure: str | None
    gx_version: str


def validate_events(
    events_dir: Path,
    *,
    as_of: datetime,
    config: ValidationConfig,
    out_dir: Path,
    ads_catalog: Path | None = None,
    suite_path: Path | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    docs_root: Path | None = None,
    now: datetime | None = None,
    pseudonymizer: Pseudonymizer | None = None,
) -> EventValidationReport:
    """Validate every event under `events_dir` with Great Expectations; quarantine bad rows; gate on the bad share.

    `as_of` must be timezone-aware. An event stamped after `as_of + config.future_tolerance` is invalid — unless
    `now` (the wall clock of a scheduled or backfilled run) is later than `as_of`: then events up to
    `now + future_tolerance` are real, merely later than this run's as-of time (a backfill reads a lake that has
    grown since). They are left out of this run, counted in `after_as_of_rows`, neither quarantined nor clean;
    only events after `now + future_tolerance` are invalid. Clicks and
    conversions must reference a known ad: one in `ads_catalog` if given (whose hierarchy every event's
    campaign/advertiser must then match), else one seen in an impression of this batch. `suite_path` defaults
    to `monitoring/gx/events.json`.

    Returns the report (also written to `out_dir/validation_report.json`). Raises `EventValidationError` after
    writing the quarantine and the report when the bad share is above `config.max_bad_share`, when a batch-level
    expectation fails, or when a file cannot be read at all. With `docs_root`, the run's per-rule summary is
    also published to the Data Docs site there (`freqcap.adapters.gx.docs`).

    With `pseudonymizer`, every user id is replaced by its pseudonym right after the files are read, before Great
    Expectations sees a row: the clean events, the quarantine (its `raw` JSON too), the report and Data Docs hold
    pseudonyms only. A null user id stays null (and fails `user_id_not_null`).
    """
    started = time.perf_counter()
    run = _start(events_dir, as_of, config, out_dir, ads_catalog, suite_path, chunk_rows, started)
    checks = _check_files(run)
    later_until = max(as_of, now or as_of).astimezone(UTC) + parse_duration(config.future_tolerance)
    tmp_dir = Path(tempfile.mkdtemp(prefix="freqcap-validate-"))
    context = _report_context(run, files_total=len(checks))  # what every report of this run says
    con = duckdb.connect(config={"temp_directory": str(tmp_dir)})
    try:
        con.execute("SET TimeZone = 'UTC'")
        _read_files(con, run, checks, context)
        if pseudonymizer is not None:
            _pseudonymize(con, run, pseudonymizer)
        after_as_of = _set_aside_later_events(con, run, later_until)
        verdict = _validate_rows(con, run, checks)
        _write_outputs(con, run, verdict)
    finally:
        con.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return _finish(run, dict(context, after_as_of_rows=after_as_of), verdict, docs_root)


def _pseudonymize(con: duckdb.DuckDBPyConnection, run: _Run, pseudonymizer: Pseudonymizer) -> None:
    """User ids -> pseudonyms in `ev` and `schema_rows`, and in the original rows kept as JSON (`raw`)."""
    t = time.perf_counter()
    pseudonymize_column(con, "ev", "user_id", pseudonymizer)
    pseudonymize_column(con, "schema_rows", "user_id", pseudonymizer)
    # The JSON keeps the original value under `user_id`: overwrite it with the pseudonym (a null removes the key,
    # e.g. when the original could not be cast to a string: nothing of it is kept).
    con.execute(
        "UPDATE schema_rows SET raw = json_merge_patch(raw, json_object('user_id', user_id)) "
        "WHERE raw IS NOT NULL AND json_exists(raw, '$.user_id')"
    )
    run.timings["pseudonymize"] = time.perf_counter() - t


def _set_aside_later_events(con: duckdb.DuckDBPyConnection, run: _Run, later_until: datetime) -> int:
    """Remove the events stamped in (as_of + tolerance, later_until] from this run; returns how many."""
    if later_until <= run.max_event_ts:
        return 0
    bounds = {"after": run.max_event_ts, "until": later_until}
    (count,) = con.execute("SELECT count(*) FROM ev WHERE event_ts > $after AND event_ts <= $until", bounds).fetchone()
    if count:
        con.execute("DELETE FROM ev WHERE event_ts > $after AND event_ts <= $until", bounds)
        log.info("%d event(s) later than as-of %s left out of this run", count, run.as_of.isoformat())
    return int(count)


def _start(
    events_dir: Path,
    as_of: datetime,
    config: ValidationConfig,
    out_dir: Path,
    ads_catalog: Path | None,
    suite_path: Path | None,
    chunk_rows: int,
    started: float,
) -> _Run:
    """Check the arguments, load the suite, and remove the outputs of an earlier run."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware (UTC)")
    if chunk_rows <= 0:
        raise ValueError("chunk_rows must be positive")
    as_of = as_of.astimezone(UTC)
    max_event_ts = as_of + parse_duration(config.future_tolerance)
    catalog = Path(ads_catalog) if ads_catalog is not None else None
    suite = load_suite(suite_path, config.suites_dir)
    active, skipped = suite.split(has_catalog=catalog is not None)
    run = _Run(
        events_dir=Path(events_dir),
        as_of=as_of,
        max_event_ts=max_event_ts,
        config=config,
        catalog=catalog,
        suite=suite,
        active=active,
        skipped=skipped,
        chunk_rows=chunk_rows,
        out_dir=Path(out_dir),
        started=started,
    )
    run.out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (run.clean_path, run.quarantine_path, run.report_path):  # a run that stops early: no old verdict
        _remove(stale)
    return run


def _check_files(run: _Run) -> list[FileCheck]:
    """Every Parquet file under the events directory, its schema checked against the contract."""
    files = discover_files(run.events_dir)
    if not files:
        raise EventValidationError(f"no Parquet files under {run.events_dir}")
    checks = [check_file(p, run.events_dir) for p in files]
    log.info(
        "validating %d file(s), %d row(s) under %s as of %s",
        len(checks),
        sum(c.rows for c in checks),
        run.events_dir,
        run.as_of.isoformat(),
    )
    return checks


def _report_context(run: _Run, *, files_total: int) -> dict[str, Any]:
    """The fields every report of this run carries, whichever way the run ends."""
    return {
        "as_of": run.as_of,
        "events_dir": str(run.events_dir),
        "ads_catalog": str(run.catalog) if run.catalog else None,
        "suite_name": run.suite.name,
        "suite_path": str(run.suite.path),
        "max_bad_share": run.config.max_bad_share,
        "files_total": files_total,
        "quarantine_path": str(run.quarantine_path),
        "report_path": str(run.report_path),
    }


def _read_files(
    con: duckdb.DuckDBPyConnection, run: _Run, checks: Sequence[FileCheck], context: dict[str, Any]
) -> None:
    """Load the files into DuckDB; when one cannot be read at all, write a report naming it and fail the run."""
    t = time.perf_counter()
    unreadable = load_files(con, checks)
    run.timings["read"] = time.perf_counter() - t
    if not unreadable:
        return
    names = "; ".join(f"{rel}: {error}" for rel, error in unreadable.items())
    message = f"cannot read {len(unreadable)} events file(s) under {run.events_dir}: {names}"
    report = EventValidationReport(
        **context,
        total_rows=0,
        clean_rows=0,
        invalid_rows=0,
        duplicates_removed=0,
        duplicates_differing=0,
        invalid_by_rule={},
        expectations=(),
        schema_failures=tuple({"file": rel, "rows": None, "problems": [err]} for rel, err in unreadable.items()),
        clean_path=None,
        seconds=time.perf_counter() - run.started,
        timings=run.timings,
        gx_version="not imported",
        failure=message,
    )
    report.write(run.report_path)
    log.error("%s", message)
    raise EventValidationError(message, report)


def _validate_rows(con: duckdb.DuckDBPyConnection, run: _Run, checks: Sequence[FileCheck]) -> _Verdict:
    """Run the suite over the rows read, set aside the rows it rejected and the duplicates, and decide."""
    n_events = _one(con, "SELECT count(*) FROM ev")[0]
    n_schema = _one(con, "SELECT count(*) FROM schema_rows")[0]
    total_rows = n_events + n_schema
    schema_failures = _schema_failures(checks, n_schema)

    t = time.perf_counter()
    gx = import_gx()  # lazily: seconds on the first call in a process, nothing after
    run.timings["gx_import"] = time.perf_counter() - t
    t = time.perf_counter()
    load_reference_ads(con, run.catalog)
    tallies = run_suite(gx, con, run.suite, run.active, n_events, run.chunk_rows, run.config, run.max_event_ts)
    run.timings["great_expectations"] = time.perf_counter() - t

    t = time.perf_counter()
    flag_rows(con, _quarantined_rows(tallies))
    n_bad = _one(con, "SELECT count(*) FROM bad")[0]
    n_dup, n_dup_differs = _one(con, "SELECT count(*), count(*) FILTER (WHERE reason = 'duplicate_differs') FROM dup")
    run.timings["reasons_and_dedup"] = time.perf_counter() - t

    invalid_rows = n_bad + n_schema
    outcomes = rule_outcomes(run.suite, tallies, run.skipped, n_schema, total_rows, schema_failures, n_events)
    return _Verdict(
        total_rows=total_rows,
        clean_rows=n_events - n_bad - n_dup,
        invalid_rows=invalid_rows,
        duplicates_removed=n_dup,
        duplicates_differing=n_dup_differs,
        outcomes=outcomes,
        schema_failures=schema_failures,
        failure=gate_message(outcomes, invalid_rows, total_rows, run.config.max_bad_share),
        gx_version=gx.__version__,
    )


def _write_outputs(con: duckdb.DuckDBPyConnection, run: _Run, verdict: _Verdict) -> None:
    """The quarantine always; the clean events only when the gate passes."""
    t = time.perf_counter()
    write_quarantine(con, run.quarantine_path, run.as_of)
    run.timings["write_quarantine"] = time.perf_counter() - t
    if verdict.failure is None:
        t = time.perf_counter()
        write_clean(con, run.clean_path)
        run.timings["write_clean"] = time.perf_counter() - t


def _finish(run: _Run, context: dict[str, Any], verdict: _Verdict, docs_root: Path | None) -> EventValidationReport:
    """Write the report (and publish it to Data Docs with `docs_root`); raise when the gate stops the run."""
    failure = verdict.failure
    report = EventValidationReport(
        **context,
        total_rows=verdict.total_rows,
        clean_rows=verdict.clean_rows,
        invalid_rows=verdict.invalid_rows,
        duplicates_removed=verdict.duplicates_removed,
        duplicates_differing=verdict.duplicates_differing,
        invalid_by_rule={
            o.rule: o.unexpected_count for o in verdict.outcomes if o.counts_toward_bad_share and o.unexpected_count
        },
        expectations=verdict.outcomes,
        schema_failures=verdict.schema_failures,
        clean_path=str(run.clean_path) if failure is None else None,
        seconds=time.perf_counter() - run.started,
        timings=run.timings,
        gx_version=verdict.gx_version,
        failure=failure,
    )
    if docs_root is not None:
        parameters = suite_parameters(run.config, run.max_event_ts)
        data_docs = publish_docs(docs_root, run.suite, run.skipped, verdict.outcomes, parameters, run.as_of)
        report = dataclasses.replace(report, data_docs=data_docs)
    report.write(run.report_path)
    log.info(
        "validated %d rows in %.1fs: %d clean, %d invalid (%.2f%%), %d duplicates removed; quarantine %s",
        verdict.total_rows,
        report.seconds,
        verdict.clean_rows,
        verdict.invalid_rows,
        100 * report.bad_share,
        verdict.duplicates_removed,
        run.quarantine_path,
    )
    if failure is not None:
        log.error("%s", failure)
        raise EventValidationError(failure, report)
    return report


def _one(con: duckdb.DuckDBPyConnection, query: str) -> tuple[Any, ...]:
    """The first row of the result of `query`."""
    rows = con.execute(query).fetchall()
    return rows[0]


def _schema_failures(checks: Sequence[FileCheck], n_schema: int) -> tuple[dict[str, Any], ...]:
    """The files that do not match the event contract, with their problems (logged)."""
    schema_failures = tuple({"file": c.rel, "rows": c.rows, "problems": list(c.problems)} for c in checks if c.problems)
    if schema_failures:
        log.warning(
            "%d file(s) (%d rows) do not match the event contract: %s",
            len(schema_failures),
            n_schema,
            "; ".join(f"{f['file']}: {', '.join(f['problems'])}" for f in schema_failures),
        )
    return schema_failures


def _quarantined_rows(tallies: dict[str, RuleTally]) -> dict[str, list[Any]]:
    """Every rule in suite order with the rows it sends to the quarantine (none for batch-level and dedup rules)."""
    return {name: tally.rows if tally.rule.on_failure == "quarantine" else [] for name, tally in tallies.items()}


def _remove(path: Path) -> None:
    """Delete an output of an earlier run, saying so."""
    if path.exists():
        log.info("removing %s (from an earlier run)", path)
        path.unlink()
