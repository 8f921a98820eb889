"""Feast's online key/value format, in one place: the bytes the bulk writer, the stream push and the fast reader
write and read, and the guards that hold those bytes to Feast's own.

What Feast 0.67 stores per (feature view, entity key):

* **Entity key** — `serialize_entity_key` (version 3): the join-key names, sorted (a single key is not sorted),
  as a header (`entity_key_head`), then per value its type (`<I` STRING), its length (`<I`) and its UTF-8 bytes.
  freqcap's join keys are all strings. `string_key_builder` builds it per request, `entity_key_column` per Arrow
  column (the bulk writer's batches).
* **Redis** (`RedisOnlineStore`) — one hash per entity key, named serialized key + project, shared by every view
  on that key; field `_mmh3("<view>:<feature>")` holds the serialized `ValueProto`, field `_ts:<view>` the
  serialized protobuf `Timestamp` of the row's event time (`event_timestamp`); `<view>` is the name in the store
  (`redis_view_name`, versioned when Feast's online versioning is on).
* **SQLite** (`SqliteOnlineStore`) — table `sqlite_table_name(...)`, one row per (entity key, feature) with the
  serialized `ValueProto` (value_text, event_ts and created_ts are the SQLite writer's business).
* **Values** — one `ValueProto` per feature, exactly one field set: a tag (field number from Feast's own `Value`
  descriptor and wire type, `TAGS`), then the value (`varint`, `int64_list`, `unix_timestamp`; a null timestamp
  is `NULL_UNIX_TIMESTAMP`, not an empty message). `ValueDecoder` reads them back as Feast's `to_dict` would.

Why one module: the same layout used to be written four times (bulk writer, fast reader, stream push, the push's
Lua script), each with its own key builder, field names and varints; a Feast upgrade that moved one byte would have
had to be found in each. Every specialization here is held to Feast's own function: the key builders check
themselves against Feast's serializer at construction (and fall back to it), `redis_fields` against the fields
Feast's Redis store reads, and the `check_*` guards compare sampled rows with Feast's own conversion
(`feast_rows`, `feast_value_bytes`) before anything is written. A mismatch raises `FormatMismatch`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.infra.key_encoding_utils import serialize_entity_key, serialize_entity_key_prefix
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Int64List
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType as ProtoValueType
from feast.type_map import NULL_TIMESTAMP_INT_VALUE, feast_value_type_to_python_type, python_values_to_proto_values
from feast.utils import _convert_arrow_to_proto, make_tzaware
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from freqcap.adapters.feast.reader import _as_datetime

log = logging.getLogger(__name__)


class FormatMismatch(RuntimeError):
    """Bytes built here differ from what Feast's own code builds: nothing built from them may be written or read."""


# ----------------------------------------------------------------------------------------------------- values

# Protobuf wire types of the ValueProto fields freqcap encodes by hand.
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
_SMALL = [bytes([i]) for i in range(128)]  # varints of 0..127, the common case (counts, tags)


def varint(n: int) -> bytes:
    """Protobuf varint of an int64 (a negative one as its 64-bit two's complement, as protobuf encodes it)."""
    if 0 <= n < 128:
        return _SMALL[n]
    n &= (1 << 64) - 1
    # Unrolled up to five bytes (epoch seconds, bucket ends: the stream worker encodes one or more per row).
    if n < 1 << 14:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 1 << 21:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 1 << 28:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    if n < 1 << 35:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21 & 0x7F | 0x80, n >> 28))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_tag(proto_field: str, wire_type: int, message: Any = ValueProto) -> bytes:
    """The tag of a field of Feast's proto `message`: its field number (from Feast's own descriptor) and wire type."""
    return varint((message.DESCRIPTOR.fields_by_name[proto_field].number << 3) | wire_type)


# The tag that starts a serialized ValueProto holding one value of each type encoded by hand.
TAGS: dict[ValueType, bytes] = {
    ValueType.INT64: field_tag("int64_val", VARINT),
    ValueType.INT32: field_tag("int32_val", VARINT),
    ValueType.UNIX_TIMESTAMP: field_tag("unix_timestamp_val", VARINT),
    ValueType.DOUBLE: field_tag("double_val", FIXED64),
    ValueType.FLOAT: field_tag("float_val", FIXED32),
    ValueType.INT64_LIST: field_tag("int64_list_val", LENGTH_DELIMITED),
}
# Inside an Int64List: its one field, `val`, packed.
PACKED_VAL_TAG = field_tag("val", LENGTH_DELIMITED, Int64List)
EMPTY_INT64_LIST = TAGS[ValueType.INT64_LIST] + varint(0)
# A missing timestamp: Feast stores its NaT sentinel, not an empty ValueProto.
NULL_UNIX_TIMESTAMP = ValueProto(unix_timestamp_val=int(NULL_TIMESTAMP_INT_VALUE)).SerializeToString()


