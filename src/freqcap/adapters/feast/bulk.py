"""Bulk materialization: published snapshots -> the Feast online store, in Feast's own layout, at store speed.

Feast 0.67's `materialize` builds one protobuf object per value in Python and, on SQLite, runs one statement per
entity per feature (~10 k rows/s into Redis, ~5 k into SQLite; LIBRARY-NOTES). This module writes the *same
bytes in the same places*, encoded column-wise with Arrow/NumPy and streamed in bounded Arrow batches:

* **Redis** (`RedisOnlineStore` layout): one hash per entity key, named `_redis_key(project, entity_key)`
  (Feast's `serialize_entity_key` + project) and shared by every view on that key; field
  `_mmh3("<view>:<feature>")` holds the serialized `ValueProto`, field `_ts:<view>` the serialized protobuf
  `Timestamp`; `EXPIRE key_ttl_seconds` after every write. Commands are encoded as RESP in bulk and pipelined
  over one dedicated connection; every reply is checked. A key that does not exist yet is written as one
  `RESTORE key ttl_ms payload` of exactly the hash that HSET would build (`freqcap.adapters.feast.redis_dump`: ~half the
  Redis CPU per row); `RESTORE` never overwrites, so an existing key (other views' fields, an older write) answers
  `BUSYKEY` and gets `HSET` + `EXPIRE`. Per view and run a real row is written both ways under scratch keys and
  the server's `DUMP`s must be byte-identical, else every row uses `HSET` (`redis_restore=False` forces that).
* **SQLite** (`SqliteOnlineStore` layout): table `<project>_<view>`, one row per (entity_key, feature_name) with
  value, value_text, event_ts and created_ts; rows are written in serialized-key order. Two strategies
  (`sqlite_strategy`): *upsert* (what "auto" does) — Feast's own `ON CONFLICT` statement shape, many entities per
  statement, one transaction per batch, WAL checkpoints on a thread of their own so the writer never waits for the
  fsync; *rebuild* — the table rebuilt in one transaction from Feast's own DDL (`_SqliteTarget`, "rebuild"),
  readers keep the old table until the commit. Measured on 1 M rows (benchmarks/results/materialize.md):
  the upsert is faster at every share of changed rows on a table in key order (which is what this module leaves),
  because in-place updates of a key-ordered table touch only table pages while a rebuild rewrites all three
  B-trees and must checkpoint its whole WAL after the commit; the rebuild only won on a table in foreign physical
  order (1.3x at 90 % changed, 300 k rows), which it leaves in key order.

**Layout guard.** Column encoders are derived from Feast (field numbers from `ValueProto`'s descriptor, values of
low-cardinality columns serialized by `feast.type_map.python_values_to_proto_values`, null encodings computed by
Feast). In every batch a sample of rows (the first and last row, random rows, and a null and a non-null row of
every column that has nulls) is converted with Feast's own materialization code (`feast.utils.
_convert_arrow_to_proto`) and keyed with Feast's own store functions (`_redis_key`, `_mmh3`,
`serialize_entity_key`, the SQLite datetime adapter, `extract_text_and_num`); any byte difference raises
`LayoutMismatchError` before the batch is written. A Feast upgrade that changes the layout fails the job and the
tests (tests/integration/test_bulk_materialize.py), never silently production.

**Incremental runs.** After a view is fully written, the online store records which snapshot it now holds (the
"bulk state": a small Redis key or SQLite table beside Feast's). The next run compares the new snapshot to that one
in DuckDB, exactly on every feature column, and rewrites only rows whose values changed. Unchanged rows keep
their stored values *and their stored event timestamp* (the as-of time at which those values were last written);
the snapshot's as-of is the view's watermark (`online_state`). Before trusting the state, a sample of its rows is
read back through the store's own `online_read` and compared with the snapshot; any difference means a full
rewrite. Event timestamps are never compared: a new snapshot whose values are identical writes nothing.

**Expiry.** Redis: every written key gets `EXPIRE key_ttl_seconds` as Feast does, and unchanged keys get the same
`EXPIRE` without a rewrite (so TTLs track the newest snapshot exactly as with `materialize`); an `EXPIRE` that
answers 0 reveals a key that vanished, and that row is rewritten. A pair that went quiet gets its tombstone
(written by `publish_snapshot`) and then expires `key_ttl_seconds` later. SQLite has no TTL: after each run the
entities whose last write is older than `as_of - settings.feast.online_key_ttl` and that are absent from the
current snapshot are deleted, so the table tracks the same key set Redis would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freqcap.adapters.feast import redis_dump
from freqcap.config import Settings, parse_duration
from freqcap.domain.features import USER_TABLE, serving_columns

log = logging.getLogger(__name__)

# Bumped when what this module writes changes in a way older bulk states must not be trusted across.
LAYOUT_VERSION = 1
STATE_TABLE = "freqcap_bulk_state"
STATE_KEY_PREFIX = b"freqcap:bulk_state:"
_CRLF = b"\r\n"
_UNCHANGED = "__freqcap_unchanged"
# Columns with more distinct values than this share of the batch skip the per-distinct-value path.
_DICT_MAX_SHARE = 0.25
# SQLite "auto": rebuild the view's table instead of upserting in place when at least this share of the snapshot's
# rows must be written; None: never. Measured (benchmarks/results/materialize.md): on a table in key order —
# what this module always leaves, since it writes in key order — the in-place upsert is faster at every share, so
# "auto" upserts. A rebuild paid off only on a table in foreign physical order (e.g. written by Feast's own
# materialize; 1.3x at 90 % changed, 300 k rows) and leaves it in key order: ask for it with
# sqlite_strategy="rebuild" (or a rebuild_share).
REBUILD_SHARE: float | None = None


class BulkMaterializeError(RuntimeError):
    """The online store rejected a write, or the input cannot be written by this path."""


class LayoutMismatchError(BulkMaterializeError):
    """Bytes encoded here differ from what Feast's own write path would store: nothing of that batch was written."""


class StaleSnapshotError(BulkMaterializeError):
    """The online store already holds a newer snapshot of the view than the one given."""


class UnsupportedOnlineStoreError(BulkMaterializeError):
    """The online store (or a feature/entity type) is not handled by the bulk path; use `store.materialize`."""


@dataclass(frozen=True)
class ViewReport:
    """What one view's bulk write did. `rows_read` counts snapshot rows (tombstones included)."""

    view: str
    snapshot: str
    mode: str  # "full" or "incremental"
    reason: str  # why this mode
    rows_read: int
    rows_written: int
    rows_unchanged: int
    rows_repaired: int  # unchanged rows found missing online (Redis EXPIRE answered 0) and rewritten
    rows_deleted: int  # SQLite cleanup: stale entities removed
    batches: int
    seconds: float
    rows_restored: int = 0  # Redis: rows written as a whole new hash with RESTORE (the rest with HSET)
    # How the rows reached the store: "upsert" (in place; Redis always) or "rebuild" (SQLite: the table rebuilt in
    # one transaction, see _SqliteTarget), and the share of snapshot rows written (SQLite "auto" decides on it).
    strategy: str = "upsert"
    write_share: float = 1.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class BulkReport:
    """The whole run: per-view reports plus totals. `rows_per_second` is snapshot rows processed per second."""

    online_store: str
    project: str
    as_of: str
    views: tuple[ViewReport, ...]
    seconds: float

    @property
    def rows_read(self) -> int:
        return sum(v.rows_read for v in self.views)

    @property
    def rows_written(self) -> int:
        return sum(v.rows_written for v in self.views)

    @property
    def rows_skipped(self) -> int:
        return sum(v.rows_unchanged for v in self.views)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "online_store": self.online_store,
            "project": self.project,
            "as_of": self.as_of,
            "seconds": round(self.seconds, 3),
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_skipped": self.rows_skipped,
            "rows_per_second": round(self.rows_per_second, 1),
            "views": [
                {**asdict(v), "seconds": round(v.seconds, 3), "rows_per_second": round(v.rows_per_second, 1)}
                for v in self.views
            ],
        }


@dataclass(frozen=True)
class BulkState:
    """What the online store holds for one view, as recorded after its last complete bulk write."""

    fingerprint: str
    as_of: str
    snapshot: str
    snapshot_id: str  # size, mtime and inode of the snapshot file when it was written (a rerun replaces the file)
    rows: int
    written_at: str
    last_cleanup: str | None = None  # as-of time of the last SQLite cleanup

    @property
    def as_of_dt(self) -> datetime:
        return datetime.fromisoformat(self.as_of)


# --------------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------------


