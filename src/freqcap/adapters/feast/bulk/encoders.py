"""Column encoders: a batch of snapshot rows -> Feast's serialized `ValueProto`s and entity keys, a column at a time.

Feast's own materialize builds one protobuf object per value in Python. Here each feature column is encoded once
per batch with Arrow/NumPy: low-cardinality columns by serializing each distinct value with Feast itself
(`online_format.feast_value_bytes`) and pointing rows at it; ints, floats and timestamps by writing the protobuf
bytes directly (the tag from `online_format.TAGS` + varint or fixed-width value, a column at a time); nulls as
Feast encodes them (computed by Feast); entity keys by `online_format.entity_key_column`. What comes out is checked
against Feast's own conversion batch by batch (`verify`).

A `Batch` keeps the rows encoded once for whichever target writes them: serialized entity keys, one `Column` per
feature (which also knows its RESP and listpack forms for Redis and its `value_text` for SQLite), and the event
and created timestamps as Feast's materialize derives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.protos.feast.types.Value_pb2 import Value
from feast.utils import _coerce_datetime
from feast.value_type import ValueType

from freqcap.adapters.feast import online_format as fmt
from freqcap.adapters.feast import redis_dump
from freqcap.adapters.feast.bulk.binary import ascii_lengths, binary_from_rows, join
from freqcap.adapters.feast.bulk.errors import BulkMaterializeError
from freqcap.adapters.feast.bulk.plan import ViewPlan
from freqcap.adapters.feast.bulk.resp import CRLF

# Columns with more distinct values than this share of the batch skip the per-distinct-value path.
DICT_MAX_SHARE = 0.25


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


def _feast_bytes(arr: pa.Array, vtype: Any) -> list[bytes]:
    """Feast's own conversion of a column, exactly as `_columns_to_proto_values` does it during materialize."""
    return fmt.feast_value_bytes(arr.to_numpy(zero_copy_only=False), vtype)


@dataclass
class Column:
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
            wrapped = pa.array([prefix + b"$%d\r\n" % len(u) + u + CRLF for u in self.uniques], pa.binary())
            return wrapped.take(pa.array(self.indices))
        if self.kind in ("double", "float") and self.values.null_count == 0:
            width = 9 if self.kind == "double" else 5
            lens = pc.binary_length(self.values)
            if pc.all(pc.equal(lens, width)).as_py():
                return join(prefix + b"$%d\r\n" % width, self.values, CRLF)
        return join(prefix + b"$", ascii_lengths(self.values), CRLF, self.values, CRLF)

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

    def take(self, idx: np.ndarray) -> Column:
        """The rows `idx` of this column."""
        src = None if self.source is None else self.source.take(pa.array(idx))
        if self.uniques is not None:
            return Column(self.kind, len(idx), uniques=self.uniques, indices=self.indices[idx], source=src)
        return Column(self.kind, len(idx), values=self.values.take(pa.array(idx)), source=src)

    def objects(self) -> np.ndarray:
        """Python bytes per row (for SQLite parameters)."""
        if self.uniques is not None:
            return object_array(self.uniques)[self.indices]
        return self.values.to_numpy(zero_copy_only=False)

    def texts(self) -> np.ndarray:
        """SQLite `value_text` per row, as Feast's `extract_text_and_num` derives it from the ValueProto."""
        if self._texts is None:
            self._texts = self._compute_texts()
        return self._texts

    def _compute_texts(self) -> np.ndarray:
        if self.uniques is not None:
            texts = [extract_text_and_num(Value.FromString(u), False)[0] for u in self.uniques]
            return object_array(texts)[self.indices]
        out = np.full(self.n, None, dtype=object)
        if self.kind == "int":
            valid = ~is_null(self.source)
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