def int64_list(values: Sequence[int]) -> bytes:
    """ValueProto(int64_list_val=Int64List(val=values)), serialized."""
    if not values:
        return EMPTY_INT64_LIST
    body = b"".join(map(varint, values))
    inner = PACKED_VAL_TAG + varint(len(body)) + body
    return TAGS[ValueType.INT64_LIST] + varint(len(inner)) + inner


def unix_timestamp(value: datetime | None) -> bytes:
    """ValueProto(unix_timestamp_val=<whole seconds>), serialized; None is Feast's null timestamp."""
    if value is None:
        return NULL_UNIX_TIMESTAMP
    return TAGS[ValueType.UNIX_TIMESTAMP] + varint(int(value.timestamp()))


def event_timestamp(dt: datetime) -> bytes:
    """The value of `_ts:<view>`: a protobuf Timestamp, as Feast's Redis store writes it (naive means UTC)."""
    ts = Timestamp()
    ts.FromDatetime(make_tzaware(dt))
    return ts.SerializeToString()


def event_timestamp_seconds(raw: bytes | None) -> float | None:
    """`_ts:<view>` as stored -> epoch seconds (None when absent)."""
    if not raw:
        return None
    ts = Timestamp.FromString(raw)
    return ts.seconds + ts.nanos / 1e9


def int64_list_values(raw: bytes | None) -> tuple[int, ...]:
    """A serialized int64 list ValueProto -> its values (() when absent)."""
    if not raw:
        return ()
    return tuple(ValueProto.FromString(raw).int64_list_val.val)


# Bound on each ValueDecoder memo (raw ValueProto bytes -> int or datetime).
_CACHE_MAX = 32_768


class ValueDecoder:
    """ValueProto bytes -> Python, as Feast's `OnlineResponse.to_dict` and then FeastReader convert them.

    `decode` mirrors `feast_value_type_to_python_type` (its own code for anything but plain scalars); `count` and
    `timestamp` add what FeastReader does on top (`int(v)` or 0; `_as_datetime`). Both memoize by the raw bytes
    (small counts repeat everywhere; a last-impression time is shared by the levels above the ad), in bounded
    dicts emptied when full. Values are immutable, so sharing them is safe."""

    def __init__(self) -> None:
        self._from_string = ValueProto.FromString
        self._plain = frozenset({"int64_val", "int32_val", "string_val", "double_val", "float_val", "bool_val"})
        self._null_ts = int(NULL_TIMESTAMP_INT_VALUE)
        # Feast serializes one `Value` per feature, so its first byte is the tag of the one field that is set:
        # with the field's tag known, the value is read without WhichOneof.
        self._int64_tag = TAGS[ValueType.INT64][0]
        self._ts_tag = TAGS[ValueType.UNIX_TIMESTAMP][0]
        self._counts: dict[bytes, int] = {}
        self._times: dict[bytes, datetime] = {}

    def clear(self) -> None:
        self._counts.clear()
        self._times.clear()

    def decode(self, raw: bytes | None) -> Any:
        # Feast: `ValueProto()`, parsed only if the bytes are non-empty; an unset value is None.
        if not raw:
            return None
        value = self._from_string(raw)
        kind = value.WhichOneof("val")
        if kind is None:
            return None
        if kind in self._plain:
            return getattr(value, kind)
        if kind == "unix_timestamp_val":
            seconds = value.unix_timestamp_val
            return None if seconds == self._null_ts else datetime.fromtimestamp(seconds, tz=UTC)
        return feast_value_type_to_python_type(value)  # anything unusual: exactly Feast's conversion

    def count(self, raw: bytes | None) -> int:
        if not raw:
            return 0
        hit = self._counts.get(raw)
        if hit is not None:
            return hit
        if raw[0] == self._int64_tag:
            n = self._from_string(raw).int64_val
        else:
            value = self.decode(raw)
            n = int(value) if value is not None else 0
        if len(self._counts) >= _CACHE_MAX:
            self._counts.clear()
        self._counts[raw] = n
        return n

    def timestamp(self, raw: bytes | None) -> datetime | None:
        if not raw:
            return None
        hit = self._times.get(raw)
        if hit is not None:
            return hit
        if raw[0] == self._ts_tag:
            seconds = self._from_string(raw).unix_timestamp_val
            value = None if seconds == self._null_ts else datetime.fromtimestamp(seconds, tz=UTC)
        else:
            value = _as_datetime(self.decode(raw))
        if value is not None:
            if len(self._times) >= _CACHE_MAX:
                self._times.clear()
            self._times[raw] = value
        return value