def bulk_materialize(
    store: Any,
    settings: Settings,
    snapshots: Mapping[str, str | Path],
    as_of: datetime,
    *,
    incremental: bool = True,
    batch_rows: int = 50_000,
    verify_rows: int = 16,
    cleanup: bool = True,
    cleanup_every: timedelta = timedelta(hours=23),
    record_interval: bool = True,
    duckdb_memory_limit: str = "1GB",
    sqlite_strategy: str = "auto",
    rebuild_share: float | None = REBUILD_SHARE,
    progress: Callable[[str, int], None] | None = None,
    redis_restore: bool = True,
) -> BulkReport:
    """Write each view's published snapshot (`{view name: snapshot Parquet}`) into `store`'s online store.

    `as_of` is the snapshots' as-of time (their `event_timestamp`); a view whose recorded state is newer raises
    `StaleSnapshotError` before anything is written. Views are written one after another; each is either complete
    (and recorded) or, after an error, left without a recorded state so the next run rewrites it in full.

    `incremental=False` rewrites every row. `batch_rows` bounds memory (rows per Arrow batch; two encoded batches
    queue for the writer). `verify_rows` random rows per batch (plus edge rows) are checked against Feast's own
    conversion; 0 turns the check off. SQLite only: `cleanup` deletes entities absent from the snapshot whose last
    write is older than `as_of - settings.feast.online_key_ttl`, at most once per `cleanup_every` of as-of time (it
    scans the view's table). `record_interval` appends the materialization interval to the Feast registry as
    `materialize` does. `duckdb_memory_limit` caps the diff/sort (DuckDB spills beyond it).

    SQLite only: `sqlite_strategy` is "upsert" (rows upserted in place, one transaction per batch), "rebuild" (the
    view's table rebuilt in one transaction: snapshot rows loaded in key order into a fresh table with Feast's own
    DDL, the rows not overwritten copied over from the old one, then swapped in) or "auto": rebuild when the share of
    snapshot rows to write is at least `rebuild_share` (a full write counts as 1.0; default `REBUILD_SHARE`, None:
    never — see there for the measurements). Redis only:
    `redis_restore` writes keys that do not exist yet as whole hashes with `RESTORE` (after a byte-level check
    against `HSET` on the live server; see `freqcap.adapters.feast.redis_dump`); False writes every row with `HSET`.
    """
    if sqlite_strategy not in ("auto", "upsert", "rebuild"):
        raise ValueError(f"sqlite_strategy must be auto, upsert or rebuild, not {sqlite_strategy!r}")
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    if batch_rows <= 0:
        raise ValueError("batch_rows must be positive")
    as_of = as_of.astimezone(UTC)
    started = time.perf_counter()
    target = _open_target(store, settings)
    if isinstance(target, _RedisTarget):
        target.use_restore = redis_restore
    reports: list[ViewReport] = []
    only = serving_features(settings) if settings.feast.online_features == "serving" else {}
    try:
        for name, path in snapshots.items():
            plan = _plan(store, target, name, only.get(name))
            reports.append(
                _materialize_view(
                    store,
                    settings,
                    target,
                    plan,
                    Path(path).resolve(),
                    as_of,
                    incremental=incremental,
                    batch_rows=batch_rows,
                    verify_rows=verify_rows,
                    cleanup=cleanup,
                    cleanup_every=cleanup_every,
                    duckdb_memory_limit=duckdb_memory_limit,
                    sqlite_strategy=sqlite_strategy,
                    rebuild_share=rebuild_share,
                    progress=progress,
                )
            )
            if record_interval:
                # Same bookkeeping as FeatureStore.materialize (what `feast feature-views describe` and
                # materialize_incremental read); one registry commit for the run.
                store.registry.apply_materialization(
                    plan.view, store.project, as_of - timedelta(seconds=1), as_of + timedelta(seconds=1)
                )
    finally:
        target.close()
    report = BulkReport(target.kind, store.project, as_of.isoformat(), tuple(reports), time.perf_counter() - started)
    log.info(
        "bulk materialized %d rows (%d written, %d unchanged) in %.1fs: %.0f rows/s",
        report.rows_read,
        report.rows_written,
        report.rows_skipped,
        report.seconds,
        report.rows_per_second,
    )
    return report


def online_state(store: Any, settings: Settings, views: list[str]) -> dict[str, BulkState | None]:
    """The recorded bulk state (snapshot and as-of watermark) per view; None where there is none."""
    target = _open_target(store, settings)
    try:
        return {v: target.read_state(v) for v in views}
    finally:
        target.close()


def clear_online_state(store: Any, settings: Settings, views: list[str]) -> None:
    """Forget the recorded states, so the next bulk run rewrites these views in full."""
    target = _open_target(store, settings)
    try:
        for v in views:
            target.clear_state(v)
    finally:
        target.close()


# --------------------------------------------------------------------------------------------------------------
# The view plan: everything about a view that the encoders need, taken from the Feast registry
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    view: Any  # feast.FeatureView
    name: str  # view name in the registry
    store_name: str  # name inside the online store (versioned if Feast's online versioning is on)
    features: list[tuple[str, Any]]  # (name, feast ValueType)
    join_keys: dict[str, Any]  # join key -> ValueType, in Feast's entity_columns order
    ts_field: str
    created_field: str | None
    field_mapping: dict[str, str]
    fingerprint: str = ""

    @property
    def key_columns(self) -> list[str]:
        return list(self.join_keys)

    @property
    def feature_names(self) -> list[str]:
        return [f for f, _ in self.features]


def serving_features(settings: Settings) -> dict[str, set[str]]:
    """Per view, the features `decide` reads (freqcap.adapters.feast.fast_reader): what `online_features: serving` keeps."""
    user_cols, tiers = serving_columns(settings.features)
    out = {USER_TABLE: set(user_cols)}
    out.update({cols.view: set(cols.features) for cols in tiers})
    return out


def _plan(store: Any, target: _Target, name: str, only: set[str] | None = None) -> _Plan:
    import feast
    from feast.value_type import ValueType

    view = store.get_feature_view(name)
    join_keys = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
    for key, vtype in join_keys.items():
        if vtype != ValueType.STRING:
            raise UnsupportedOnlineStoreError(f"{name}: join key {key} is {vtype.name}; the bulk path handles STRING")
    source = view.batch_source
    plan = _Plan(
        view=view,
        name=name,
        store_name=target.store_name(view),
        # `only`: the online store keeps just these features (feast.online_features: serving); others read as None.
        features=[(f.name, f.dtype.to_value_type()) for f in view.features if only is None or f.name in only],
        join_keys=join_keys,
        ts_field=source.timestamp_field,
        created_field=source.created_timestamp_column or None,
        field_mapping=dict(source.field_mapping or {}),
    )
    spec = {
        "layout": LAYOUT_VERSION,
        "feast": feast.__version__,
        "store": target.kind,
        "project": store.project,
        "view": plan.store_name,
        "features": [(f, t.name) for f, t in plan.features],
        "join_keys": sorted(plan.join_keys),
        "entity_key_serialization_version": store.config.entity_key_serialization_version,
    }
    plan.fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
    return plan


# --------------------------------------------------------------------------------------------------------------
# Column encoders: Arrow column -> serialized ValueProto per row, derived from and checked against Feast
# --------------------------------------------------------------------------------------------------------------


def _field_tag(proto_field: str, wire_type: int) -> bytes:
    from feast.protos.feast.types.Value_pb2 import Value

    number = Value.DESCRIPTOR.fields_by_name[proto_field].number
    return _varint_bytes((number << 3) | wire_type)


def _varint_bytes(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_rows(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of uint64 values: an (n, width) byte matrix and each row's byte count."""
    u = u.astype(np.uint64, copy=False)
    n = len(u)
    counts = np.ones(n, np.int64)
    top = int(u.max()) if n else 0
    width = 1
    while width < 10 and top >= (1 << (7 * width)):
        counts += u >= np.uint64(1 << (7 * width))
        width += 1
    mat = np.empty((n, width), np.uint8)
    for k in range(width):
        byte = (u >> np.uint64(7 * k)).astype(np.uint8) & np.uint8(0x7F)
        if k < width - 1:
            byte |= (counts > k + 1).astype(np.uint8) << np.uint8(7)
        mat[:, k] = byte
    return mat, counts


def _binary_from_rows(mat: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """Row i of `mat` truncated to lengths[i] bytes, as an Arrow binary array."""
    n, width = mat.shape
    if n and bool((lengths == width).all()):
        data = np.ascontiguousarray(mat).reshape(-1)
    else:
        data = mat[np.arange(width)[None, :] < lengths[:, None]]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise BulkMaterializeError("batch too large for 32-bit offsets: lower batch_rows")
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data.tobytes())]
    )


def _u32le(lengths: np.ndarray) -> pa.Array:
    """Each length as 4 little-endian bytes (struct '<I'), as a binary array."""
    n = len(lengths)
    offsets = np.arange(0, 4 * n + 1, 4, dtype=np.int32)
    data = np.ascontiguousarray(lengths, dtype="<u4").tobytes()
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _join(*parts: Any) -> pa.Array:
    """Row-wise concatenation of binary arrays and byte-string constants."""
    args = [pa.scalar(p, pa.binary()) if isinstance(p, bytes) else p for p in parts]
    out = pc.binary_join_element_wise(*args, pa.scalar(b"", pa.binary()))
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _ascii_lengths(arr: pa.Array) -> pa.Array:
    return pc.cast(pc.cast(pc.binary_length(arr), pa.string()), pa.binary())


def _feast_values(arr: pa.Array, vtype: Any) -> list[Any]:
    """Feast's own conversion of a column, exactly as `_columns_to_proto_values` does it during materialize."""
    from feast.type_map import python_values_to_proto_values

    return python_values_to_proto_values(arr.to_numpy(zero_copy_only=False), vtype)


def _feast_bytes(arr: pa.Array, vtype: Any) -> list[bytes]:
    return [v.SerializeToString() for v in _feast_values(arr, vtype)]


