"""The DuckDB tables of one events validation run, from the files read to the rows set aside.

- `files(file_idx, path, rel)`: every file of the run, by index.
- `ev(_row, <contract columns>)`: the rows of the files that conform to the contract, cast to the contract types.
- `schema_rows(_row, <contract columns>, raw)`: the rows of the files that do not (values cast where possible).
- `ref_ads(ad_id, campaign_id, advertiser_id)`: the ads clicks and conversions may reference.
- `bad(_row, reason)`: rows of `ev` that failed rules, and `dup(_row, reason)`: valid repeats of an event_id.

Every row is known by `_row` = file index << 40 | row number in the file: stable, and unique where event_id
need not be.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from freqcap.adapters.gx.errors import EventValidationError
from freqcap.adapters.gx.files import FileCheck
from freqcap.domain.events import EVENT_COLUMNS

log = logging.getLogger(__name__)

ROW_ID = "_row"
FILE_SHIFT = 40  # _row = file_idx << 40 | row number in the file

_SQL_TYPES = {"event_ts": "TIMESTAMPTZ", "conversion_value": "DOUBLE"}  # the rest are VARCHAR


def sql_type(column: str) -> str:
    """The DuckDB type of a contract column."""
    return _SQL_TYPES.get(column, "VARCHAR")


def quoted(name: str) -> str:
    """A column name as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


CONTRACT_SQL = ", ".join(quoted(c) for c in EVENT_COLUMNS)


def load_files(con: duckdb.DuckDBPyConnection, checks: Sequence[FileCheck]) -> dict[str, str]:
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
    columns_ddl = ", ".join(f"{quoted(c)} {sql_type(c)}" for c in EVENT_COLUMNS)
    con.execute(f"CREATE TEMP TABLE ev ({ROW_ID} BIGINT, {columns_ddl})")
    con.execute(f"CREATE TEMP TABLE schema_rows ({ROW_ID} BIGINT, {columns_ddl}, raw VARCHAR)")

    errors = {c.rel: c.error for c in checks if c.error}
    conforming = [c for c in checks if c.conforms]
    casts = ", ".join(f"CAST(r.{quoted(c)} AS {sql_type(c)})" for c in EVENT_COLUMNS)
    insert = f"""
        INSERT INTO ev
        SELECT (f.file_idx << {FILE_SHIFT}) + r.file_row_number, {casts}
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
        f"TRY_CAST(r.{quoted(col)} AS {sql_type(col)})" if col in present else f"NULL::{sql_type(col)}"
        for col in EVENT_COLUMNS
    ]
    raw = "to_json(struct_pack(" + ", ".join(f"{quoted(col)} := r.{quoted(col)}" for col in c.columns) + "))"
    nulls = ", ".join(f"NULL::{sql_type(col)}" for col in EVENT_COLUMNS)
    source = "read_parquet($path, hive_partitioning = true, file_row_number = true)"
    error = None
    # If even TRY_CAST/to_json cannot handle a column type, keep the rows (and their count) without values.
    for select in (f"{', '.join(values)}, {raw}", f"{nulls}, NULL"):
        try:
            con.execute(
                f"INSERT INTO schema_rows SELECT ({idx}::BIGINT << {FILE_SHIFT}) + r.file_row_number, {select} FROM {source} r",
                {"path": str(c.path)},
            )
            if error:
                log.warning("%s: cannot cast its columns (%s); its rows are quarantined without values", c.rel, error)
            return None
        except duckdb.Error as exc:
            error = f"{type(exc).__name__}: {exc}"
    return error


def load_reference_ads(con: duckdb.DuckDBPyConnection, catalog: Path | None) -> None:
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


def flag_rows(con: duckdb.DuckDBPyConnection, rejected: Mapping[str, Sequence[np.ndarray]]) -> None:
    """Tables `bad(_row, reason)` and `dup(_row, reason)`.

    `rejected` maps every rule, in suite order, to the `_row` ids it quarantines (none for a rule that does not
    quarantine). A row's reason is the `;`-joined names of its rules in that order. Among the other rows, every
    copy of an event_id but the first by (event_ts, `_row`) is a `duplicate`, or `duplicate_differs` when its
    payload differs from the kept copy's.
    """
    order = {name: i for i, name in enumerate(rejected)}
    row_parts, ord_parts = [], []
    for name, arrays in rejected.items():
        for rows in arrays:
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

    payload = ", ".join(f"{quoted(c)} := v.{quoted(c)}" for c in EVENT_COLUMNS if c != "event_id")
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
