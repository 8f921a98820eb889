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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.adapters.gx.errors import EventValidationError, ValidationSuiteError
from freqcap.adapters.gx.files import FileCheck, check_file, discover_files
from freqcap.adapters.gx.gate import plain
from freqcap.adapters.gx.report import EventValidationReport, ExpectationOutcome
from freqcap.adapters.gx.runtime import ephemeral_context, import_gx
from freqcap.adapters.gx.suite import EventSuite, Rule, build_gx_suite, load_suite
from freqcap.config import ValidationConfig, parse_duration
from freqcap.domain.events import EVENT_COLUMNS, EVENT_SCHEMA, TIMESTAMP_TYPE

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 1_000_000
ROW_ID = "_row"
_FILE_SHIFT = 40  # _row = file_idx << 40 | row number in the file
QUARANTINE_FILE = "quarantine.parquet"
CLEAN_FILE = Path("clean") / "events.parquet"
REPORT_FILE = "validation_report.json"
QUARANTINE_SCHEMA = pa.schema(
    [pa.field(f.name, f.type) for f in EVENT_SCHEMA]
    + [
        pa.field("reason", pa.string()),
        pa.field("as_of", TIMESTAMP_TYPE),
        pa.field("source_file", pa.string()),
        pa.field("raw", pa.string()),  # the original row as JSON, for rows of files that failed the schema rule
    ]
)
# String columns go to GX as pandas categoricals (dictionary-encoded by Arrow). With them GX runs several times
# faster than with object or pyarrow-backed strings: null, set and equality checks work on integer codes, row
# filters are numpy takes, and GX's fingerprint of each batch (pandas.util.hash_pandas_object) hashes only the
# distinct values. Columns compared with each other get the same categories (pandas requires it).
_WRITE_BATCH_ROWS = 1_000_000

_SQL_TYPES = {"event_ts": "TIMESTAMPTZ", "conversion_value": "DOUBLE"}  # the rest are VARCHAR


def _one(con: duckdb.DuckDBPyConnection, query: str) -> tuple[Any, ...]:
    rows = con.execute(query).fetchall()
    return rows[0]


def _sql_type(column: str) -> str:
    return _SQL_TYPES.get(column, "VARCHAR")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_CONTRACT_SQL = ", ".join(_q(c) for c in EVENT_COLUMNS)