@dataclass
class _Column:
    """One feature column of a batch, encoded. Either per distinct value (`uniques`, `indices`) or per row."""

    kind: str  # "dict", "int", "double", "float", "ts", "generic"
    n: int
    uniques: list[bytes] | None = None
    indices: np.ndarray | None = None
    values: pa.Array | None = None  # serialized ValueProto per row (binary)
    source: pa.Array | None = None  # the input column (for texts)
    _texts: np.ndarray | None = None

    def value_at(self, i: int) -> bytes:
        if self.uniques is not None:
            return self.uniques[int(self.indices[i])]
        return self.values[i].as_py()

    def resp_piece(self, prefix: bytes) -> pa.Array:
        """`prefix` + RESP bulk string of the value, per row."""
        if self.uniques is not None:
            wrapped = pa.array([prefix + b"$%d\r\n" % len(u) + u + _CRLF for u in self.uniques], pa.binary())
            return wrapped.take(pa.array(self.indices))
        if self.kind in ("double", "float") and self.values.null_count == 0:
            width = 9 if self.kind == "double" else 5
            lens = pc.binary_length(self.values)
            if pc.all(pc.equal(lens, width)).as_py():
                return _join(prefix + b"$%d\r\n" % width, self.values, _CRLF)
        return _join(prefix + b"$", _ascii_lengths(self.values), _CRLF, self.values, _CRLF)

    def lp_entries(self) -> tuple[pa.Array, np.ndarray]:
        """Redis listpack string entry of the value per row, and a mask of rows that cannot be one."""
        if self.uniques is not None:
            encoded, bad = [], []
            for u in self.uniques:
                try:
                    encoded.append(redis_dump.entry(u))
                    bad.append(False)
                except ValueError:
                    encoded.append(b"")
                    bad.append(True)
            idx = pa.array(self.indices)
            return pa.array(encoded, pa.binary()).take(idx), np.asarray(bad, dtype=bool)[self.indices]
        return redis_dump.entries(self.values)

    def take(self, idx: np.ndarray) -> _Column:
        """The rows `idx` of this column."""
        src = None if self.source is None else self.source.take(pa.array(idx))
        if self.uniques is not None:
            return _Column(self.kind, len(idx), uniques=self.uniques, indices=self.indices[idx], source=src)
        return _Column(self.kind, len(idx), values=self.values.take(pa.array(idx)), source=src)

    def objects(self) -> np.ndarray:
        """Python bytes per row (for SQLite parameters)."""
        if self.uniques is not None:
            return _object_array(self.uniques)[self.indices]
        return self.values.to_numpy(zero_copy_only=False)

    def texts(self) -> np.ndarray:
        """SQLite `value_text` per row, as Feast's `extract_text_and_num` derives it from the ValueProto."""
        if self._texts is None:
            self._texts = self._compute_texts()
        return self._texts

    def _compute_texts(self) -> np.ndarray:
        from feast.infra.online_stores.helpers import extract_text_and_num
        from feast.protos.feast.types.Value_pb2 import Value

        if self.uniques is not None:
            texts = [extract_text_and_num(Value.FromString(u), False)[0] for u in self.uniques]
            return _object_array(texts)[self.indices]
        out = np.full(self.n, None, dtype=object)
        if self.kind == "int":
            valid = ~_is_null(self.source)
            out[valid] = self.source.filter(pa.array(valid)).cast(pa.string()).to_numpy(zero_copy_only=False)
        elif self.kind in ("double", "float"):
            floats = self.source.to_numpy(zero_copy_only=False).astype(np.float64)
            if self.kind == "float":  # float_val holds a float32: str() of it as a Python float
                floats = floats.astype(np.float32).astype(np.float64)
            valid = ~np.isnan(floats)
            out[valid] = [str(x) for x in floats[valid].tolist()]
        elif self.kind == "generic":
            texts = [extract_text_and_num(Value.FromString(b), False)[0] for b in self.values.to_pylist()]
            out[:] = texts
        # "ts": unix_timestamp_val has no text in Feast (None)
        return out


