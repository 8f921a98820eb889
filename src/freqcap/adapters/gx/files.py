"""Per-file schema check of an events directory against the contract (`freqcap.domain.events.EVENT_SCHEMA`).

A Parquet file's types are a property of the file, not of its rows, so the schema rule is checked here, on each
file's footer (no data is read), before any row-level expectation runs. A file passes when it carries every
contract column with the contract type or a lossless representation of it:

- string columns: string, large_string, string_view or dictionary-encoded strings; or a partition key of a Hive
  path (`.../event_type=click/part.parquet`);
- `event_ts`: a timezone-aware timestamp of any unit and zone (it is an instant; it is converted to UTC, µs).
  A naive timestamp is ambiguous and fails;
- `conversion_value`: any float, integer or decimal;
- any column: an all-null column (Parquet/Arrow type `null`); the row-level expectations judge the nulls.

Anything else (an id written as int64, a timestamp written as a string, a missing column) fails, and every row
of that file is quarantined with the reason `schema`. Extra columns are ignored (they are not events data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.domain.events import EVENT_SCHEMA


@dataclass(frozen=True)
class FileCheck:
    path: Path
    rel: str  # path relative to the events directory, posix style
    rows: int = 0
    columns: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    hive_keys: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the file could not be read at all

    @property
    def conforms(self) -> bool:
        return self.error is None and not self.problems


def discover_files(events_dir: Path) -> list[Path]:
    """Every Parquet file under `events_dir` (or the file itself), sorted; hidden (`.x`) and `_x` entries skipped."""
    if events_dir.is_file():
        return [events_dir]
    if not events_dir.is_dir():
        raise FileNotFoundError(f"events path {events_dir} does not exist")
    return sorted(
        p
        for p in events_dir.rglob("*.parquet")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(events_dir).parts)
    )


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_string(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def type_conforms(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type `actual` can be brought to the contract type `expected` without loss or guessing."""
    if pa.types.is_null(actual):
        return True
    if _is_string(expected):
        return _is_string(actual)
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual) and actual.tz is not None
    if pa.types.is_floating(expected):
        return pa.types.is_floating(actual) or pa.types.is_integer(actual) or pa.types.is_decimal(actual)
    return actual.equals(expected)


def hive_keys(path: Path, events_dir: Path) -> dict[str, str]:
    if events_dir.is_file():
        return {}
    keys = {}
    for part in path.relative_to(events_dir).parts[:-1]:
        if "=" in part:
            k, v = part.split("=", 1)
            keys[k] = v
    return keys


def check_file(path: Path, events_dir: Path) -> FileCheck:
    rel = path.name if events_dir.is_file() else path.relative_to(events_dir).as_posix()
    keys = hive_keys(path, events_dir)
    try:
        pf = pq.ParquetFile(path)
        schema, rows = pf.schema_arrow, pf.metadata.num_rows
    except Exception as exc:  # any reader failure means the same thing: this file is unreadable
        return FileCheck(path, rel, hive_keys=keys, error=f"{type(exc).__name__}: {exc}")
    problems = []
    for f in EVENT_SCHEMA:
        indices = schema.get_all_field_indices(f.name)
        if len(indices) > 1:
            problems.append(f"{f.name}: appears {len(indices)} times")
            continue
        if not indices:
            if not (f.name in keys and _is_string(f.type)):
                problems.append(f"{f.name}: missing")
            continue
        actual = schema.field(indices[0]).type
        if not type_conforms(actual, f.type):
            problems.append(f"{f.name}: {actual}, expected {f.type}")
    return FileCheck(path, rel, rows, tuple(schema.names), tuple(problems), keys)