@dataclass
class _RuleTally:
    rule: Rule
    success: bool = True
    unexpected: int = 0
    elements: int = 0
    rows: list[np.ndarray] = field(default_factory=list)
    observed: Any = None  # batch-level rules: what GX observed (e.g. the newest event_ts)


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
) -> EventValidationReport:
    """Validate every event under `events_dir` with Great Expectations; quarantine bad rows; gate on the bad share.

    `as_of` must be timezone-aware. An event stamped after `as_of + config.future_tolerance` is invalid. Clicks and
    conversions must reference a known ad: one in `ads_catalog` if given (whose hierarchy every event's
    campaign/advertiser must then match), else one seen in an impression of this batch. `suite_path` defaults
    to `monitoring/gx/events.json`.

    Returns the report (also written to `out_dir/validation_report.json`). Raises `EventValidationError` after
    writing the quarantine and the report when the bad share is above `config.max_bad_share`, when a batch-level
    expectation fails, or when a file cannot be read at all. With `docs_root`, the run's per-rule summary is
    also published to the Data Docs site there (`freqcap.adapters.gx.docs`).
    """
    started = time.perf_counter()
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware (UTC)")
    if chunk_rows <= 0:
        raise ValueError("chunk_rows must be positive")
    as_of = as_of.astimezone(UTC)
    max_event_ts = as_of + parse_duration(config.future_tolerance)
    events_dir, out_dir = Path(events_dir), Path(out_dir)
    catalog = Path(ads_catalog) if ads_catalog is not None else None
    suite = load_suite(suite_path, config.suites_dir)
    active, skipped = suite.split(has_catalog=catalog is not None)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_path, quarantine_path, report_path = out_dir / CLEAN_FILE, out_dir / QUARANTINE_FILE, out_dir / REPORT_FILE
    for stale in (clean_path, quarantine_path, report_path):  # a run that stops early must not leave an old verdict
        _remove(stale)
    timings: dict[str, float] = {}

    files = discover_files(events_dir)
    if not files:
        raise EventValidationError(f"no Parquet files under {events_dir}")
    checks = [check_file(p, events_dir) for p in files]
    log.info(
        "validating %d file(s), %d row(s) under %s as of %s",
        len(checks),
        sum(c.rows for c in checks),
        events_dir,
        as_of.isoformat(),
    )

    tmp_dir = Path(tempfile.mkdtemp(prefix="freqcap-validate-"))
    # What every report of this run says, whichever way the run ends.
    context = {
        "as_of": as_of,
        "events_dir": str(events_dir),
        "ads_catalog": str(catalog) if catalog else None,
        "suite_name": suite.name,
        "suite_path": str(suite.path),
        "max_bad_share": config.max_bad_share,
        "files_total": len(checks),
        "quarantine_path": str(quarantine_path),
        "report_path": str(report_path),
    }
    con = duckdb.connect(config={"temp_directory": str(tmp_dir)})
    try:
        con.execute("SET TimeZone = 'UTC'")
        t = time.perf_counter()
        unreadable = _load(con, checks)
        timings["read"] = time.perf_counter() - t
        if unreadable:
            names = "; ".join(f"{rel}: {error}" for rel, error in unreadable.items())
            message = f"cannot read {len(unreadable)} events file(s) under {events_dir}: {names}"
            report = EventValidationReport(
                **context,
                total_rows=0,
                clean_rows=0,
                invalid_rows=0,
                duplicates_removed=0,
                duplicates_differing=0,
                invalid_by_rule={},
                expectations=(),
                schema_failures=tuple(
                    {"file": rel, "rows": None, "problems": [err]} for rel, err in unreadable.items()
                ),
                clean_path=None,
                seconds=time.perf_counter() - started,
                timings=timings,
                gx_version="not imported",
                failure=message,
            )
            report.write(report_path)
            log.error("%s", message)
            raise EventValidationError(message, report)

        n_events = _one(con, "SELECT count(*) FROM ev")[0]
        n_schema = _one(con, "SELECT count(*) FROM schema_rows")[0]
        total_rows = n_events + n_schema
        schema_failures = tuple(
            {"file": c.rel, "rows": c.rows, "problems": list(c.problems)} for c in checks if c.problems
        )
        if schema_failures:
            log.warning(
                "%d file(s) (%d rows) do not match the event contract: %s",
                len(schema_failures),
                n_schema,
                "; ".join(f"{f['file']}: {', '.join(f['problems'])}" for f in schema_failures),
            )

        t = time.perf_counter()
        gx = import_gx()  # lazily: seconds on the first call in a process, nothing after
        timings["gx_import"] = time.perf_counter() - t
        t = time.perf_counter()
        _load_reference_ads(con, catalog)
        tallies = _run_gx(gx, con, suite, active, n_events, chunk_rows, config, max_event_ts)
        timings["great_expectations"] = time.perf_counter() - t

        t = time.perf_counter()
        _flag_rows(con, tallies)
        n_bad = _one(con, "SELECT count(*) FROM bad")[0]
        n_dup, n_dup_differs = _one(
            con, "SELECT count(*), count(*) FILTER (WHERE reason = 'duplicate_differs') FROM dup"
        )
        timings["reasons_and_dedup"] = time.perf_counter() - t

        invalid_rows = n_bad + n_schema
        clean_rows = n_events - n_bad - n_dup
        outcomes = _outcomes(suite, tallies, skipped, n_schema, total_rows, schema_failures, n_events)
        invalid_by_rule = {
            o.rule: o.unexpected_count for o in outcomes if o.counts_toward_bad_share and o.unexpected_count
        }
        failure = _gate_message(outcomes, invalid_rows, total_rows, config.max_bad_share)

        t = time.perf_counter()
        _write_quarantine(con, quarantine_path, as_of)
        timings["write_quarantine"] = time.perf_counter() - t
        if failure is None:
            t = time.perf_counter()
            _write_clean(con, clean_path)
            timings["write_clean"] = time.perf_counter() - t
    finally:
        con.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)

    report = EventValidationReport(
        **context,
        total_rows=total_rows,
        clean_rows=clean_rows,
        invalid_rows=invalid_rows,
        duplicates_removed=n_dup,
        duplicates_differing=n_dup_differs,
        invalid_by_rule=invalid_by_rule,
        expectations=outcomes,
        schema_failures=schema_failures,
        clean_path=str(clean_path) if failure is None else None,
        seconds=time.perf_counter() - started,
        timings=timings,
        gx_version=gx.__version__,
        failure=failure,
    )
    if docs_root is not None:
        data_docs = _publish_docs(docs_root, suite, skipped, outcomes, _parameters(config, max_event_ts), as_of)
        report = dataclasses.replace(report, data_docs=data_docs)
    report.write(report_path)
    log.info(
        "validated %d rows in %.1fs: %d clean, %d invalid (%.2f%%), %d duplicates removed; quarantine %s",
        total_rows,
        report.seconds,
        clean_rows,
        invalid_rows,
        100 * report.bad_share,
        n_dup,
        quarantine_path,
    )
    if failure is not None:
        log.error("%s", failure)
        raise EventValidationError(failure, report)
    return report


