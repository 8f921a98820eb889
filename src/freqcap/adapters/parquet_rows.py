"""Removing one person's rows from Parquet files: every table under the data directory that has a `user_id`.

Events (raw and clean), the quarantine, feature tables of each run, the Feast offline snapshots, training sets,
monitoring samples and the users table are all Parquet files with a `user_id` column, so one rewrite serves them
all: the file is read row group by row group, the matching rows are left out, and the rest is written to a
temporary file beside it with the **same schema** (metadata included) that then replaces the original atomically
(`os.replace`): a reader sees the old file or the new one, never half of either. A file with no matching row is not
touched (so a second run rewrites nothing). A file that loses every row is kept, empty, with its schema: readers
that glob a directory or expect a snapshot per as-of time still find it.

Matching: `user_id` (cast to text) is one of the given forms; for the quarantine's `raw` column (the original row
as JSON, for rows of files that failed the schema rule) the JSON's `user_id`. A Hive partition directory
`user_id=<form>` is removed whole.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

USER_COLUMN = "user_id"
RAW_COLUMN = "raw"
_TMP_SUFFIX = ".forget-tmp"


@dataclass(frozen=True)
class FileResult:
    path: Path
    removed: int  # rows left out
    kept: int  # rows still in the file
    event_ids: frozenset[str] = frozenset()  # `event_id`s of the rows left out (for the stream's dedup marks)


def _raw_user(text: str | None) -> str | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    user = value.get(USER_COLUMN) if isinstance(value, dict) else None
    return None if user is None else str(user)


def _mask(batch: pa.RecordBatch, forms: pa.Array) -> pa.Array:
    """True for the rows of `batch` that belong to one of `forms`."""
    hit = pa.array([False] * batch.num_rows)
    names = batch.schema.names
    if USER_COLUMN in names:
        column = batch.column(USER_COLUMN).cast(pa.string())
        hit = pc.fill_null(pc.is_in(column, value_set=forms), False)
    if RAW_COLUMN in names and pa.types.is_string(batch.schema.field(RAW_COLUMN).type):
        wanted = set(forms.to_pylist())
        raw = pa.array([_raw_user(t) in wanted for t in batch.column(RAW_COLUMN).to_pylist()])
        hit = pc.or_(hit, raw)
    return hit


def holds_users(path: Path) -> bool:
    """Whether the Parquet file at `path` has a column this module matches on."""
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError):
        return False  # not Parquet (or being written): nothing this module can read
    return USER_COLUMN in names or RAW_COLUMN in names


def _partition_hit(path: Path, root: Path, forms: Collection[str]) -> bool:
    parts = path.relative_to(root).parts[:-1]
    return any(p.startswith(f"{USER_COLUMN}=") and p.split("=", 1)[1] in forms for p in parts)


def drop_rows(path: Path, forms: Collection[str]) -> FileResult:
    """Rewrite `path` without the rows of `forms` (atomically; untouched when it holds none)."""
    value_set = pa.array(sorted(forms), pa.string())
    source = pq.ParquetFile(path)
    removed = 0
    event_ids: set[str] = set()
    # A first pass that only counts, reading only the columns that match (most files hold no such row).
    names = source.schema_arrow.names
    needed = [c for c in (USER_COLUMN, RAW_COLUMN, "event_id") if c in names]
    for i in range(source.num_row_groups):
        batch = source.read_row_group(i, columns=needed)
        mask = _mask(batch, value_set)
        hits = pc.sum(mask.cast(pa.int64())).as_py() or 0
        if hits and "event_id" in batch.schema.names:
            event_ids.update(str(e) for e in batch.column("event_id").filter(mask).to_pylist() if e is not None)
        removed += hits
    total = source.metadata.num_rows
    if removed == 0:
        return FileResult(path, 0, total)
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    with pq.ParquetWriter(tmp, source.schema_arrow) as writer:
        for i in range(source.num_row_groups):
            batch = source.read_row_group(i)
            kept = batch.filter(pc.invert(_mask(batch, value_set)))
            if kept.num_rows:
                writer.write_table(kept)
    os.replace(tmp, path)  # atomic on one file system: readers see the old file or the new one
    return FileResult(path, removed, total - removed, frozenset(event_ids))


def parquet_files(root: Path) -> Iterator[Path]:
    """Every Parquet file under `root` (a file itself counts), in a stable order."""
    if root.is_file():
        yield root
        return
    if root.is_dir():
        yield from sorted(p for p in root.rglob("*.parquet") if p.is_file())


def forget_in_tree(root: Path, forms: Collection[str]) -> list[FileResult]:
    """Remove the rows of `forms` from every Parquet file under `root`; partition directories `user_id=<form>`
    are deleted whole. Returns one result per file that held a matching row."""
    results: list[FileResult] = []
    removed_dirs: set[Path] = set()
    for path in parquet_files(root):
        if root.is_dir() and _partition_hit(path, root, forms):
            table = pq.read_table(path, columns=None)
            ids = table.column("event_id").to_pylist() if "event_id" in table.schema.names else []
            results.append(FileResult(path, table.num_rows, 0, frozenset(str(e) for e in ids if e is not None)))
            removed_dirs.add(next(p for p in path.parents if p.name.startswith(f"{USER_COLUMN}=")))
            continue
        if holds_users(path):
            result = drop_rows(path, forms)
            if result.removed:
                results.append(result)
    for directory in sorted(removed_dirs):
        shutil.rmtree(directory, ignore_errors=True)
    for stale in root.rglob(f"*{_TMP_SUFFIX}") if root.is_dir() else ():  # left by a rewrite that was killed
        stale.unlink(missing_ok=True)
    return results