def object_array(items: list[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def is_null(arr: pa.Array) -> np.ndarray:
    return pc.is_null(arr, nan_is_null=pa.types.is_floating(arr.type)).to_numpy(zero_copy_only=False)


class Encoders:
    """Per-type column encoders for one run (tags from `online_format`; null encodings derived from Feast)."""

    def __init__(self) -> None:
        self.VT = ValueType
        self.tags = fmt.TAGS

    def encode(self, arr: pa.Array, vtype: Any) -> Column:
        n = len(arr)
        VT = self.VT
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if n == 0:
            return Column("generic", 0, values=pa.array([], pa.binary()), source=arr)
        nulls = arr.null_count
        if vtype in (VT.DOUBLE, VT.FLOAT) and pa.types.is_floating(arr.type):
            return self._fixed(arr, vtype)
        if vtype == VT.UNIX_TIMESTAMP and pa.types.is_timestamp(arr.type):
            return self._timestamps(arr)
        if vtype in (VT.INT64, VT.INT32) and pa.types.is_integer(arr.type) and nulls == 0:
            col = self._dictionary(arr, vtype, max_uniques=max(256, int(n * DICT_MAX_SHARE)))
            return col if col is not None else self._ints(arr, vtype)
        try:
            col = self._dictionary(arr, vtype, max_uniques=n)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, TypeError):
            col = None
        if col is not None:
            return col
        return Column("generic", n, values=pa.array(_feast_bytes(arr, vtype), pa.binary()), source=arr)

    def _dictionary(self, arr: pa.Array, vtype: Any, max_uniques: int) -> Column | None:
        """Distinct values serialized by Feast itself; rows point at them. None if there are too many."""
        encoded = pc.dictionary_encode(arr, null_encoding="encode")
        if len(encoded.dictionary) > max_uniques:
            return None
        uniques = _feast_bytes(encoded.dictionary, vtype)
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        return Column("dict", len(arr), uniques=uniques, indices=indices, source=arr)

    def _null_bytes(self, arr: pa.Array, vtype: Any) -> bytes:
        """Feast's encoding of a null in a column that also holds values (or of an all-null column)."""
        valid = pc.drop_null(arr)
        if len(valid):
            probe = pa.concat_arrays([valid.slice(0, 1), pa.nulls(1, arr.type)])
            return _feast_bytes(probe, vtype)[1]
        return _feast_bytes(pa.nulls(1, arr.type), vtype)[0]

    def _fixed(self, arr: pa.Array, vtype: Any) -> Column:
        double = vtype == self.VT.DOUBLE
        dtype, width = ("<f8", 8) if double else ("<f4", 4)
        n = len(arr)
        floats = pc.fill_null(arr, 0.0).to_numpy(zero_copy_only=False).astype(dtype)
        tag = self.tags[vtype]
        mat = np.empty((n, len(tag) + width), np.uint8)
        mat[:, : len(tag)] = np.frombuffer(tag, np.uint8)
        mat[:, len(tag) :] = floats.view(np.uint8).reshape(n, width)
        values = binary_from_rows(mat, np.full(n, len(tag) + width))
        missing = is_null(arr)
        if missing.any():  # Feast: null and NaN both become an empty ValueProto (pd.isnull)
            values = pc.if_else(pa.array(missing), pa.scalar(self._null_bytes(arr, vtype), pa.binary()), values)
        return Column("double" if double else "float", n, values=values, source=arr)

    def _ints(self, arr: pa.Array, vtype: Any) -> Column:
        return Column("int", len(arr), values=self._varints(arr.to_numpy().astype(np.int64), vtype), source=arr)

    def _varints(self, ints: np.ndarray, vtype: Any) -> pa.Array:
        tag = self.tags[vtype]
        mat, counts = _varint_rows(ints.view(np.uint64))
        full = np.empty((len(ints), len(tag) + mat.shape[1]), np.uint8)
        full[:, : len(tag)] = np.frombuffer(tag, np.uint8)
        full[:, len(tag) :] = mat
        return binary_from_rows(full, counts + len(tag))

    def _timestamps(self, arr: pa.Array) -> Column:
        """unix_timestamp_val = whole seconds (numpy datetime64[s] truncation, as Feast converts)."""
        vtype = self.VT.UNIX_TIMESTAMP
        n = len(arr)
        if arr.null_count == n:
            return Column("ts", n, uniques=[self._null_bytes(arr, vtype)], indices=np.zeros(n, np.int64), source=arr)
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[arr.type.unit]
        raw = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        values = self._varints(np.floor_divide(raw, per_second), vtype)
        if arr.null_count:
            missing = is_null(arr)
            values = pc.if_else(pa.array(missing), pa.scalar(self._null_bytes(arr, vtype), pa.binary()), values)
        return Column("ts", n, values=values, source=arr)


def entity_keys(batch: pa.RecordBatch, plan: ViewPlan) -> pa.Array:
    """Feast's `serialize_entity_key` (string join keys) for every row."""
    columns = {}
    for name in sorted(plan.join_keys):
        columns[name] = batch.column(name)
        if columns[name].null_count:
            raise BulkMaterializeError(f"{plan.name}: null values in join key {name}")
    return fmt.entity_key_column(columns, plan.key_version)


@dataclass
class Batch:
    """A batch of snapshot rows, encoded once and written by either store."""

    table: pa.RecordBatch
    keys: pa.Array  # serialized entity keys
    columns: list[Column]
    ts_uniques: list[datetime]  # event timestamps as Feast's materialize sees them (naive UTC datetimes)
    ts_indices: np.ndarray
    created: list[datetime | None] | None  # per row, or None when the view has no created column

    @property
    def n(self) -> int:
        return self.table.num_rows

    def take(self, idx: np.ndarray) -> Batch:
        """The rows `idx` of this batch, still encoded."""
        rows = pa.array(idx)
        return Batch(
            table=self.table.take(rows),
            keys=self.keys.take(rows),
            columns=[c.take(idx) for c in self.columns],
            ts_uniques=self.ts_uniques,
            ts_indices=self.ts_indices[idx],
            created=None if self.created is None else [self.created[i] for i in idx.tolist()],
        )


def feast_datetimes(arr: pa.Array) -> list[Any]:
    """Datetimes exactly as `_convert_arrow_fv_to_proto` derives event timestamps from an Arrow column."""
    return [_coerce_datetime(v) for v in pd.to_datetime(arr.to_numpy(zero_copy_only=False))]


def encode_batch(batch: pa.RecordBatch, plan: ViewPlan, enc: Encoders) -> Batch:
    columns = [enc.encode(batch.column(f), vt) for f, vt in plan.features]
    ts = pc.dictionary_encode(batch.column(plan.ts_field))
    if ts.indices.null_count:
        raise BulkMaterializeError(f"{plan.name}: null {plan.ts_field}")
    created = None
    if plan.created_field:
        created = feast_datetimes(batch.column(plan.created_field))
    return Batch(
        table=batch,
        keys=entity_keys(batch, plan),
        columns=columns,
        ts_uniques=feast_datetimes(ts.dictionary),
        ts_indices=ts.indices.to_numpy(zero_copy_only=False),
        created=created,
    )