# --------------------------------------------------------------------------------------------------- reading


def _load(con: duckdb.DuckDBPyConnection, checks: list[FileCheck]) -> dict[str, str]:
    """Tables `files`, `ev` (rows of conforming files, contract types) and `schema_rows` (rows of the others).

    Returns {file: error} for the files whose rows cannot be read at all.
    """
    con.register(
        "files_in",
        pa.table(
            {
                "file_idx": pa.array(range(len(checks)), pa.int64()),
                "path": [str(c.path) for c in checks],
                "rel": [c.rel for c in checks],
            }
        ),
    )
    con.execute("CREATE TEMP TABLE files AS SELECT * FROM files_in")
    con.unregister("files_in")
    columns_ddl = ", ".join(f"{_q(c)} {_sql_type(c)}" for c in EVENT_COLUMNS)
    con.execute(f"CREATE TEMP TABLE ev ({ROW_ID} BIGINT, {columns_ddl})")
    con.execute(f"CREATE TEMP TABLE schema_rows ({ROW_ID} BIGINT, {columns_ddl}, raw VARCHAR)")

    errors = {c.rel: c.error for c in checks if c.error}
    conforming = [c for c in checks if c.conforms]
    casts = ", ".join(f"CAST(r.{_q(c)} AS {_sql_type(c)})" for c in EVENT_COLUMNS)
    insert = f"""
        INSERT INTO ev
        SELECT (f.file_idx << {_FILE_SHIFT}) + r.file_row_number, {casts}
        FROM read_parquet($files, hive_partitioning = true, union_by_name = true, filename = true,
                          file_row_number = true) r
        JOIN files f ON f.path = r.filename
    """
    if conforming:
        try:
            con.execute(insert, {"files": [str(c.path) for c in conforming]})
        except duckdb.Error:  # find the file(s) that broke the read; a failed INSERT leaves no rows behind
            for c in conforming:
                try:
                    con.execute(insert, {"files": [str(c.path)]})
                except duckdb.Error as exc:
                    errors[c.rel] = f"{type(exc).__name__}: {exc}"
    for idx, c in enumerate(checks):
        if c.error is None and c.problems:
            error = _load_schema_rows(con, idx, c)
            if error:
                errors[c.rel] = error
    return errors


def _load_schema_rows(con: duckdb.DuckDBPyConnection, idx: int, c: FileCheck) -> str | None:
    """Quarantine every row of a file that fails the schema rule: values cast where possible, the original in `raw`."""
    present = set(c.columns) | set(c.hive_keys)
    values = [
        f"TRY_CAST(r.{_q(col)} AS {_sql_type(col)})" if col in present else f"NULL::{_sql_type(col)}"
        for col in EVENT_COLUMNS
    ]
    raw = "to_json(struct_pack(" + ", ".join(f"{_q(col)} := r.{_q(col)}" for col in c.columns) + "))"
    nulls = ", ".join(f"NULL::{_sql_type(col)}" for col in EVENT_COLUMNS)
    source = "read_parquet($path, hive_partitioning = true, file_row_number = true)"
    error = None
    # If even TRY_CAST/to_json cannot handle a column type, keep the rows (and their count) without values.
    for select in (f"{', '.join(values)}, {raw}", f"{nulls}, NULL"):
        try:
            con.execute(
                f"INSERT INTO schema_rows SELECT ({idx}::BIGINT << {_FILE_SHIFT}) + r.file_row_number, {select} FROM {source} r",
                {"path": str(c.path)},
            )
            if error:
                log.warning("%s: cannot cast its columns (%s); its rows are quarantined without values", c.rel, error)
            return None
        except duckdb.Error as exc:
            error = f"{type(exc).__name__}: {exc}"
    return error


