"""What changed since the recorded snapshot: the snapshot read through DuckDB, diffed exactly, in key order.

The bulk writer streams a view's snapshot as Arrow batches from one DuckDB query (`source_query`). For an
incremental run the query also marks, per row, whether the previous recorded snapshot has the same key with the
same value in every feature column (`UNCHANGED`, `IS NOT DISTINCT FROM`: nulls compare equal); event timestamps are
never compared, so a new snapshot whose values are identical writes nothing. For SQLite the rows come in the byte
order of serialized entity keys (`key_order`), so the writer appends to the table's B-trees.

A recorded state is trusted only if a sample of its snapshot reads back through the store's own `online_read`
with the same values (`previous_snapshot_matches_online`); otherwise the view is rewritten in full.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from freqcap.adapters.feast import online_format as fmt
from freqcap.adapters.feast.bulk.plan import ViewPlan, source_name
from freqcap.adapters.feast.bulk.target import Target

# The column the incremental query adds: the row is the same as in the recorded snapshot.
UNCHANGED = "__freqcap_unchanged"


def sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def select_list(plan: ViewPlan, alias: str) -> str:
    cols = [*plan.key_columns, *plan.feature_names, plan.ts_field]
    if plan.created_field:
        cols.append(plan.created_field)
    return ", ".join(f'{alias}."{source_name(plan, c)}" AS "{c}"' for c in cols)


def key_order(plan: ViewPlan, alias: str) -> str:
    """ORDER BY matching the byte order of serialized entity keys (little-endian length, then the bytes)."""
    terms = []
    for name in sorted(plan.join_keys):
        col = f'{alias}."{source_name(plan, name)}"'
        terms += [f"strlen({col}) % 256", f"(strlen({col}) // 256) % 256", f"strlen({col}) // 65536", f"{col}"]
    return ", ".join(terms)


def source_query(plan: ViewPlan, current: Path, previous: Path | None, ordered: bool) -> str:
    select = select_list(plan, "c")
    src = f"read_parquet({sql_str(str(current))}) c"
    if previous is None:
        query = f"SELECT {select} FROM {src}"
    else:
        conds = [f'c."{source_name(plan, k)}" = p."{source_name(plan, k)}"' for k in plan.key_columns]
        conds += [
            f'c."{source_name(plan, f)}" IS NOT DISTINCT FROM p."{source_name(plan, f)}"' for f in plan.feature_names
        ]
        query = (
            f"SELECT {select}, EXISTS (SELECT 1 FROM read_parquet({sql_str(str(previous))}) p "
            f"WHERE {' AND '.join(conds)}) AS {UNCHANGED} FROM {src}"
        )
    if ordered:
        query += f" ORDER BY {key_order(plan, 'c')}"
    return query


def previous_snapshot_matches_online(
    target: Target, plan: ViewPlan, previous: Path, con: duckdb.DuckDBPyConnection, rows: int = 16
) -> tuple[bool, str]:
    """Read a sample of the recorded snapshot back through the store's own online_read; equal values -> trust it."""
    sample = con.sql(
        f"SELECT {select_list(plan, 'c')} FROM read_parquet({sql_str(str(previous))}) c USING SAMPLE {rows} ROWS"
    ).to_arrow_table()
    if sample.num_rows == 0:
        return True, "recorded snapshot is empty"
    expected = fmt.feast_rows(sample.combine_chunks().to_batches()[0], plan.view, plan.join_keys)
    provider = target.store._get_provider()
    got = provider.online_read(
        target.config, plan.view, [e[0] for e in expected], requested_features=plan.feature_names
    )
    missing = 0
    for (_, want, _, _), (ts, have) in zip(expected, got, strict=True):
        # Feast's Redis read of an absent key: no `_ts` field (the epoch) and no value set.
        absent = have is not None and ts is not None and ts.timestamp() == 0
        absent = absent and all(v.WhichOneof("val") is None for v in have.values())
        if ts is None or have is None or absent:
            # Redis: a key that expired or was evicted is found by the incremental run itself (its EXPIRE answers
            # 0 and the row is rewritten), so a few missing keys do not make the state untrusted. SQLite rows of the
            # recorded snapshot are never removed by anyone but this module: one missing means something else wrote.
            if target.kind != "redis":
                return False, "a row of the recorded snapshot is missing online"
            missing += 1
            continue
        for name in plan.feature_names:
            if have.get(name) != want[name]:
                return False, f"online {name} differs from the recorded snapshot"
    if missing == len(expected):
        return False, "no sampled row of the recorded snapshot is online"
    if missing:
        return True, f"online matches a sample of the recorded snapshot ({missing} missing keys will be rewritten)"
    return True, "online matches a sample of the recorded snapshot"


def file_id(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def record_batches(reader: pa.RecordBatchReader, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `batch_rows` rows (DuckDB may hand out smaller ones; they are fine as they are)."""
    for batch in reader:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)