def _object_array(items: list[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _is_null(arr: pa.Array) -> np.ndarray:
    return pc.is_null(arr, nan_is_null=pa.types.is_floating(arr.type)).to_numpy(zero_copy_only=False)


class _Encoders:
    """Per-type column encoders for one run; tags and null encodings derived from Feast once."""

    def __init__(self) -> None:
        from feast.value_type import ValueType

        self.VT = ValueType
        self.varint_fields = {
            ValueType.INT64: "int64_val",
            ValueType.INT32: "int32_val",
            ValueType.UNIX_TIMESTAMP: "unix_timestamp_val",
        }
        self.tags = {vt: _field_tag(f, 0) for vt, f in self.varint_fields.items()}
        self.tags[ValueType.DOUBLE] = _field_tag("double_val", 1)
        self.tags[ValueType.FLOAT] = _field_tag("float_val", 5)

    def encode(self, arr: pa.Array, vtype: Any) -> _Column:
        n = len(arr)
        VT = self.VT
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if n == 0:
            return _Column("generic", 0, values=pa.array([], pa.binary()), source=arr)
        nulls = arr.null_count
        if vtype in (VT.DOUBLE, VT.FLOAT) and pa.types.is_floating(arr.type):
            return self._fixed(arr, vtype)
        if vtype == VT.UNIX_TIMESTAMP and pa.types.is_timestamp(arr.type):
            return self._timestamps(arr)
        if vtype in (VT.INT64, VT.INT32) and pa.types.is_integer(arr.type) and nulls == 0:
            col = self._dictionary(arr, vtype, max_uniques=max(256, int(n * _DICT_MAX_SHARE)))
            return col if col is not None else self._ints(arr, vtype)
        try:
            col = self._dictionary(arr, vtype, max_uniques=n)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, TypeError):
            col = None
        if col is not None:
            return col
        return _Column("generic", n, values=pa.array(_feast_bytes(arr, vtype), pa.binary()), source=arr)

    def _dictionary(self, arr: pa.Array, vtype: Any, max_uniques: int) -> _Column | None:
        """Distinct values serialized by Feast itself; rows point at them. None if there are too many."""
        encoded = pc.dictionary_encode(arr, null_encoding="encode")
        if len(encoded.dictionary) > max_uniques:
            return None
        uniques = _feast_bytes(encoded.dictionary, vtype)
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        return _Column("dict", len(arr), uniques=uniques, indices=indices, source=arr)

    def _null_bytes(self, arr: pa.Array, vtype: Any) -> bytes:
        """Feast's encoding of a null in a column that also holds values (or of an all-null column)."""
        valid = pc.drop_null(arr)
        if len(valid):
            probe = pa.concat_arrays([valid.slice(0, 1), pa.nulls(1, arr.type)])
            return _feast_bytes(probe, vtype)[1]
        return _feast_bytes(pa.nulls(1, arr.type), vtype)[0]

    def _fixed(self, arr: pa.Array, vtype: Any) -> _Column:
        double = vtype == self.VT.DOUBLE
        dtype, width = ("<f8", 8) if double else ("<f4", 4)
        n = len(arr)
        floats = pc.fill_null(arr, 0.0).to_numpy(zero_copy_only=False).astype(dtype)
        tag = self.tags[vtype]
        mat = np.empty((n, len(tag) + width), np.uint8)
        mat[:, : len(tag)] = np.frombuffer(tag, np.uint8)
        mat[:, len(tag) :] = floats.view(np.uint8).reshape(n, width)
        values = _binary_from_rows(mat, np.full(n, len(tag) + width))
        missing = _is_null(arr)
        if missing.any():  # Feast: null and NaN both become an empty ValueProto (pd.isnull)
            values = pc.if_else(pa.array(missing), pa.scalar(self._null_bytes(arr, vtype), pa.binary()), values)
        return _Column("double" if double else "float", n, values=values, source=arr)

    def _ints(self, arr: pa.Array, vtype: Any) -> _Column:
        return _Column("int", len(arr), values=self._varints(arr.to_numpy().astype(np.int64), vtype), source=arr)

    def _varints(self, ints: np.ndarray, vtype: Any) -> pa.Array:
        tag = self.tags[vtype]
        mat, counts = _varint_rows(ints.view(np.uint64))
        full = np.empty((len(ints), len(tag) + mat.shape[1]), np.uint8)
        full[:, : len(tag)] = np.frombuffer(tag, np.uint8)
        full[:, len(tag) :] = mat
        return _binary_from_rows(full, counts + len(tag))

    def _timestamps(self, arr: pa.Array) -> _Column:
        """unix_timestamp_val = whole seconds (numpy datetime64[s] truncation, as Feast converts)."""
        vtype = self.VT.UNIX_TIMESTAMP
        n = len(arr)
        if arr.null_count == n:
            return _Column("ts", n, uniques=[self._null_bytes(arr, vtype)], indices=np.zeros(n, np.int64), source=arr)
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[arr.type.unit]
        raw = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        values = self._varints(np.floor_divide(raw, per_second), vtype)
        if arr.null_count:
            missing = _is_null(arr)
            values = pc.if_else(pa.array(missing), pa.scalar(self._null_bytes(arr, vtype), pa.binary()), values)
        return _Column("ts", n, values=values, source=arr)


def _entity_keys(batch: pa.RecordBatch, plan: _Plan) -> pa.Array:
    """Feast's `serialize_entity_key` (v3, string join keys, sorted by name) for every row."""
    import struct

    from feast.protos.feast.types.Value_pb2 import ValueType as ProtoValueType

    names = sorted(plan.join_keys)
    string_type = struct.pack("<I", ProtoValueType.STRING)
    prefix = [struct.pack("<I", len(names))]
    for name in names:
        encoded = name.encode("utf8")
        prefix += [string_type, struct.pack("<I", len(encoded)), encoded]
    parts: list[Any] = [b"".join(prefix)]
    for name in names:
        col = batch.column(name)
        if col.null_count:
            raise BulkMaterializeError(f"{plan.name}: null values in join key {name}")
        data = col.cast(pa.binary())
        parts += [string_type, _u32le(pc.binary_length(data).to_numpy(zero_copy_only=False)), data]
    return _join(*parts)


@dataclass
class _Batch:
    """A batch of snapshot rows, encoded once and written by either store."""

    table: pa.RecordBatch
    keys: pa.Array  # serialized entity keys
    columns: list[_Column]
    ts_uniques: list[datetime]  # event timestamps as Feast's materialize sees them (naive UTC datetimes)
    ts_indices: np.ndarray
    created: list[datetime | None] | None  # per row, or None when the view has no created column

    @property
    def n(self) -> int:
        return self.table.num_rows

    def take(self, idx: np.ndarray) -> _Batch:
        """The rows `idx` of this batch, still encoded."""
        rows = pa.array(idx)
        return _Batch(
            table=self.table.take(rows),
            keys=self.keys.take(rows),
            columns=[c.take(idx) for c in self.columns],
            ts_uniques=self.ts_uniques,
            ts_indices=self.ts_indices[idx],
            created=None if self.created is None else [self.created[i] for i in idx.tolist()],
        )


def _feast_datetimes(arr: pa.Array) -> list[Any]:
    """Datetimes exactly as `_convert_arrow_fv_to_proto` derives event timestamps from an Arrow column."""
    import pandas as pd
    from feast.utils import _coerce_datetime

    return [_coerce_datetime(v) for v in pd.to_datetime(arr.to_numpy(zero_copy_only=False))]


def _encode_batch(batch: pa.RecordBatch, plan: _Plan, enc: _Encoders) -> _Batch:
    columns = [enc.encode(batch.column(f), vt) for f, vt in plan.features]
    ts = pc.dictionary_encode(batch.column(plan.ts_field))
    if ts.indices.null_count:
        raise BulkMaterializeError(f"{plan.name}: null {plan.ts_field}")
    created = None
    if plan.created_field:
        created = _feast_datetimes(batch.column(plan.created_field))
    return _Batch(
        table=batch,
        keys=_entity_keys(batch, plan),
        columns=columns,
        ts_uniques=_feast_datetimes(ts.dictionary),
        ts_indices=ts.indices.to_numpy(zero_copy_only=False),
        created=created,
    )


def _sample_indices(batch: pa.RecordBatch, plan: _Plan, k: int, rng: np.random.Generator) -> np.ndarray:
    """First, last and random rows, plus a null and a non-null row of every feature column that has nulls."""
    n = batch.num_rows
    picks = {0, n - 1, *rng.integers(0, n, min(k, n)).tolist()}
    for f in plan.feature_names:
        missing = _is_null(batch.column(f))
        if missing.any():
            picks.add(int(np.argmax(missing)))
            if not missing.all():
                picks.add(int(np.argmax(~missing)))
    return np.array(sorted(picks), dtype=np.int64)


def _verify(batch: _Batch, plan: _Plan, target: _Target, k: int, rng: np.random.Generator) -> None:
    """Compare a sample of the batch with Feast's own conversion and key/field functions; raise on a mismatch."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.utils import _convert_arrow_to_proto

    idx = _sample_indices(batch.table, plan, k, rng)
    sample = batch.table.take(pa.array(idx))
    view = plan.view
    if len(plan.features) != len(view.features):  # online_features: serving — Feast's conversion of the kept ones
        import copy

        view = copy.copy(view)
        kept = set(plan.feature_names)
        view.features = [f for f in plan.view.features if f.name in kept]
    expected = _convert_arrow_to_proto(sample, view, plan.join_keys)
    version = target.config.entity_key_serialization_version
    for row, (entity_key, values, event_ts, created_ts) in zip(idx.tolist(), expected, strict=True):
        where = f"{plan.name} row {row}"
        key = batch.keys[row].as_py()
        if key != serialize_entity_key(entity_key, entity_key_serialization_version=version):
            raise LayoutMismatchError(f"{where}: entity key bytes differ from serialize_entity_key")
        for (name, _), col in zip(plan.features, batch.columns, strict=True):
            if col.value_at(row) != values[name].SerializeToString():
                raise LayoutMismatchError(
                    f"{where}: {name} encodes as {col.value_at(row)!r}, Feast: {values[name].SerializeToString()!r}"
                )
        target.verify_row(batch, plan, row, entity_key, values, event_ts, created_ts, where)


# --------------------------------------------------------------------------------------------------------------
# Online store targets
# --------------------------------------------------------------------------------------------------------------


class _Worker:
    """Runs `sink(item)` on one background thread, at most `depth` items queued, so encoding overlaps writing."""

    def __init__(self, sink: Callable[[Any], None], depth: int = 2):
        self._sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="freqcap-bulk-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._sink(item)
                except BaseException as exc:  # handed to the producer on its next put() / close()
                    self._error = exc

    def put(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _Target:
    kind = ""
    config: Any
    rows_restored = 0  # rows written as whole new hashes (Redis RESTORE)

    def store_name(self, view: Any) -> str:
        raise NotImplementedError

    def read_state(self, view: str) -> BulkState | None:
        raise NotImplementedError

    def write_state(self, view: str, state: BulkState) -> None:
        raise NotImplementedError

    def clear_state(self, view: str) -> None:
        raise NotImplementedError

    def begin(self, plan: _Plan, as_of: datetime) -> None:
        raise NotImplementedError

    def write(self, batch: _Batch) -> None:
        raise NotImplementedError

    def touch(self, batch: pa.RecordBatch, plan: _Plan) -> np.ndarray:
        """Handle unchanged rows; returns the indices of rows that must be rewritten after all."""
        return np.zeros(0, np.int64)

    def finish(self) -> None:
        raise NotImplementedError

    def set_strategy(self, strategy: str) -> None:
        if strategy != "upsert":
            raise UnsupportedOnlineStoreError(f"{self.kind}: no {strategy} strategy")

    def abort(self) -> None:
        """After an error: stop writing; what can be undone is undone (batches already committed stay)."""
        self.finish()

    def verify_row(self, batch, plan, row, entity_key, values, event_ts, created_ts, where) -> None:
        raise NotImplementedError

    def cleanup(self, plan: _Plan, snapshot: Path, as_of: datetime, con: duckdb.DuckDBPyConnection) -> int:
        return 0

    def close(self) -> None:
        pass


def _open_target(store: Any, settings: Settings) -> _Target:
    online = store.config.online_store
    kind = getattr(online, "type", "")
    if kind == "redis" or type(online).__name__ == "RedisOnlineStoreConfig":
        return _RedisTarget(store)
    if kind == "sqlite" or str(kind).endswith("SqliteOnlineStore"):
        return _SqliteTarget(store, settings)
    raise UnsupportedOnlineStoreError(f"online store {kind!r} has no bulk path; use store.materialize")


class _RedisTarget(_Target):
    kind = "redis"

    def __init__(self, store: Any):
        from feast.infra.online_stores.redis import RedisOnlineStore, RedisType

        self.store = store
        self.config = store.config
        online = self.config.online_store
        if online.redis_type == RedisType.redis_cluster:
            raise UnsupportedOnlineStoreError("Redis Cluster: keys span slots; use store.materialize")
        provider_store = store._get_provider().online_store
        if not isinstance(provider_store, RedisOnlineStore):
            raise UnsupportedOnlineStoreError(f"unexpected online store {type(provider_store).__name__}")
        self.client = provider_store._get_client(online)
        self.ttl = online.key_ttl_seconds
        self.project = self.config.project.encode("utf8")
        self._writer_conn = None
        self._probe_conn = None
        self._worker: _Worker | None = None
        self.plan: _Plan | None = None
        self.use_restore = True  # tests and benchmarks turn it off to measure the HSET path alone
        self.restore_reason = ""
        self.rows_restored = 0

    # -- layout ------------------------------------------------------------------------------------------------
    def store_name(self, view: Any) -> str:
        from feast.infra.online_stores.redis import _versioned_fv_name

        return _versioned_fv_name(view, self.config)

    def _fields(self, plan: _Plan) -> tuple[bytes, list[bytes]]:
        from feast.infra.online_stores.helpers import _mmh3

        ts_field = f"_ts:{plan.store_name}".encode()
        return ts_field, [_mmh3(f"{plan.store_name}:{name}") for name in plan.feature_names]

    @staticmethod
    def _bulk(value: bytes) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(value), value)

    @staticmethod
    def _ts_bytes(dt: datetime) -> bytes:
        from feast import utils
        from google.protobuf.timestamp_pb2 import Timestamp

        ts = Timestamp()
        ts.FromDatetime(utils.make_tzaware(dt))
        return ts.SerializeToString()

    # -- state -------------------------------------------------------------------------------------------------
    def _state_key(self, view: str) -> bytes:
        return STATE_KEY_PREFIX + self.project + b":" + view.encode("utf8")

    def read_state(self, view: str) -> BulkState | None:
        raw = self.client.get(self._state_key(view))
        return BulkState(**json.loads(raw)) if raw else None

    def write_state(self, view: str, state: BulkState) -> None:
        self.client.set(self._state_key(view), json.dumps(asdict(state)), ex=self.ttl or None)

    def clear_state(self, view: str) -> None:
        self.client.delete(self._state_key(view))

    # -- writing -----------------------------------------------------------------------------------------------
    def _connection(self):
        conn = self.client.connection_pool.make_connection()
        conn.connect()
        return conn

    def begin(self, plan: _Plan, as_of: datetime) -> None:
        self.plan = plan
        ts_field, fields = self._fields(plan)
        self._ts_field_bulk = self._bulk(ts_field)
        self._field_bulks = [self._bulk(f) for f in fields]
        self._header = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(fields) + 1))
        self._expire = b"*3\r\n$6\r\nEXPIRE\r\n"
        self._ttl_bulk = self._bulk(str(self.ttl).encode()) if self.ttl else b""
        self._writer_conn = self._connection()
        self._worker = _Worker(self._send)
        self.rows_restored = 0
        self._restore: tuple[int, bytes] | None = None  # (RDB type, RDB version) once the probe passed
        self._restore_checked = False
        self._busy_share = 0.0
        self._hset_batches = 0
        self._ttl_ms_bulk = self._bulk(str(self.ttl * 1000).encode() if self.ttl else b"0")

    def _key_bulks(self, keys: pa.Array) -> pa.Array:
        redis_keys = _join(keys, self.project)
        return _join(b"$", _ascii_lengths(redis_keys), _CRLF, redis_keys, _CRLF)

    def commands(self, batch: _Batch) -> tuple[pa.Array, int]:
        """RESP for HSET key _ts:<view> ts <field> <value> ... [+ EXPIRE key ttl] per row, and the reply count."""
        key_bulks = self._key_bulks(batch.keys)
        ts_pieces = pa.array(
            [self._ts_field_bulk + self._bulk(self._ts_bytes(t)) for t in batch.ts_uniques], pa.binary()
        ).take(pa.array(batch.ts_indices))
        parts: list[Any] = [self._header, key_bulks, ts_pieces]
        parts += [col.resp_piece(fb) for col, fb in zip(batch.columns, self._field_bulks, strict=True)]
        if self.ttl:
            parts += [self._expire, key_bulks, self._ttl_bulk]
        return _join(*parts), batch.n * (2 if self.ttl else 1)

    # -- RESTORE: a key that does not exist yet is written as a whole hash (freqcap.adapters.feast.redis_dump) ---------
    def _listpack_entries(self, batch: _Batch) -> tuple[list[Any], np.ndarray]:
        """Each row's listpack entries (field, value, ... in `commands`' HSET order), and a mask of rows that
        cannot be a short-string listpack (those are written with HSET)."""
        ts_field, fields = self._fields(self.plan)
        ts_entries = pa.array([redis_dump.entry(self._ts_bytes(t)) for t in batch.ts_uniques], pa.binary()).take(
            pa.array(batch.ts_indices)
        )
        parts: list[Any] = [redis_dump.entry(ts_field), ts_entries]
        bad = np.zeros(batch.n, dtype=bool)
        for col, field in zip(batch.columns, fields, strict=True):
            values, col_bad = col.lp_entries()
            parts += [redis_dump.entry(field), values]
            bad |= col_bad
        return parts, bad

    def restore_payloads(self, batch: _Batch) -> tuple[pa.Array, np.ndarray]:
        """DUMP payload of each row's hash (the same fields, order and bytes as `commands`' HSET), and a mask of
        rows that cannot be a short-string listpack (those are written with HSET)."""
        parts, bad = self._listpack_entries(batch)
        rdb_type, version = self._restore
        return redis_dump.payloads(_join(*parts), len(parts), rdb_type, version), bad

    def restore_commands(self, batch: _Batch) -> tuple[pa.Array, np.ndarray]:
        """RESP `RESTORE key ttl_ms payload` for the rows that can be restored, and those rows' indices."""
        payloads, bad = self.restore_payloads(batch)
        rows = np.flatnonzero(~bad)
        keys = batch.keys
        if bad.any():
            keep = pa.array(~bad)
            payloads, keys = payloads.filter(keep), keys.filter(keep)
        cmds = _join(
            b"*4\r\n$7\r\nRESTORE\r\n",
            self._key_bulks(keys),
            self._ttl_ms_bulk,
            b"$",
            _ascii_lengths(payloads),
            _CRLF,
            payloads,
            _CRLF,
        )
        return cmds, rows

    def _check_restore(self, batch: _Batch) -> str:
        """Whether RESTORE may write this view's new keys; '' if so, else why not.

        One real row of the batch is written twice under two scratch keys: with this module's HSET commands and
        with its RESTORE payload. The server's DUMPs of the two keys must be byte-identical (same listpack, same
        encoding); the payload's RDB type and version are taken from the server's own DUMP.
        """
        import redis

        try:
            config = self.client.config_get("hash-max-listpack-*")
        except redis.RedisError as exc:
            return f"CONFIG GET unavailable ({exc})"
        try:
            max_entries = int(config.get("hash-max-listpack-entries", 0))
            max_value = int(config.get("hash-max-listpack-value", 0))
        except (TypeError, ValueError):
            return f"unreadable listpack limits {config!r}"
        nfields = len(self.plan.features) + 1
        if max_entries < nfields or max_value < redis_dump.MAX_SHORT:
            return f"hash-max-listpack-entries {max_entries} / -value {max_value} below {nfields} / 63"
        ts_field, fields = self._fields(self.plan)
        try:
            for name in (ts_field, *fields):
                redis_dump.entry(name)
        except ValueError:
            return "a hash field name would be stored as an integer"
        _, bad = self._listpack_entries(batch)
        good = np.flatnonzero(~bad)
        if not len(good):
            return "no row of the first batch fits a short-string listpack"
        scratch = STATE_KEY_PREFIX[: -len(b"bulk_state:")] + b"bulk_probe:" + uuid.uuid4().hex.encode()
        row = batch.take(good[:1])
        as_hset = replace(row, keys=pa.array([scratch + b":hset:"], pa.binary()))
        as_restore = replace(row, keys=pa.array([scratch + b":restore:"], pa.binary()))
        hset_key, restore_key = scratch + b":hset:" + self.project, scratch + b":restore:" + self.project
        conn = self._connection()
        try:
            cmds, replies = self.commands(as_hset)
            _send_and_check(conn, _buffer_view(cmds), replies)
            reference = self.client.dump(hset_key)
            rdb_type, version = redis_dump.dump_header(reference or b"")
            if rdb_type != redis_dump.RDB_TYPE_HASH_LISTPACK:
                return f"the server dumps this hash as RDB type {rdb_type}, not a listpack hash"
            self._restore = (rdb_type, version)
            cmds, _ = self.restore_commands(as_restore)
            replies = _send_and_read_lines(conn, _buffer_view(cmds), 1)
            if replies != [b"+OK"]:
                return f"RESTORE of the probe row answered {replies[0].decode(errors='replace')}"
            restored = self.client.dump(restore_key)
            ttl_ms = (self.client.pttl(hset_key), self.client.pttl(restore_key))
        except (redis.RedisError, BulkMaterializeError, ValueError) as exc:
            return f"probe failed: {exc}"
        finally:
            self.client.delete(hset_key, restore_key)
            conn.disconnect()
        if restored != reference:
            return "the DUMP of a RESTOREd row differs from the same row written with HSET"
        if (ttl_ms[0] < 0) != (ttl_ms[1] < 0) or abs(ttl_ms[0] - ttl_ms[1]) > 60_000:
            return f"TTL after RESTORE {ttl_ms[1]} ms differs from after HSET+EXPIRE {ttl_ms[0]} ms"
        return ""

    def write(self, batch: _Batch) -> None:
        if not self._restore_checked:
            self._restore_checked = True
            self.restore_reason = self._check_restore(batch) if self.use_restore else "disabled"
            if self.restore_reason:
                self._restore = None
            log.info(
                "bulk %s: new keys via %s",
                self.plan.name,
                "RESTORE" if not self.restore_reason else f"HSET ({self.restore_reason})",
            )
        # Mostly existing keys (BUSYKEY) -> HSET straight away, trying RESTORE again every 8th batch.
        use_restore = self._restore is not None and (self._busy_share <= 0.5 or self._hset_batches >= 8)
        if not use_restore:
            self._hset_batches += 1
            cmds, replies = self.commands(batch)
            self._worker.put(("hset", cmds, replies))
            return
        self._hset_batches = 0
        cmds, rows = self.restore_commands(batch)
        if len(rows) < batch.n:
            rest = np.setdiff1d(np.arange(batch.n), rows)
            self._worker.put(("hset", *self.commands(batch.take(rest))))
        self._worker.put(("restore", cmds, rows, batch))

    def _send(self, item: tuple) -> None:
        if item[0] == "hset":
            _, cmds, replies = item
            _send_and_check(self._writer_conn, _buffer_view(cmds), replies)
            return
        _, cmds, rows, batch = item
        lines = _send_and_read_lines(self._writer_conn, _buffer_view(cmds), len(rows))
        ok = np.fromiter((line == b"+OK" for line in lines), dtype=bool, count=len(lines))
        busy = np.fromiter((line.startswith(b"-BUSYKEY") for line in lines), dtype=bool, count=len(lines))
        if not (ok | busy).all():
            first = lines[int(np.argmin(ok | busy))]
            raise BulkMaterializeError(f"Redis rejected a bulk RESTORE: {first.decode(errors='replace')}")
        self.rows_restored += int(ok.sum())
        self._busy_share = float(busy.mean()) if len(busy) else 0.0
        if busy.any():  # the key exists (other views' fields, an older write): merge into it with HSET
            cmds, replies = self.commands(batch.take(rows[busy]))
            _send_and_check(self._writer_conn, _buffer_view(cmds), replies)

    def touch(self, batch: pa.RecordBatch, plan: _Plan) -> np.ndarray:
        """Refresh the TTL of unchanged keys (EXISTS without a TTL); rows whose key is gone come back to be written."""
        if self._probe_conn is None:
            self._probe_conn = self._connection()
        key_bulks = self._key_bulks(_entity_keys(batch, plan))
        if self.ttl:
            cmds = _join(self._expire, key_bulks, self._ttl_bulk)
        else:
            cmds = _join(b"*2\r\n$6\r\nEXISTS\r\n", key_bulks)
        lines = _send_and_read(self._probe_conn, _buffer_view(cmds), batch.num_rows)
        return np.flatnonzero(np.array([line == b":0" for line in lines]))

    def finish(self) -> None:
        worker, self._worker = self._worker, None
        try:
            if worker is not None:
                worker.close()
        finally:
            for conn in (self._writer_conn, self._probe_conn):
                if conn is not None:
                    conn.disconnect()
            self._writer_conn = self._probe_conn = None

    def verify_row(self, batch, plan, row, entity_key, values, event_ts, created_ts, where) -> None:
        from feast.infra.online_stores.helpers import _mmh3, _redis_key

        ts_field, fields = self._fields(plan)
        expected_key = _redis_key(
            self.config.project,
            entity_key,
            entity_key_serialization_version=self.config.entity_key_serialization_version,
        )
        if batch.keys[row].as_py() + self.project != expected_key:
            raise LayoutMismatchError(f"{where}: Redis key differs from _redis_key")
        names = set(plan.feature_names)
        feast_fields = [_mmh3(f"{plan.store_name}:{n}") for n in values if n in names]
        if ts_field != f"_ts:{plan.store_name}".encode() or fields != feast_fields:
            raise LayoutMismatchError(f"{where}: hash fields differ from Feast's")
        if self._ts_bytes(batch.ts_uniques[batch.ts_indices[row]]) != self._ts_bytes(event_ts):
            raise LayoutMismatchError(f"{where}: _ts value differs from Feast's")

    def close(self) -> None:
        self.finish()