def _load_reference_ads(con: duckdb.DuckDBPyConnection, catalog: Path | None) -> None:
    """Table `ref_ads(ad_id, campaign_id, advertiser_id)`: the catalog, or the ads of this batch's impressions."""
    if catalog is None:
        con.execute(
            "CREATE TEMP TABLE ref_ads AS SELECT DISTINCT ad_id, NULL::VARCHAR AS campaign_id, "
            "NULL::VARCHAR AS advertiser_id FROM ev WHERE event_type = 'impression' AND ad_id IS NOT NULL"
        )
        return
    if not catalog.is_file():
        raise EventValidationError(f"ads catalog {catalog} does not exist")
    try:
        con.execute(
            "CREATE TEMP TABLE ref_ads AS SELECT DISTINCT CAST(ad_id AS VARCHAR) AS ad_id, "
            "CAST(campaign_id AS VARCHAR) AS campaign_id, CAST(advertiser_id AS VARCHAR) AS advertiser_id "
            "FROM read_parquet($path) WHERE ad_id IS NOT NULL",
            {"path": str(catalog)},
        )
    except duckdb.Error as exc:
        raise EventValidationError(
            f"cannot read the ads catalog {catalog} (needs ad_id, campaign_id, advertiser_id): {exc}"
        ) from exc
    conflicts = con.sql("SELECT ad_id FROM ref_ads GROUP BY ad_id HAVING count(*) > 1 ORDER BY ad_id").fetchall()
    if conflicts:
        sample = ", ".join(r[0] for r in conflicts[:5])
        raise EventValidationError(
            f"ads catalog {catalog} maps {len(conflicts)} ad_id(s) to more than one campaign/advertiser: {sample}"
        )


# ------------------------------------------------------------------------------------------ great expectations


def _run_gx(
    gx: Any,
    con: duckdb.DuckDBPyConnection,
    suite: EventSuite,
    active: tuple[Rule, ...],
    n_events: int,
    chunk_rows: int,
    config: ValidationConfig,
    max_event_ts: datetime,
) -> dict[str, _RuleTally]:
    tallies = {r.name: _RuleTally(r) for r in active}
    if n_events == 0:
        return tallies

    context = ephemeral_context(gx)
    batch_definition = (
        context.data_sources.add_pandas("freqcap_events")
        .add_dataframe_asset("events")
        .add_batch_definition_whole_dataframe("batch")
    )
    gx_suite = build_gx_suite(suite, active)
    parameters = _parameters(config, max_event_ts)
    result_format = {
        "result_format": "COMPLETE",
        "unexpected_index_column_names": [ROW_ID],
        "exclude_unexpected_values": True,
        "return_unexpected_index_query": False,
        "partial_unexpected_count": 0,
    }
    pairs = [r.columns for r in active if len(r.columns) == 2]
    n_chunks = max(1, math.ceil(n_events / chunk_rows))
    chunk_filter = "" if n_chunks == 1 else f"WHERE hash(e.event_id) % {n_chunks} = $k"
    query = f"""
        SELECT e.{ROW_ID}, {", ".join(f"e.{_q(c)}" for c in EVENT_COLUMNS)},
               a.ad_id AS _known_ad_id, a.campaign_id AS _catalog_campaign_id,
               a.advertiser_id AS _catalog_advertiser_id
        FROM ev e LEFT JOIN ref_ads a ON e.ad_id = a.ad_id
        {chunk_filter}
    """
    for k in range(n_chunks):
        t = time.perf_counter()
        table = con.sql(query, params={"k": k} if n_chunks > 1 else None).to_arrow_table()
        if table.num_rows == 0:
            continue
        frame = _to_pandas(table, pairs)
        del table
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(gx_suite, result_format=result_format, expectation_parameters=parameters)
        for res in result.results:
            _tally(tallies, res)
        del frame, batch, result
        log.info("great expectations: chunk %d/%d validated in %.1fs", k + 1, n_chunks, time.perf_counter() - t)
    return tallies


