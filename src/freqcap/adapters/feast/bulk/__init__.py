"""Bulk materialization: published snapshots -> the Feast online store, in Feast's own layout, at store speed.

Feast 0.67's `materialize` builds one protobuf object per value in Python and, on SQLite, runs one statement per
entity per feature (~10 k rows/s into Redis, ~5 k into SQLite, measured). This package writes the *same
bytes in the same places*, encoded column-wise with Arrow/NumPy and streamed in bounded Arrow batches, and
rewrites only the rows whose values changed since the snapshot the store already holds.

How it is split, in the order a run goes through it:

* `run` — the entry points: `bulk_materialize`, `online_state`, `clear_online_state`.
* `plan` — a view's plan from the Feast registry (columns, name in the store, layout fingerprint).
* `write_view` — one view: full or incremental, stream, encode, guard, write, record its state.
* `diff` — the snapshot read through DuckDB, diffed exactly against the recorded one, in key order.
* `encoders` — Arrow columns -> serialized `ValueProto`s and entity keys (`binary`: the Arrow byte helpers).
* `verify` — the layout guard: sampled rows of every batch byte-identical to Feast's own conversion.
* `target` — what a store must do (and the writer thread); `redis_target` (HSET / RESTORE, pipelined RESP over
  `resp`) and `sqlite_target` (upsert or rebuild; `sqlite_wal`: checkpoints off the writer's thread).
* `reports`, `errors` — what a run reports and records, and what can go wrong.

Incremental runs: after a view is fully written the store records which snapshot it now holds (the "bulk state": a
small Redis key or SQLite table beside Feast's). The next run diffs the new snapshot against it and rewrites only
changed rows; unchanged rows keep their stored values and event timestamp. Expiry follows Feast's: Redis keys get
`EXPIRE key_ttl_seconds` on every write and unchanged keys the same `EXPIRE` without a rewrite; SQLite has no TTL,
so entities absent from the snapshot for longer than `settings.online_key_ttl` are deleted.
"""

from __future__ import annotations

from freqcap.adapters.feast.bulk.diff import record_batches, source_query
from freqcap.adapters.feast.bulk.encoders import Encoders, encode_batch
from freqcap.adapters.feast.bulk.errors import (
    BulkMaterializeError,
    LayoutMismatchError,
    StaleSnapshotError,
    UnsupportedOnlineStoreError,
)
from freqcap.adapters.feast.bulk.plan import LAYOUT_VERSION, serving_features, view_plan
from freqcap.adapters.feast.bulk.redis_target import STATE_KEY_PREFIX, RedisTarget
from freqcap.adapters.feast.bulk.reports import BulkReport, BulkState, ViewReport
from freqcap.adapters.feast.bulk.resp import buffer_view, send_and_check
from freqcap.adapters.feast.bulk.run import bulk_materialize, clear_online_state, online_state
from freqcap.adapters.feast.bulk.sqlite_target import STATE_TABLE, SqliteTarget
from freqcap.adapters.feast.bulk.write_view import REBUILD_SHARE

__all__ = [
    "LAYOUT_VERSION",
    "REBUILD_SHARE",
    "STATE_KEY_PREFIX",
    "STATE_TABLE",
    "BulkMaterializeError",
    "BulkReport",
    "BulkState",
    "Encoders",
    "LayoutMismatchError",
    "RedisTarget",
    "SqliteTarget",
    "StaleSnapshotError",
    "UnsupportedOnlineStoreError",
    "ViewReport",
    "buffer_view",
    "bulk_materialize",
    "clear_online_state",
    "encode_batch",
    "online_state",
    "record_batches",
    "send_and_check",
    "serving_features",
    "source_query",
    "view_plan",
]
