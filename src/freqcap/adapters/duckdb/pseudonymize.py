"""Pseudonymizing user ids in bulk with DuckDB: hash each DISTINCT id once in Python, then join.

A user appears in many events, so hashing the distinct ids (a few µs each) and mapping the rows with a join costs
far less than a Python function per row. Used by batch validation (the `ev` and `schema_rows` tables) and by the
pseudonymized copy of a raw events directory that the training and monitoring jobs read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.adapters.events_files import parquet_glob
from freqcap.domain.privacy import Pseudonymizer

log = logging.getLogger(__name__)

MAP_TABLE = "_pseudonyms"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def register_pseudonyms(
    con: duckdb.DuckDBPyConnection, source_sql: str, column: str, pseudonymizer: Pseudonymizer
) -> int:
    """Register `_pseudonyms(raw, pseudonym)` for the distinct non-null values of `column` in `source_sql` (a
    table name or a subquery); returns how many ids were hashed."""
    col = _quoted(column)
    ids = con.sql(f"SELECT DISTINCT CAST({col} AS VARCHAR) FROM {source_sql} WHERE {col} IS NOT NULL").to_arrow_table()
    raw = ids.column(0).to_pylist() if ids.num_rows else []
    mapping = pa.table({"raw": pa.array(raw, pa.string()), "pseudonym": pa.array(pseudonymizer.many(raw), pa.string())})
    con.register(MAP_TABLE, mapping)
    return len(raw)


def pseudonymize_column(con: duckdb.DuckDBPyConnection, table: str, column: str, pseudonymizer: Pseudonymizer) -> int:
    """Replace every non-null value of `table.column` (VARCHAR) by its pseudonym, in place; returns the number of
    distinct ids hashed."""
    n = register_pseudonyms(con, table, column, pseudonymizer)
    col = _quoted(column)
    try:
        con.execute(f"UPDATE {table} SET {col} = m.pseudonym FROM {MAP_TABLE} m WHERE {table}.{col} = m.raw")
    finally:
        con.unregister(MAP_TABLE)
    return n


def _copy_mapped(con: duckdb.DuckDBPyConnection, source_sql: str, dest: Path, pseudonymizer: Pseudonymizer) -> int:
    """Write `source_sql` to `dest` with `user_id` replaced by its pseudonym (the other columns as they are)."""
    n = register_pseudonyms(con, source_sql, "user_id", pseudonymizer)
    try:
        relation = con.sql(
            f"SELECT s.* REPLACE (m.pseudonym AS user_id) FROM {source_sql} s "
            f"LEFT JOIN {MAP_TABLE} m ON CAST(s.user_id AS VARCHAR) = m.raw"
        )
        table = relation.to_arrow_table()
    finally:
        con.unregister(MAP_TABLE)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(dest)
    return n


def pseudonymize_users_file(source: Path, dest: Path, pseudonymizer: Pseudonymizer) -> int:
    """A copy of a users table (`user_id`, `audience`, ...) with pseudonymous `user_id`; returns the users hashed."""
    con = duckdb.connect()
    try:
        return _copy_mapped(con, f"read_parquet('{_literal(source)}')", dest, pseudonymizer)
    finally:
        con.close()


def pseudonymize_events_dir(source: Path, dest_file: Path, pseudonymizer: Pseudonymizer) -> int:
    """Every event under `source` (a Parquet file or directory) into one Parquet file with pseudonymous `user_id`;
    returns the users hashed. Hive partition keys are not added as columns: the contract columns carry the data."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        glob = _literal(parquet_glob(source))
        source_sql = f"read_parquet('{glob}', hive_partitioning = false, union_by_name = true)"
        return _copy_mapped(con, source_sql, dest_file, pseudonymizer)
    finally:
        con.close()


def _literal(path: str | Path) -> str:
    return str(path).replace("'", "''")