def _to_pandas(table: pa.Table, pairs: Iterable[tuple[str, ...]] = ()) -> Any:
    """The chunk as a pandas frame indexed by `_row`, strings as categoricals (see the note at the top)."""
    import pandas as pd

    columns = {
        name: (
            table.column(name).dictionary_encode()
            if pa.types.is_string(table.column(name).type)
            else table.column(name)
        )
        for name in table.column_names
        if name != ROW_ID
    }
    frame = pa.table(columns).to_pandas()
    for a, b in pairs:
        if isinstance(frame[a].dtype, pd.CategoricalDtype) and isinstance(frame[b].dtype, pd.CategoricalDtype):
            categories = frame[a].cat.categories.union(frame[b].cat.categories)
            frame[a] = frame[a].cat.set_categories(categories)
            frame[b] = frame[b].cat.set_categories(categories)
    frame.index = pd.Index(table.column(ROW_ID).to_numpy(), name=ROW_ID)
    return frame


def _tally(tallies: dict[str, _RuleTally], res: Any) -> None:
    rule_name = (res.expectation_config.meta or {}).get("rule")
    tally = tallies.get(rule_name)
    if tally is None:
        raise ValidationSuiteError(f"Great Expectations returned a result for an unknown rule {rule_name!r}")
    error = _raised(res.exception_info)
    if error is not None:
        raise ValidationSuiteError(f"expectation {tally.rule.describe()} (rule {rule_name}) raised: {error}")
    tally.success = tally.success and bool(res.success)
    result = res.result or {}
    if tally.rule.on_failure == "error":
        # What GX saw, for the message: per chunk, so keep the failing chunk's observation (else the last one).
        observed = result.get("observed_value")
        if observed is None and result.get("missing_count"):  # a set expectation: which values never appeared
            value_set = tally.rule.kwargs.get("value_set")
            everything = isinstance(value_set, list) and result["missing_count"] == len(value_set)
            observed = {"missing": value_set} if everything else {"missing_count": result["missing_count"]}
        if observed is not None and (not res.success or tally.observed is None):
            tally.observed = plain(observed)
        return
    if "unexpected_count" not in result:
        raise ValidationSuiteError(
            f"rule {rule_name}: Great Expectations returned no unexpected_count ({result!r:.200})"
        )
    unexpected = int(result["unexpected_count"])
    rows = _unexpected_rows(result.get("unexpected_index_list"))
    if len(rows) != unexpected:
        raise ValidationSuiteError(
            f"rule {rule_name}: Great Expectations counted {unexpected} unexpected rows but returned {len(rows)} row ids"
        )
    tally.unexpected += unexpected
    tally.elements += int(result.get("element_count") or 0)
    if len(rows):
        tally.rows.append(rows)


def _raised(info: Any) -> str | None:
    """The message of an exception GX caught while validating, if any.

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


def _unexpected_rows(index_list: Iterable[Any] | None) -> np.ndarray:
    """The `_row` ids of GX's `unexpected_index_list` (a list of `{"_row": [ids]}` with exclude_unexpected_values)."""
    ids: list[Any] = []
    for item in index_list or ():
        if not isinstance(item, dict) or ROW_ID not in item:
            raise ValidationSuiteError(f"unexpected shape of a GX unexpected_index_list entry: {item!r:.200}")
        value = item[ROW_ID]
        ids.extend(value if isinstance(value, list) else [value])
    return np.asarray(ids, dtype=np.int64)


def _parameters(config: ValidationConfig, max_event_ts: datetime) -> dict[str, Any]:
    """The suite's run-time parameters (see `meta.freqcap.parameters` in the suite file)."""
    return {
        "allowed_formats": list(config.allowed_formats),
        "max_event_ts": max_event_ts,
        # The newest event may be at most `max_event_staleness` older than as_of (= max_event_ts - tolerance).
        "min_newest_event_ts": max_event_ts
        - parse_duration(config.future_tolerance)
        - parse_duration(config.max_event_staleness),
    }