def _buffer_view(arr: pa.Array) -> memoryview:
    """The contiguous bytes of a binary array's values (all rows back to back)."""
    offsets = np.frombuffer(arr.buffers()[1], np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    return memoryview(arr.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def _send_and_check(conn: Any, data: memoryview, replies: int) -> None:
    """Send pipelined commands whose replies are all single-line (integers or errors); raise on any error reply."""
    sock = conn._sock
    sock.sendall(data)
    seen = 0
    at_line_start = True
    first_error: bytes | None = None
    while seen < replies:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise BulkMaterializeError("Redis closed the connection during a bulk write")
        seen += chunk.count(b"\n")
        if first_error is None:
            start = 0 if at_line_start and chunk[:1] == b"-" else chunk.find(b"\n-") + 1
            if start or (chunk[:1] == b"-" and at_line_start):
                end = chunk.find(b"\r", start)
                first_error = chunk[start : end if end >= 0 else None]
        at_line_start = chunk.endswith(b"\n")
    if seen != replies:
        raise BulkMaterializeError(f"expected {replies} Redis replies, got {seen}")
    if first_error is not None:
        raise BulkMaterializeError(f"Redis rejected a bulk write: {first_error.decode(errors='replace')}")


def _send_and_read(conn: Any, data: memoryview, replies: int) -> list[bytes]:
    """Send pipelined commands and return their single-line replies, raising on an error reply."""
    lines = _send_and_read_lines(conn, data, replies)
    errors = [line for line in lines if line.startswith(b"-")]
    if errors:
        raise BulkMaterializeError(f"Redis rejected a bulk probe: {errors[:1]!r} ({len(errors)} of {replies} replies)")
    return lines


def _send_and_read_lines(conn: Any, data: memoryview, replies: int) -> list[bytes]:
    """Send pipelined commands whose replies are single lines; return the lines (errors included)."""
    sock = conn._sock
    sock.sendall(data)
    chunks: list[bytes] = []
    seen = 0
    while seen < replies:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise BulkMaterializeError("Redis closed the connection during a bulk write")
        chunks.append(chunk)
        seen += chunk.count(b"\n")
    if seen != replies:
        raise BulkMaterializeError(f"expected {replies} Redis replies, got {seen}")
    return b"".join(chunks).split(b"\r\n")[:replies]


class _Checkpointer:
    """WAL checkpoints on a thread and connection of their own, so the writer never waits for the disk.

    Upsert runs commit once per batch; SQLite's automatic checkpoint would run inside each COMMIT on the writer's
    thread (copy the batch's pages into the database and fsync it: ~11 of 43 s of a 1 M-row write here). Here the
    writer only signals after a commit and the copy/fsync overlaps its next batch. The WAL cannot restart while
    frames are left to copy, so once it holds more than `max_wal_frames` the writer waits for one complete
    checkpoint before its next transaction (the WAL then starts over: bounded by about that size plus a batch).
    """

    def __init__(self, path: str, max_wal_frames: int = 262144):
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.max_wal_frames = max_wal_frames
        self.wal_frames = 0
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="freqcap-bulk-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stop:
                return
            try:
                _, frames, _ = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.wal_frames = max(frames, 0)
            except sqlite3.Error as exc:  # not fatal: the writer's final checkpoint retries
                log.warning("bulk checkpoint failed: %s", exc)
            finally:
                if not self._wanted.is_set():
                    self._idle.set()

    def kick(self) -> None:
        self._idle.clear()
        self._wanted.set()

    def bound_wal(self, writer: sqlite3.Connection) -> None:
        """Before a write transaction: if the WAL is too long, let it be checkpointed completely (it restarts)."""
        if self.wal_frames > self.max_wal_frames:
            self._idle.wait()
            writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self.wal_frames = 0

    def close(self) -> None:
        self._idle.wait()
        self._stop = True
        self._wanted.set()
        self._thread.join()
        self.conn.close()


class _SqliteTarget(_Target):
    kind = "sqlite"

    def __init__(self, store: Any, settings: Settings):
        import feast.infra.online_stores.sqlite  # noqa: F401  (registers Feast's sqlite3 datetime adapters)
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        self.store = store
        self.config = store.config
        online = self.config.online_store
        if getattr(online, "vector_enabled", False) or getattr(online, "enable_openai_compatible_store", False):
            raise UnsupportedOnlineStoreError("SQLite with vector/value_num columns: use store.materialize")
        self.path = SqliteOnlineStore._get_db_path(self.config)
        self.ttl = parse_duration(settings.feast.online_key_ttl) if settings.feast.online_key_ttl else None
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        # WAL: readers (serving) are never blocked by the bulk writer's long transactions; persistent per database.
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA cache_size=-65536")  # 64 MB page cache
        # Python's bundled SQLite is often built with SECURE_DELETE: every freed page is overwritten with zeros and
        # written again (a rebuild's DROP of the old table took 5.7 s instead of 0.3 s per 200 k entity rows). FAST
        # still zeroes deleted content on pages that are written anyway; freed pages keep stale bytes until reused.
        self.conn.execute("PRAGMA secure_delete=FAST")
        # After a rebuild the WAL holds the whole new table; shrink it back once checkpointed.
        self.conn.execute("PRAGMA journal_size_limit=67108864")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (project TEXT, view TEXT, state TEXT, PRIMARY KEY(project, view))"
        )
        self._worker: _Worker | None = None
        self.strategy = "upsert"
        self._rebuilding = False
        self._checkpointer: _Checkpointer | None = None

    # -- layout ------------------------------------------------------------------------------------------------
    def store_name(self, view: Any) -> str:
        from feast.infra.online_stores.sqlite import _table_id

        return _table_id(self.config.project, view, self.config.registry.enable_online_feature_view_versioning)

    # -- state -------------------------------------------------------------------------------------------------
    def read_state(self, view: str) -> BulkState | None:
        row = self.conn.execute(
            f"SELECT state FROM {STATE_TABLE} WHERE project = ? AND view = ?", (self.config.project, view)
        ).fetchone()
        return BulkState(**json.loads(row[0])) if row else None

    def write_state(self, view: str, state: BulkState) -> None:
        self.conn.execute(
            f"INSERT OR REPLACE INTO {STATE_TABLE} VALUES (?, ?, ?)",
            (self.config.project, view, json.dumps(asdict(state))),
        )

    def clear_state(self, view: str) -> None:
        self.conn.execute(f"DELETE FROM {STATE_TABLE} WHERE project = ? AND view = ?", (self.config.project, view))

    # -- writing -----------------------------------------------------------------------------------------------
    def set_strategy(self, strategy: str) -> None:
        if strategy not in ("upsert", "rebuild"):
            raise ValueError(strategy)
        self.strategy = strategy

    def begin(self, plan: _Plan, as_of: datetime) -> None:
        from feast.infra.online_stores.sqlite import _quote_id

        self.plan = plan
        table = _quote_id(plan.store_name)
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (plan.store_name,)
        ).fetchone()
        if not exists:
            raise BulkMaterializeError(f"SQLite table {plan.store_name} missing: apply the Feast repo first")
        nfeat = len(plan.features)
        self.per_entity = 1 + 2 * nfeat + 2  # key, (value, text) per feature, event_ts, created_ts
        self.entities_per_statement = max(1, min(64, 32000 // self.per_entity))
        self._sql_cache: dict[int, str] = {}
        self.table = table
        names = [n.replace("'", "''") for n in plan.feature_names]
        self._names = names
        if self.strategy == "rebuild":
            self._begin_rebuild(plan)
            self._worker = _Worker(self._execute_rebuild)
        else:
            self._checkpointer = _Checkpointer(self.path)
            self._autocheckpoint = self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            self.conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it, overlapped
            self._worker = _Worker(self._execute)

    def _sql(self, k: int) -> str:
        """An upsert of k entities (k * features rows) in one statement, same effect as Feast's per-row upsert."""
        sql = self._sql_cache.get(k)
        if sql is None:
            rows = []
            per = self.per_entity
            # Rows of one entity in feature-name order: with entities in key order, every row appends to the
            # PRIMARY KEY(entity_key, feature_name) index of a rebuilt table.
            order = sorted(range(len(self._names)), key=lambda j: self.plan.feature_names[j])
            for e in range(k):
                base = e * per
                ts, created = base + per - 1, base + per
                for j in order:
                    name = self._names[j]
                    rows.append(f"(?{base + 1}, '{name}', ?{base + 2 + 2 * j}, ?{base + 3 + 2 * j}, ?{ts}, ?{created})")
            cols = "(entity_key, feature_name, value, value_text, event_ts, created_ts)"
            if self.strategy == "rebuild":
                # A fresh table: a plain insert (OR REPLACE: a key twice in the snapshot ends as the upsert ends).
                sql = f"INSERT OR REPLACE INTO {self.table} {cols} VALUES {', '.join(rows)}"
            else:
                sql = (
                    f"INSERT INTO {self.table} {cols} "
                    f"SELECT column1, column2, column3, column4, column5, column6 FROM (VALUES {', '.join(rows)}) "
                    "WHERE true ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
                    "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts"
                )
            self._sql_cache[k] = sql
        return sql

    @staticmethod
    def _event_ts(dt: datetime) -> Any:
        """What Feast binds for event_ts: the naive-UTC datetime through the sqlite3 adapter Feast registers."""
        from feast.utils import to_naive_utc

        return sqlite3.adapt(to_naive_utc(dt), sqlite3.PrepareProtocol)

    def write(self, batch: _Batch) -> None:
        n, per = batch.n, self.per_entity
        params = np.empty((n, per), dtype=object)
        params[:, 0] = batch.keys.to_numpy(zero_copy_only=False)
        for j, col in enumerate(batch.columns):
            params[:, 1 + 2 * j] = col.objects()
            params[:, 2 + 2 * j] = col.texts()
        params[:, per - 2] = _object_array([self._event_ts(t) for t in batch.ts_uniques])[batch.ts_indices]
        if batch.created is None:
            params[:, per - 1] = None
        else:
            params[:, per - 1] = [None if c is None else self._event_ts(c) for c in batch.created]
        k = self.entities_per_statement
        whole = (n // k) * k
        groups = []
        if whole:
            groups.append((k, params[:whole].reshape(whole // k, k * per).tolist()))
        if n > whole:
            groups.append((n - whole, [params[whole:].reshape(-1).tolist()]))
        if self.strategy == "rebuild":
            self._worker.put((groups, params[n - 1, 0]))  # rows are in key order: the batch's last key
        else:
            self._worker.put(groups)

    def _execute(self, groups: list[tuple[int, list[list[Any]]]]) -> None:
        self._checkpointer.bound_wal(self.conn)
        self.conn.execute("BEGIN")
        try:
            for k, rows in groups:
                self.conn.executemany(self._sql(k), rows)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self._checkpointer.kick()

    # -- rebuild: the whole table in one transaction ------------------------------------------------------------
    #
    # BEGIN IMMEDIATE; the live table is renamed aside (SQLite rewrites its DDL; its PRIMARY KEY index follows it);
    # its explicit indexes are dropped; Feast's own CREATE TABLE / CREATE INDEX statements, as stored in
    # sqlite_master, are executed verbatim (so the schema is Feast's, whatever Feast version created it); indexes
    # led by entity_key are created before the load (rows arrive in key order: they grow by appends; measured
    # 1.0 s per 200 k entity rows during the load vs 2.3 s for CREATE INDEX after it), others after it. The
    # snapshot's rows to write are inserted in (entity_key, feature_name) order; after each batch, the old table's
    # rows in that batch's key range that were not overwritten — entities the load did not write (unchanged rows of
    # an incremental run, with their stored event_ts; keys absent from the snapshot) and features outside the
    # plan — are copied (INSERT OR IGNORE: a snapshot row always wins); the old table is dropped; COMMIT; one
    # checkpoint. Readers (WAL) see the old table until the commit and the new one after it; an error anywhere
    # rolls everything back. The write lock is held for the whole rebuild: another writer of the same database
    # (e.g. a Feast push into another view) waits, and fails after its busy timeout (Feast: 5 s).

    def _begin_rebuild(self, plan: _Plan) -> None:
        from feast.infra.online_stores.sqlite import _quote_id

        name = plan.store_name
        self._old = _quote_id(f"{name}__freqcap_old")
        # No automatic checkpoint at COMMIT (it would run inside the commit); one explicit checkpoint after it.
        self._autocheckpoint = self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.conn.execute("BEGIN IMMEDIATE")
        self._rebuilding = True
        try:
            ddl = self.conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()[0]
            indexes = self.conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL "
                "ORDER BY name",
                (name,),
            ).fetchall()
            early, self._late_indexes = [], []
            for index, sql in indexes:
                info = self.conn.execute(f"PRAGMA index_info({_quote_id(index)})").fetchall()
                (early if info and info[0][2] == "entity_key" else self._late_indexes).append(sql)
            # Every column of the table as it is (Feast may add some), for the copy of kept rows.
            columns = [r[1] for r in self.conn.execute(f"PRAGMA table_info({self.table})").fetchall()]
            self._cols = ", ".join(_quote_id(c) for c in columns)
            self._copied_upto: bytes | None = None
            self._rows_copied = 0
            self.conn.execute(f"ALTER TABLE {self.table} RENAME TO {self._old}")
            for index, _ in indexes:
                self.conn.execute(f"DROP INDEX {_quote_id(index)}")
            self.conn.execute(ddl)
            for sql in early:
                self.conn.execute(sql)
        except BaseException:
            self._rollback()
            raise

    def _execute_rebuild(self, item: tuple[list[tuple[int, list[list[Any]]]], bytes]) -> None:
        groups, last = item
        for k, rows in groups:
            self.conn.executemany(self._sql(k), rows)
        self._copy_old(last)

    def _copy_old(self, upto: bytes | None) -> None:
        """Copy the old table's rows with keys in (previous batch's last key, `upto`] that the load did not write.

        Entities the load did not write keep all their rows (an incremental run's unchanged rows with their stored
        event_ts; keys absent from the snapshot); entities it wrote keep their features outside the plan (OR IGNORE:
        a snapshot row always wins). Done right after each batch, so these inserts land on the pages just written
        (in cache) instead of all over the finished table. Correct whatever the order: the ranges cover every key.
        """
        cond, args = [], []
        if self._copied_upto is not None:
            cond.append("entity_key > ?")
            args.append(self._copied_upto)
        if upto is not None:
            cond.append("entity_key <= ?")
            args.append(upto)
        where = f" WHERE {' AND '.join(cond)}" if cond else ""
        cur = self.conn.execute(
            f"INSERT OR IGNORE INTO {self.table} ({self._cols}) SELECT {self._cols} FROM {self._old}{where}", args
        )
        self._rows_copied += max(cur.rowcount, 0)
        self._copied_upto = upto

    def _finish_rebuild(self) -> None:
        """Copy the old rows after the last batch, drop the old table, build late indexes, commit, checkpoint."""
        started = time.perf_counter()
        try:
            self._copy_old(None)
            copy_s = time.perf_counter() - started
            self.conn.execute(f"DROP TABLE {self._old}")
            for sql in self._late_indexes:
                self.conn.execute(sql)
            drop_s = time.perf_counter() - started - copy_s
            self.conn.execute("COMMIT")
            self._rebuilding = False
        except BaseException:
            self._rollback()
            raise
        finally:
            self.conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint}")
        commit_s = time.perf_counter() - started - copy_s - drop_s
        # The WAL now holds the whole new table: copy it into the database now, without waiting for readers.
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        checkpoint_s = time.perf_counter() - started - copy_s - drop_s - commit_s
        log.info(
            "bulk %s: rebuild copied %d old rows not overwritten (tail %.2fs), drop+indexes %.2fs, commit %.2fs, "
            "checkpoint %.2fs",
            self.plan.name,
            self._rows_copied,
            copy_s,
            drop_s,
            commit_s,
            checkpoint_s,
        )

    def _rollback(self) -> None:
        if self._rebuilding:
            self._rebuilding = False
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint}")

    def finish(self) -> None:
        worker, self._worker = self._worker, None
        try:
            if worker is not None:
                try:
                    worker.close()
                except BaseException:
                    self._rollback()
                    raise
            if self._rebuilding:
                self._finish_rebuild()
        finally:
            self._stop_checkpointer()

    def abort(self) -> None:
        worker, self._worker = self._worker, None
        try:
            if worker is not None:
                worker.close()
        finally:
            try:
                self._rollback()
            finally:
                self._stop_checkpointer()

    def _stop_checkpointer(self) -> None:
        """Upsert runs: wait for the checkpointer, checkpoint what is left, back to automatic checkpoints."""
        ckpt, self._checkpointer = self._checkpointer, None
        if ckpt is None:
            return
        try:
            ckpt.close()
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            self.conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint}")

    def verify_row(self, batch, plan, row, entity_key, values, event_ts, created_ts, where) -> None:
        from feast.infra.online_stores.helpers import extract_text_and_num

        for (name, _), col in zip(plan.features, batch.columns, strict=True):
            if col.texts()[row] != extract_text_and_num(values[name], False)[0]:
                raise LayoutMismatchError(f"{where}: value_text of {name} differs from Feast's")
        if self._event_ts(batch.ts_uniques[batch.ts_indices[row]]) != self._event_ts(event_ts):
            raise LayoutMismatchError(f"{where}: event_ts differs from Feast's")
        mine = None if batch.created is None else batch.created[row]
        if (None if mine is None else self._event_ts(mine)) != (
            None if created_ts is None else self._event_ts(created_ts)
        ):
            raise LayoutMismatchError(f"{where}: created_ts differs from Feast's")

    def cleanup(self, plan: _Plan, snapshot: Path, as_of: datetime, con: duckdb.DuckDBPyConnection) -> int:
        """Delete entities last written before as_of - TTL that the current snapshot no longer has."""
        from feast.infra.key_encoding_utils import deserialize_entity_key

        if self.ttl is None:
            return 0
        threshold = self._event_ts(as_of - self.ttl)
        stale = self.conn.execute(
            f"SELECT entity_key FROM {self.table} WHERE feature_name = ? AND event_ts < ?",
            (plan.feature_names[0], threshold),
        ).fetchall()
        if not stale:
            return 0
        version = self.config.entity_key_serialization_version
        keys = [r[0] for r in stale]
        decoded = [deserialize_entity_key(k, entity_key_serialization_version=version) for k in keys]
        columns: dict[str, list[Any]] = {name: [] for name in plan.key_columns}
        for ek in decoded:
            by_name = {k: v.string_val for k, v in zip(ek.join_keys, ek.entity_values, strict=True)}
            for name in plan.key_columns:
                columns[name].append(by_name.get(name))
        candidates = pa.table({"__row": pa.array(range(len(keys)), pa.int64()), **columns})
        con.register("__candidates", candidates)
        try:
            on = " AND ".join(f'c."{k}" = s."{_source_name(plan, k)}"' for k in plan.key_columns)
            rows = con.sql(
                f"SELECT c.__row FROM __candidates c ANTI JOIN read_parquet({_sql_str(str(snapshot))}) s ON {on}"
            ).fetchall()
        finally:
            con.unregister("__candidates")
        gone = [(keys[r[0]],) for r in rows]
        if gone:
            self.conn.execute("BEGIN")
            self.conn.executemany(f"DELETE FROM {self.table} WHERE entity_key = ?", gone)
            self.conn.execute("COMMIT")
        return len(gone)

    def close(self) -> None:
        try:
            self.abort()  # normally a no-op: finish() ran; never commit a rebuild from here
        finally:
            self.conn.close()


# --------------------------------------------------------------------------------------------------------------
# One view: choose full or incremental, stream the snapshot, write, record
# --------------------------------------------------------------------------------------------------------------


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _source_name(plan: _Plan, column: str) -> str:
    """The Parquet column that feeds a view column (inverse of the batch source's field mapping)."""
    for src, dst in plan.field_mapping.items():
        if dst == column:
            return src
    return column


def _select_list(plan: _Plan, alias: str) -> str:
    cols = [*plan.key_columns, *plan.feature_names, plan.ts_field]
    if plan.created_field:
        cols.append(plan.created_field)
    return ", ".join(f'{alias}."{_source_name(plan, c)}" AS "{c}"' for c in cols)


def _key_order(plan: _Plan, alias: str) -> str:
    """ORDER BY matching the byte order of serialized entity keys (little-endian length, then the bytes)."""
    terms = []
    for name in sorted(plan.join_keys):
        col = f'{alias}."{_source_name(plan, name)}"'
        terms += [f"strlen({col}) % 256", f"(strlen({col}) // 256) % 256", f"strlen({col}) // 65536", f"{col}"]
    return ", ".join(terms)


def _source_query(plan: _Plan, current: Path, previous: Path | None, ordered: bool) -> str:
    select = _select_list(plan, "c")
    src = f"read_parquet({_sql_str(str(current))}) c"
    if previous is None:
        query = f"SELECT {select} FROM {src}"
    else:
        conds = [f'c."{_source_name(plan, k)}" = p."{_source_name(plan, k)}"' for k in plan.key_columns]
        conds += [
            f'c."{_source_name(plan, f)}" IS NOT DISTINCT FROM p."{_source_name(plan, f)}"' for f in plan.feature_names
        ]
        query = (
            f"SELECT {select}, EXISTS (SELECT 1 FROM read_parquet({_sql_str(str(previous))}) p "
            f"WHERE {' AND '.join(conds)}) AS {_UNCHANGED} FROM {src}"
        )
    if ordered:
        query += f" ORDER BY {_key_order(plan, 'c')}"
    return query


def _previous_snapshot_matches_online(
    target: _Target, plan: _Plan, previous: Path, con: duckdb.DuckDBPyConnection, rows: int = 16
) -> tuple[bool, str]:
    """Read a sample of the recorded snapshot back through the store's own online_read; equal values -> trust it."""
    from feast.utils import _convert_arrow_to_proto

    sample = con.sql(
        f"SELECT {_select_list(plan, 'c')} FROM read_parquet({_sql_str(str(previous))}) c USING SAMPLE {rows} ROWS"
    ).to_arrow_table()
    if sample.num_rows == 0:
        return True, "recorded snapshot is empty"
    expected = _convert_arrow_to_proto(sample.combine_chunks().to_batches()[0], plan.view, plan.join_keys)
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


def _materialize_view(
    store: Any,
    settings: Settings,
    target: _Target,
    plan: _Plan,
    snapshot: Path,
    as_of: datetime,
    *,
    incremental: bool,
    batch_rows: int,
    verify_rows: int,
    cleanup: bool,
    cleanup_every: timedelta,
    duckdb_memory_limit: str,
    sqlite_strategy: str = "auto",
    rebuild_share: float | None = REBUILD_SHARE,
    progress: Callable[[str, int], None] | None = None,
) -> ViewReport:
    started = time.perf_counter()
    if not snapshot.exists():
        raise FileNotFoundError(snapshot)
    con = duckdb.connect()
    con.execute(f"SET threads = {max(1, settings.features.threads)}")
    con.execute(f"SET memory_limit = '{duckdb_memory_limit}'")
    con.execute("SET preserve_insertion_order = false")

    state = target.read_state(plan.name)
    previous: Path | None = None
    mode, reason = "full", "no recorded state"
    if state is not None:
        if state.as_of_dt > as_of:
            con.close()
            raise StaleSnapshotError(f"{plan.name}: online store holds {state.as_of}, newer than {as_of.isoformat()}")
        if not incremental:
            reason = "incremental disabled"
        elif state.fingerprint != plan.fingerprint:
            reason = "layout or schema changed since the recorded state"
        elif not Path(state.snapshot).exists():
            reason = f"recorded snapshot {state.snapshot} is gone"
        elif _file_id(Path(state.snapshot)) != state.snapshot_id:
            reason = f"recorded snapshot {state.snapshot} was rewritten since"
        else:
            ok, why = _previous_snapshot_matches_online(target, plan, Path(state.snapshot), con)
            if ok:
                previous, mode, reason = Path(state.snapshot), "incremental", f"diff against {state.as_of}"
            else:
                reason = why
    share = 1.0
    strategy = "upsert"
    if target.kind == "sqlite":
        strategy = sqlite_strategy
        if previous is not None and strategy == "auto" and rebuild_share is not None:
            # One exact count of the rows to write (the same diff the writer streams below, unordered).
            total, changed = con.sql(
                f"SELECT count(*), count(*) FILTER (WHERE NOT {_UNCHANGED}) "
                f"FROM ({_source_query(plan, snapshot, previous, ordered=False)})"
            ).fetchall()[0]
            share = changed / total if total else 0.0
        if strategy == "auto":
            strategy = "rebuild" if rebuild_share is not None and share >= rebuild_share else "upsert"
    log.info("bulk %s: %s (%s), %s", plan.name, mode, reason, strategy)

    snapshot_id = _file_id(snapshot)
    target.clear_state(plan.name)  # a run that dies midway leaves no state: the next run rewrites in full
    enc = _Encoders()
    rng = np.random.default_rng(0)
    rows_read = rows_written = rows_unchanged = rows_repaired = batches = 0
    target.set_strategy(strategy)
    target.begin(plan, as_of)
    try:
        query = _source_query(plan, snapshot, previous, ordered=target.kind == "sqlite")
        reader = con.sql(query).to_arrow_reader(batch_rows)
        for batch in _batches(reader, batch_rows):
            rows_read += batch.num_rows
            batches += 1
            if previous is not None:
                same = batch.column(_UNCHANGED).to_numpy(zero_copy_only=False).astype(bool)
                batch = batch.drop_columns([_UNCHANGED])
                if same.any():
                    unchanged = batch.filter(pa.array(same))
                    missing = target.touch(unchanged, plan)
                    rows_unchanged += unchanged.num_rows - len(missing)
                    rows_repaired += len(missing)
                    changed_mask = ~same
                    if len(missing):
                        changed_mask[np.flatnonzero(same)[missing]] = True
                    batch = batch.filter(pa.array(changed_mask))
            if batch.num_rows == 0:
                continue
            encoded = _encode_batch(batch, plan, enc)
            if verify_rows > 0:
                _verify(encoded, plan, target, verify_rows, rng)
            target.write(encoded)
            rows_written += batch.num_rows
            if progress:
                progress(plan.name, rows_read)
        target.finish()
        rows_restored = target.rows_restored
        last_cleanup = state.last_cleanup if state else None
        deleted = 0
        if cleanup and (last_cleanup is None or as_of - datetime.fromisoformat(last_cleanup) >= cleanup_every):
            deleted = target.cleanup(plan, snapshot, as_of, con)
            last_cleanup = as_of.isoformat()
        now = datetime.now(UTC).isoformat()
        target.write_state(
            plan.name,
            BulkState(
                fingerprint=plan.fingerprint,
                as_of=as_of.isoformat(),
                snapshot=str(snapshot),
                snapshot_id=snapshot_id,
                rows=rows_read,
                written_at=now,
                last_cleanup=last_cleanup,
            ),
        )
    except BaseException:
        try:
            target.abort()
        except BaseException as exc:  # the original error matters more
            log.warning("bulk %s: writer cleanup failed: %s", plan.name, exc)
        raise
    finally:
        con.close()
    seconds = time.perf_counter() - started
    log.info(
        "bulk %s (%s): %d rows read, %d written (%d as new hashes), %d unchanged, %d repaired, %d deleted in %.2fs",
        plan.name,
        strategy,
        rows_read,
        rows_written,
        rows_restored,
        rows_unchanged,
        rows_repaired,
        deleted,
        seconds,
    )
    return ViewReport(
        view=plan.name,
        snapshot=str(snapshot),
        mode=mode,
        reason=reason,
        rows_read=rows_read,
        rows_written=rows_written,
        rows_unchanged=rows_unchanged,
        rows_repaired=rows_repaired,
        rows_deleted=deleted,
        batches=batches,
        seconds=seconds,
        rows_restored=rows_restored,
        strategy=strategy,
        write_share=round(rows_written / rows_read, 4) if rows_read else 0.0,
    )


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _batches(reader: pa.RecordBatchReader, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `batch_rows` rows (DuckDB may hand out smaller ones; they are fine as they are)."""
    for batch in reader:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


__all__ = [
    "BulkMaterializeError",
    "BulkReport",
    "BulkState",
    "LayoutMismatchError",
    "StaleSnapshotError",
    "UnsupportedOnlineStoreError",
    "ViewReport",
    "bulk_materialize",
    "clear_online_state",
    "online_state",
]
