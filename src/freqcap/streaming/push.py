"""Pushing changed pairs to Feast's stream views (one row per pair: bucket arrays + last impression).

Two writers, same stored bytes (tests/integration/test_stream.py compares them field by field):
* `FeastPusher` — `FeatureStore.push` on the view's push source (any online store; embedded SQLite).
* `RedisDirectPusher` — the path `push` ends in for Feast's Redis store with `skip_dedup` (one HSET of every
  feature + `_ts:<view>`, then EXPIRE), built with Feast's own key/field functions and value protos, without the
  DataFrame -> Arrow -> proto round trip that caps `push` near 15-20 k rows/s (LIBRARY-NOTES).

The row's event timestamp is the push's wall-clock time, strictly increasing per worker: Feast's Redis store drops a
write whose timestamp is not newer than the stored one, and a late event can change a pair without moving its
newest event time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from freqcap.feature_repo.feature_views import STREAM_FEATURES, stream_view_name
from freqcap.streaming.buckets import KIND_PREFIX
from freqcap.streaming.state import PairState

ENTITY_COLUMN = {"advertiser": "advertiser_id", "campaign": "campaign_id", "ad": "ad_id"}


def pair_row(pair: PairState, oldest_end_kept: int) -> tuple[dict[str, Any], list[str]]:
    """The stream-view feature values of one pair (buckets older than the horizon dropped) and the state fields
    to prune."""
    row: dict[str, Any] = {}
    stale: list[str] = []
    for kind, prefix in KIND_PREFIX.items():
        items = sorted(pair.buckets.get(kind, {}).items())
        keep = [(e, n) for e, n in items if e >= oldest_end_kept and n]
        stale += [f"{kind}:{e}" for e, _ in items if e < oldest_end_kept]
        row[f"{prefix}_buckets"] = [e for e, _ in keep]
        row[f"{prefix}_counts"] = [n for _, n in keep]
    row["last_imp_ts"] = (
        datetime.fromtimestamp(pair.last_imp_us / 1_000_000, UTC) if pair.last_imp_us is not None else None
    )
    return row, stale


class Pusher(Protocol):
    def push(self, pairs: Sequence[tuple[PairState, dict[str, Any]]]) -> int: ...


class _Clock:
    """Wall-clock push timestamps, strictly increasing (microseconds)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> datetime:
        now = int(time.time() * 1_000_000)
        self._last = max(now, self._last + 1)
        return datetime.fromtimestamp(self._last / 1_000_000, UTC)


class FeastPusher:
    """`FeatureStore.push`, one DataFrame per tier per micro-batch."""

    def __init__(self, store: Any):
        self.store = store
        self.clock = _Clock()

    def push(self, pairs: Sequence[tuple[PairState, dict[str, Any]]]) -> int:
        import pandas as pd

        ts = self.clock.next()
        by_level: dict[str, list[dict[str, Any]]] = {}
        for pair, row in pairs:
            record = {"user_id": pair.user_id, ENTITY_COLUMN[pair.level]: pair.entity_id, "event_timestamp": ts}
            record.update(row)
            by_level.setdefault(pair.level, []).append(record)
        for level, records in by_level.items():
            frame = pd.DataFrame.from_records(records)
            frame["last_imp_ts"] = pd.to_datetime(frame["last_imp_ts"], utc=True)
            self.store.push(f"{stream_view_name(level)}_push", frame)
        return len(pairs)


class RedisDirectPusher:
    """Feast's Redis layout written directly (see module docstring); `client` is a redis-py client."""

    def __init__(self, store: Any, client: Any, key_ttl_seconds: int | None):
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import _versioned_fv_name

        self.store = store
        self.client = client
        self.clock = _Clock()
        self.key_ttl = key_ttl_seconds
        config = store.config
        self._version = config.entity_key_serialization_version
        self._project = config.project
        self._fields: dict[str, tuple[bytes, list[bytes]]] = {}
        for level in ENTITY_COLUMN:
            view = store.get_feature_view(stream_view_name(level))
            name = _versioned_fv_name(view, config)
            have = [f.name for f in view.features]
            if list(STREAM_FEATURES) != have:
                raise RuntimeError(f"stream view {name} has features {have}, expected {list(STREAM_FEATURES)}")
            self._fields[level] = (f"_ts:{name}".encode(), [_mmh3(f"{name}:{f}") for f in STREAM_FEATURES])

    def redis_key(self, level: str, user_id: str, entity_id: str) -> bytes:
        from feast.infra.online_stores.redis import _redis_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        key = EntityKey(
            join_keys=["user_id", ENTITY_COLUMN[level]],
            entity_values=[Value(string_val=user_id), Value(string_val=entity_id)],
        )
        return _redis_key(self._project, key, entity_key_serialization_version=self._version)

    def encode(self, rows: Sequence[dict[str, Any]]) -> list[list[bytes]]:
        """Serialized ValueProtos per row, in STREAM_FEATURES order (Feast's conversion for the timestamp)."""
        from feast.protos.feast.types.Value_pb2 import Int64List, Value
        from feast.type_map import NULL_TIMESTAMP_INT_VALUE, python_values_to_proto_values
        from feast.value_type import ValueType

        stamps = python_values_to_proto_values([r["last_imp_ts"] for r in rows], ValueType.UNIX_TIMESTAMP)
        # `push` goes through Arrow, where a missing time is NaT: Feast stores its null-timestamp sentinel, not an
        # empty value (tests compare the bytes).
        null_stamp = Value(unix_timestamp_val=int(NULL_TIMESTAMP_INT_VALUE))
        stamps = [null_stamp if r["last_imp_ts"] is None else s for r, s in zip(rows, stamps, strict=True)]
        out = []
        for row, stamp in zip(rows, stamps, strict=True):
            values = [Value(int64_list_val=Int64List(val=row[f])).SerializeToString() for f in STREAM_FEATURES[:-1]]
            values.append(stamp.SerializeToString())
            out.append(values)
        return out

    def push(self, pairs: Sequence[tuple[PairState, dict[str, Any]]]) -> int:
        from google.protobuf.timestamp_pb2 import Timestamp

        if not pairs:
            return 0
        stamp = Timestamp()
        stamp.FromDatetime(self.clock.next())
        ts_bytes = stamp.SerializeToString()
        encoded = self.encode([row for _, row in pairs])
        pipe = self.client.pipeline(transaction=False)
        for (pair, _), values in zip(pairs, encoded, strict=True):
            ts_field, fields = self._fields[pair.level]
            key = self.redis_key(pair.level, pair.user_id, pair.entity_id)
            mapping = {ts_field: ts_bytes}
            mapping.update(zip(fields, values, strict=True))
            pipe.hset(key, mapping=mapping)
            if self.key_ttl:
                pipe.expire(key, self.key_ttl)
        pipe.execute()
        return len(pairs)