def _publish_docs(
    root: Path,
    suite: EventSuite,
    skipped: dict[str, str],
    outcomes: tuple[ExpectationOutcome, ...],
    parameters: dict[str, Any],
    as_of: datetime,
) -> str | None:
    """One summary result per rule (counts over all chunks) on the Data Docs site; None if it cannot be written."""
    from freqcap.adapters.gx.docs import publish_summary

    by_rule = {o.rule: o for o in outcomes}
    rules = []
    for rule in suite.rules:
        o = by_rule.get(rule.name)
        if o is None or rule.name in skipped:
            continue
        outcome = {"success": o.success, "unexpected_count": o.unexpected_count, "element_count": o.element_count}
        if "observed" in o.details:
            outcome["observed"] = o.details["observed"]
        rules.append((rule.gx_config(), outcome))
    return publish_summary(
        root, suite_name=suite.name, table="events", run_name=as_of.isoformat(), rules=rules, parameters=parameters
    )


# ---------------------------------------------------------------------------------------- reasons and dedup


def _flag_rows(con: duckdb.DuckDBPyConnection, tallies: dict[str, _RuleTally]) -> None:
    """Tables `bad(_row, reason)` (failed rules, suite order, `;`-joined) and `dup(_row, reason)`."""
    order = {name: i for i, name in enumerate(tallies)}
    row_parts, ord_parts = [], []
    for name, tally in tallies.items():
        if tally.rule.on_failure != "quarantine":
            continue
        for rows in tally.rows:
            row_parts.append(rows)
            ord_parts.append(np.full(len(rows), order[name], dtype=np.int32))
    flags = pa.table(
        {
            ROW_ID: pa.array(np.concatenate(row_parts) if row_parts else np.empty(0, np.int64), pa.int64()),
            "ord": pa.array(np.concatenate(ord_parts) if ord_parts else np.empty(0, np.int32), pa.int32()),
        }
    )
    rules = pa.table({"ord": pa.array(list(order.values()), pa.int32()), "rule": list(order)})
    con.register("flags", flags)
    con.register("rules", rules)
    con.execute(
        f"CREATE TEMP TABLE bad AS SELECT {ROW_ID}, string_agg(rule, ';' ORDER BY ord) AS reason "
        f"FROM flags JOIN rules USING (ord) GROUP BY {ROW_ID}"
    )
    con.unregister("flags")
    con.unregister("rules")

    payload = ", ".join(f"{_q(c)} := v.{_q(c)}" for c in EVENT_COLUMNS if c != "event_id")
    con.execute(
        f"""
        CREATE TEMP TABLE dup AS
        WITH valid AS (SELECT e.* FROM ev e ANTI JOIN bad b ON e.{ROW_ID} = b.{ROW_ID}),
        repeated AS (SELECT event_id FROM valid WHERE event_id IS NOT NULL GROUP BY event_id HAVING count(*) > 1),
        ranked AS (
            SELECT v.{ROW_ID}, row_number() OVER w AS rn, struct_pack({payload}) AS payload,
                   first_value(struct_pack({payload})) OVER w AS kept
            FROM valid v SEMI JOIN repeated r ON v.event_id = r.event_id
            WINDOW w AS (PARTITION BY v.event_id ORDER BY v.event_ts, v.{ROW_ID})
        )
        SELECT {ROW_ID}, CASE WHEN payload IS NOT DISTINCT FROM kept THEN 'duplicate' ELSE 'duplicate_differs' END
               AS reason
        FROM ranked WHERE rn > 1
        """
    )