# ----------------------------------------------------------------------------------------------- entity keys

STRING_TYPE = struct.pack("<I", ProtoValueType.STRING)  # the type word before each string value of a key
# Probe values for the key builders' self-check: ASCII, empty, non-ASCII, long (multi-byte length field).
_PROBES = ("u1", "", "ünï-ĉødé", "x" * 300)


def entity_key_head(join_keys: Sequence[str], version: int) -> bytes:
    """The part of a serialized entity key before the values (count and names), from Feast's own function."""
    return serialize_entity_key_prefix(list(join_keys), entity_key_serialization_version=version)


def string_entity_key(join_keys: Sequence[str], values: Sequence[str]) -> EntityKeyProto:
    return EntityKeyProto(join_keys=list(join_keys), entity_values=[ValueProto(string_val=v) for v in values])


def string_key_builder(
    join_keys: Sequence[str], version: int, suffix: bytes, reference: Callable[[Sequence[str]], bytes]
) -> tuple[Callable[..., bytes], bool]:
    """A fast builder of Feast's serialized entity key (+ `suffix`) for string join-key values given in
    `join_keys` order; self-checked against Feast's `reference` and replaced by it on any difference.

    Returns (builder, is_fast)."""
    head = entity_key_head(join_keys, version)
    tag = STRING_TYPE
    # Feast writes the values in sorted join-key order (a single key is not sorted).
    order = [list(join_keys).index(k) for k in (sorted(join_keys) if len(join_keys) > 1 else join_keys)]
    pack_len = struct.Struct("<I").pack

    if len(join_keys) == 1:

        def build(a: str) -> bytes:
            b = a.encode()
            return b"".join((head, tag, pack_len(len(b)), b, suffix))

    elif len(join_keys) == 2:
        first, second = order

        def build(*values: str) -> bytes:
            x = values[first].encode()
            y = values[second].encode()
            return b"".join((head, tag, pack_len(len(x)), x, tag, pack_len(len(y)), y, suffix))

    else:  # not used by freqcap's views; Feast's function is exact
        return (lambda *values: reference(values)), False

    def slow(*values: str) -> bytes:
        return reference(values)

    n = len(join_keys)
    for i, probe in enumerate(_PROBES):
        values = tuple(_PROBES[(i + j) % len(_PROBES)] if j else probe for j in range(n))
        if build(*values) != reference(values):
            log.warning("fast entity key builder differs from Feast's for %s: using Feast's serializer", join_keys)
            return slow, False
    return build, True


def redis_key_builder(config: Any, join_keys: Sequence[str]) -> tuple[Callable[..., bytes], bool]:
    """Builder of Feast's Redis key (serialized entity key + project) of string values given in `join_keys` order,
    self-checked against Feast's `_redis_key`. Returns (builder, is_fast)."""
    project, version = config.project, config.entity_key_serialization_version

    def reference(values: Sequence[str]) -> bytes:
        key = string_entity_key(join_keys, values)
        return _redis_key(project, key, entity_key_serialization_version=version)

    return string_key_builder(join_keys, version, redis_key_suffix(config), reference)


def sqlite_key_builder(config: Any, join_keys: Sequence[str]) -> tuple[Callable[..., bytes], bool]:
    """Builder of Feast's SQLite `entity_key` (the serialized key alone: the project is in the table name),
    self-checked against Feast's `serialize_entity_key`. Returns (builder, is_fast)."""
    version = config.entity_key_serialization_version

    def reference(values: Sequence[str]) -> bytes:
        return serialize_entity_key(string_entity_key(join_keys, values), entity_key_serialization_version=version)

    return string_key_builder(join_keys, version, b"", reference)


def redis_key_suffix(config: Any) -> bytes:
    """What Feast's Redis store appends to the serialized entity key: the project."""
    return config.project.encode("utf-8")


def entity_key_column(columns: Mapping[str, pa.Array], version: int) -> pa.Array:
    """Feast's `serialize_entity_key` of every row at once, from the string join-key columns (no nulls)."""
    names = sorted(columns)
    parts: list[Any] = [pa.scalar(entity_key_head(names, version), pa.binary())]
    string_type = pa.scalar(STRING_TYPE, pa.binary())
    for name in names:
        data = columns[name].cast(pa.binary())
        parts += [string_type, _u32le(pc.binary_length(data).to_numpy(zero_copy_only=False)), data]
    out = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _u32le(lengths: np.ndarray) -> pa.Array:
    """Each length as 4 little-endian bytes (struct '<I'), as a binary array."""
    n = len(lengths)
    offsets = np.arange(0, 4 * n + 1, 4, dtype=np.int32)
    data = np.ascontiguousarray(lengths, dtype="<u4").tobytes()
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


