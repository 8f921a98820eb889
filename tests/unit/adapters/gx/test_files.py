"""Which Parquet column types count as the contract type (pure schema logic, no data read)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.gx.files import check_file, discover_files, type_conforms
from freqcap.domain.events import EVENT_SCHEMA, TIMESTAMP_TYPE


@pytest.mark.parametrize(
    "actual, expected, ok",
    [
        (pa.string(), pa.string(), True),
        (pa.large_string(), pa.string(), True),
        (pa.string_view(), pa.string(), True),
        (pa.dictionary(pa.int32(), pa.string()), pa.string(), True),
        (pa.null(), pa.string(), True),
        (pa.int64(), pa.string(), False),
        (pa.binary(), pa.string(), False),
        (pa.dictionary(pa.int32(), pa.int64()), pa.string(), False),
        (pa.timestamp("us", tz="UTC"), TIMESTAMP_TYPE, True),
        (pa.timestamp("ns", tz="UTC"), TIMESTAMP_TYPE, True),
        (pa.timestamp("s", tz="America/New_York"), TIMESTAMP_TYPE, True),
        (pa.timestamp("us"), TIMESTAMP_TYPE, False),  # naive: ambiguous
        (pa.string(), TIMESTAMP_TYPE, False),
        (pa.date32(), TIMESTAMP_TYPE, False),
        (pa.int64(), TIMESTAMP_TYPE, False),
        (pa.float64(), pa.float64(), True),
        (pa.float32(), pa.float64(), True),
        (pa.int32(), pa.float64(), True),
        (pa.decimal128(10, 2), pa.float64(), True),
        (pa.string(), pa.float64(), False),
        (pa.bool_(), pa.float64(), False),
    ],
)
def test_type_conforms(actual: pa.DataType, expected: pa.DataType, ok: bool) -> None:
    assert type_conforms(actual, expected) is ok


def test_check_file_lists_every_problem(tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": pa.array([1]),
            "event_type": ["click"],
            "event_ts": ["2026-10-15"],
            "user_id": ["u"],
            "advertiser_id": ["v"],
            "campaign_id": ["c"],
            "ad_id": ["a"],
            "conversion_value": [1.0],
        }
    )
    pq.write_table(table, tmp_path / "x.parquet")
    check = check_file(tmp_path / "x.parquet", tmp_path)
    assert check.rows == 1 and not check.conforms
    assert check.problems == (
        "event_id: int64, expected string",
        "event_ts: string, expected timestamp[us, tz=UTC]",
        "format: missing",
    )


def test_discover_files_skips_hidden_and_underscore_entries(tmp_path: Path) -> None:
    empty = EVENT_SCHEMA.empty_table()
    for rel in ["a.parquet", "d=1/b.parquet", "_tmp/c.parquet", ".hidden.parquet", "d=2/_SUCCESS.parquet"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(empty, tmp_path / rel)
    assert [p.relative_to(tmp_path).as_posix() for p in discover_files(tmp_path)] == ["a.parquet", "d=1/b.parquet"]
    assert discover_files(tmp_path / "a.parquet") == [tmp_path / "a.parquet"]
    with pytest.raises(FileNotFoundError):
        discover_files(tmp_path / "nope")