def _outcomes(
    suite: EventSuite,
    tallies: dict[str, _RuleTally],
    skipped: dict[str, str],
    n_schema: int,
    total_rows: int,
    schema_failures: tuple[dict[str, Any], ...],
    n_events: int,
) -> tuple[ExpectationOutcome, ...]:
    out = [
        ExpectationOutcome(
            rule=suite.schema_rule,
            expectation_type="parquet_file_schema",
            columns=(),
            on_failure="quarantine",
            success=n_schema == 0 and not schema_failures,
            unexpected_count=n_schema,
            element_count=total_rows,
            details={"files": [f["file"] for f in schema_failures]} if schema_failures else {},
        )
    ]
    for rule in suite.rules:
        if rule.name in skipped:
            out.append(
                ExpectationOutcome(
                    rule.name, rule.expectation_type, rule.columns, rule.on_failure, None, skipped=skipped[rule.name]
                )
            )
            continue
        tally = tallies[rule.name]
        if n_events == 0:
            out.append(
                ExpectationOutcome(
                    rule.name, rule.expectation_type, rule.columns, rule.on_failure, None, skipped="no rows to validate"
                )
            )
            continue
        out.append(
            ExpectationOutcome(
                rule.name,
                rule.expectation_type,
                rule.columns,
                rule.on_failure,
                tally.success,
                tally.unexpected,
                tally.elements,
                details={"observed": tally.observed} if tally.observed is not None else {},
            )
        )
    return tuple(out)


def _gate_message(
    outcomes: tuple[ExpectationOutcome, ...], invalid_rows: int, total_rows: int, max_bad_share: float
) -> str | None:
    """The failure message when the run must stop, else None."""
    errors = [o for o in outcomes if o.on_failure == "error" and o.success is False]
    bad_share = invalid_rows / total_rows if total_rows else 0.0
    if not errors and bad_share <= max_bad_share:
        return None
    failed = [o for o in outcomes if o.success is False and o.on_failure != "dedup"]
    listed = "; ".join(
        f"{o.rule} ({o.expectation_type}{' on ' + ', '.join(o.columns) if o.columns else ''}): "
        + (f"{o.unexpected_count} rows" if o.on_failure == "quarantine" else "failed")
        + (f", observed {json.dumps(o.details['observed'])}" if "observed" in o.details else "")
        for o in failed
    )
    head = f"event validation failed: {invalid_rows} of {total_rows} rows invalid ({100 * bad_share:.2f}%)"
    if bad_share > max_bad_share:
        head += f", above max_bad_share {100 * max_bad_share:.2f}%"
    if errors:
        head += f"; batch-level expectation(s) failed: {', '.join(o.rule for o in errors)}"
    return f"{head}. Failed expectations: {listed or 'none'}"


# --------------------------------------------------------------------------------------------------- writing


def _write_quarantine(con: duckdb.DuckDBPyConnection, path: Path, as_of: datetime) -> None:
    cols = ", ".join(f"e.{_q(c)}" for c in EVENT_COLUMNS)
    query = f"""
        SELECT {_CONTRACT_SQL}, reason, $as_of::TIMESTAMPTZ AS as_of, f.rel AS source_file, raw FROM (
            SELECT e.{ROW_ID}, {cols}, b.reason, NULL::VARCHAR AS raw FROM ev e JOIN bad b USING ({ROW_ID})
            UNION ALL
            SELECT e.{ROW_ID}, {cols}, d.reason, NULL::VARCHAR FROM ev e JOIN dup d USING ({ROW_ID})
            UNION ALL
            SELECT e.{ROW_ID}, {cols}, 'schema', e.raw FROM schema_rows e
        ) e
        JOIN files f ON f.file_idx = e.{ROW_ID} >> {_FILE_SHIFT}
        ORDER BY e.{ROW_ID}
    """
    _write(con.sql(query, params={"as_of": as_of}), path, QUARANTINE_SCHEMA)


def _write_clean(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    query = f"""
        SELECT {_CONTRACT_SQL} FROM ev e
        ANTI JOIN bad b ON e.{ROW_ID} = b.{ROW_ID}
        ANTI JOIN dup d ON e.{ROW_ID} = d.{ROW_ID}
        ORDER BY event_ts, event_id
    """
    _write(con.sql(query), path, EVENT_SCHEMA)


def _write(relation: duckdb.DuckDBPyRelation, path: Path, schema: pa.Schema) -> None:
    """Stream a query into one Parquet file with exactly `schema`; atomically (a temp file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    reader = relation.to_arrow_reader(_WRITE_BATCH_ROWS)
    with pq.ParquetWriter(tmp, schema) as writer:
        for batch in reader:
            writer.write_table(pa.Table.from_batches([batch]).cast(schema))
    tmp.replace(path)


def _remove(path: Path) -> None:
    if path.exists():
        log.info("removing %s (from an earlier run)", path)
        path.unlink()
