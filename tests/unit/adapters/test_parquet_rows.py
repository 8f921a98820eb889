"""Removing users' rows from Parquet files: exact rows, same schema, atomic, idempotent; checked row by row."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.adapters.parquet_rows import drop_rows, forget_in_tree

FORMS = {"u1", "u.k1.AAAAAAAAAAAAAAAAAAAAAA"}


def _events(users: list[str]) -> pa.Table:
    n = len(users)
    schema = pa.schema(
        [
            ("event_id", pa.string()),
            ("event_ts", pa.timestamp("us", tz="UTC")),
            ("user_id", pa.string()),
            ("ad_id", pa.string()),
            ("conversion_value", pa.float64()),
        ],
        metadata={b"origin": b"test"},
    )
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_ts": [datetime(2026, 10, 1, tzinfo=UTC)] * n,
            "user_id": users,
            # An ad whose id equals a forgotten user's id: only the user column decides.
            "ad_id": ["u1" if i % 3 == 0 else f"a{i}" for i in range(n)],
            "conversion_value": [None if i % 2 else 1.5 for i in range(n)],
        },
        schema=schema,
    )


def test_only_the_forms_rows_go_and_the_schema_stays(tmp_path):
    users = ["u1", "u10", "u2", "xu1", "u.k1.AAAAAAAAAAAAAAAAAAAAAA", None, "u1", "u3"]
    table = _events(users)
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=3)  # several row groups

    result = drop_rows(path, FORMS)

    expected = [r for r in table.to_pylist() if r["user_id"] not in FORMS]
    after = pq.read_table(path)
    assert after.to_pylist() == expected
    assert after.schema.equals(table.schema, check_metadata=True)
    assert (result.removed, result.kept) == (3, len(expected))
    assert result.event_ids == {"e0", "e4", "e6"}
    assert not list(tmp_path.glob("*tmp*"))


def test_a_file_without_the_user_is_not_rewritten_and_a_second_run_is_a_no_op(tmp_path):
    path = tmp_path / "events.parquet"
    pq.write_table(_events(["u2", "u3"]), path)
    before = os.stat(path)
    assert drop_rows(path, FORMS).removed == 0
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_file_that_loses_every_row_stays_readable_and_empty(tmp_path):
    path = tmp_path / "snapshot.parquet"
    pq.write_table(_events(["u1", "u1"]), path)
    drop_rows(path, FORMS)
    after = pq.read_table(path)
    assert after.num_rows == 0 and after.schema.names == _events([]).schema.names


def test_quarantine_raw_json_is_matched_too(tmp_path):
    raws = [json.dumps({"user_id": "u1", "event_id": "x"}), "not json", json.dumps({"user_id": "u2"}), None]
    table = pa.table({"user_id": [None, None, None, "u1"], "reason": ["schema"] * 4, "raw": raws})
    path = tmp_path / "quarantine.parquet"
    pq.write_table(table, path)
    assert drop_rows(path, FORMS).removed == 2
    assert pq.read_table(path).column("raw").to_pylist() == ["not json", json.dumps({"user_id": "u2"})]


def test_tree_walk_covers_nested_files_and_hive_partitions_by_user(tmp_path):
    root = tmp_path / "data"
    (root / "raw" / "events" / "date=2026-10-01").mkdir(parents=True)
    pq.write_table(_events(["u1", "u2"]), root / "raw" / "events" / "date=2026-10-01" / "part-0.parquet")
    (root / "by_user" / "user_id=u1").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), root / "by_user" / "user_id=u1" / "part-0.parquet")
    (root / "by_user" / "user_id=u2").mkdir(parents=True)
    pq.write_table(pa.table({"x": [3]}), root / "by_user" / "user_id=u2" / "part-0.parquet")
    pq.write_table(pa.table({"cohort": ["a"], "rate": [0.1]}), root / "curves.parquet")  # no user column
    (root / "notes.parquet").write_text("not parquet at all")

    results = forget_in_tree(root, FORMS)

    assert sorted((r.path.relative_to(root).as_posix(), r.removed) for r in results) == [
        ("by_user/user_id=u1/part-0.parquet", 2),
        ("raw/events/date=2026-10-01/part-0.parquet", 1),
    ]
    assert not (root / "by_user" / "user_id=u1").exists()
    assert pq.read_table(root / "by_user" / "user_id=u2" / "part-0.parquet").num_rows == 1
    assert forget_in_tree(root, FORMS) == []  # idempotent
