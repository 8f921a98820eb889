"""What an events validation run writes from its tables: the quarantine (every row set aside, with its reason)
and the clean events. Each file is streamed from DuckDB and written atomically (a temp file, then a rename)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.adapters.gx.event_tables import CONTRACT_SQL, FILE_SHIFT, ROW_ID, quoted
from freqcap.domain.events import EVENT_COLUMNS, EVENT_SCHEMA, TIMESTAMP_TYPE

QUARANTINE_SCHEMA = pa.schema(
    [pa.field(f.name, f.type) for f in EVENT_SCHEMA]
    + [
        pa.field("reason", pa.string()),
        pa.field("as_of", TIMESTAMP_TYPE),
        pa.field("source_file", pa.string()),
        pa.field("raw", pa.string()),  # the original row as JSON, for rows of files that failed the schema rule
    ]
)
_WRITE_BATCH_ROWS = 1_000_000


def write_quarantine(con: duckdb.DuckDBPyConnection, path: Path, as_of: datetime) -> None:
    """The rows of `bad`, `dup` and `schema_rows` with their reason and source file, in `_row` order."""
    cols = ", ".join(f"e.{quoted(c)}" for c in EVENT_COLUMNS)
    query = f"""
        SELECT {CONTRACT_SQL}, reason, $as_of::TIMESTAMPTZ AS as_of, f.rel AS source_file, raw FROM (
            SELECT e.{ROW_ID}, {cols}, b.reason, NULL::VARCHAR AS raw FROM ev e JOIN bad b USING ({ROW_ID})
            UNION ALL
            SELECT e.{ROW_ID}, {cols}, d.reason, NULL::VARCHAR FROM ev e JOIN dup d USING ({ROW_ID})
            UNION ALL
            SELECT e.{ROW_ID}, {cols}, 'schema', e.raw FROM schema_rows e
        ) e
        JOIN files f ON f.file_idx = e.{ROW_ID} >> {FILE_SHIFT}
        ORDER BY e.{ROW_ID}
    """
    _write(con.sql(query, params={"as_of": as_of}), path, QUARANTINE_SCHEMA)


def write_clean(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """The rows of `ev` neither in `bad` nor in `dup`, in the contract schema, sorted by event_ts."""
    query = f"""
        SELECT {CONTRACT_SQL} FROM ev e
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