# ------------------------------------------------------------------------------------------ names in the stores


@dataclass(frozen=True)
class RedisFields:
    """The hash fields of one view in Feast's Redis layout."""

    view: str  # the view's name in the store
    ts: bytes  # `_ts:<view>`: the row's event time
    features: tuple[bytes, ...]  # `_mmh3("<view>:<feature>")`, in the order asked for


def redis_view_name(view: Any, config: Any) -> str:
    """The view's name inside Feast's Redis store (with a version suffix when online versioning is on)."""
    return _versioned_fv_name(view, config)


def redis_fields(view: Any, features: Sequence[str], config: Any) -> RedisFields:
    """The hash fields of `features` (and `_ts`) of a view, checked against the fields Feast's own `online_read`
    asks Redis for; raises FormatMismatch if they differ."""
    name = redis_view_name(view, config)
    fields = RedisFields(name, f"_ts:{name}".encode(), tuple(_mmh3(f"{name}:{f}") for f in features))
    # Feast's list gets `_ts:<view>` appended (to a copy here); asked for no feature it lists them all.
    requested, keys = RedisOnlineStore()._generate_hset_keys_for_features(view, list(features), fv_name_override=name)
    theirs = [k if isinstance(k, bytes) else k.encode() for k in keys]
    n = len(features)
    if (n and (requested[:n] != list(features) or theirs[:n] != list(fields.features))) or theirs[-1] != fields.ts:
        raise FormatMismatch(f"{name}: hash fields differ from Feast's")
    return fields


def sqlite_table_name(config: Any, view: Any) -> str:
    """The view's table in Feast's SQLite store (unquoted)."""
    # why here: Feast's SQLite module registers process-wide sqlite3 datetime adapters; only SQLite users load it.
    from feast.infra.online_stores.sqlite import _table_id

    return _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)


# --------------------------------------------------------------------------------------------- Feast's own bytes


def feast_value_bytes(values: Sequence[Any] | np.ndarray, vtype: ValueType) -> list[bytes]:
    """Feast's own conversion of a column of Python values, serialized (what `materialize` and `push` store)."""
    return [v.SerializeToString() for v in python_values_to_proto_values(values, vtype)]


def feast_rows(table: pa.RecordBatch, view: Any, join_keys: Mapping[str, ValueType]) -> list[tuple]:
    """Feast's own conversion of Arrow rows during materialize: (EntityKeyProto, {feature: ValueProto}, event
    timestamp, created timestamp) per row."""
    return _convert_arrow_to_proto(table, view, dict(join_keys))


def check_entity_key(ours: bytes, entity_key: EntityKeyProto, version: int) -> None:
    if ours != serialize_entity_key(entity_key, entity_key_serialization_version=version):
        raise FormatMismatch("entity key bytes differ from serialize_entity_key")


def check_redis_key(ours: bytes, entity_key: EntityKeyProto, config: Any) -> None:
    expected = _redis_key(
        config.project, entity_key, entity_key_serialization_version=config.entity_key_serialization_version
    )
    if ours != expected:
        raise FormatMismatch("Redis key differs from _redis_key")


def check_value(feature: str, ours: bytes, feast_value: ValueProto) -> None:
    theirs = feast_value.SerializeToString()
    if ours != theirs:
        raise FormatMismatch(f"{feature} encodes as {ours!r}, Feast: {theirs!r}")


def check_event_timestamp(ours: datetime, feast_ts: datetime) -> None:
    if event_timestamp(ours) != event_timestamp(feast_ts):
        raise FormatMismatch("_ts value differs from Feast's")


__all__ = [
    "EMPTY_INT64_LIST",
    "NULL_UNIX_TIMESTAMP",
    "PACKED_VAL_TAG",
    "STRING_TYPE",
    "TAGS",
    "FormatMismatch",
    "RedisFields",
    "ValueDecoder",
    "check_entity_key",
    "check_event_timestamp",
    "check_redis_key",
    "check_value",
    "entity_key_column",
    "entity_key_head",
    "event_timestamp",
    "event_timestamp_seconds",
    "feast_rows",
    "feast_value_bytes",
    "field_tag",
    "int64_list",
    "int64_list_values",
    "redis_fields",
    "redis_key_builder",
    "redis_key_suffix",
    "redis_view_name",
    "sqlite_key_builder",
    "sqlite_table_name",
    "string_entity_key",
    "string_key_builder",
    "unix_timestamp",
    "varint",
]
