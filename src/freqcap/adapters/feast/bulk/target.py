"""What an online store must do for the bulk writer (`Target`), and the background thread that writes for it.

A target knows its store's names and layout (`store_name`, `verify_row`), keeps the bulk state beside Feast's
data (`read_state` / `write_state` / `clear_state`), and writes encoded batches between `begin` and `finish`
(or `abort` after an error). Unchanged rows of an incremental run go to `touch` (Redis refreshes their TTL and
reports keys that vanished); `cleanup` removes what expiry would have removed (SQLite). The two targets are
`RedisTarget` and `SqliteTarget`; `run.open_target` picks one for the store.

Writes run on a `Worker` thread, so encoding the next batch overlaps writing this one; at most two encoded batches
wait, which bounds memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from freqcap.adapters.feast.bulk.encoders import Batch
from freqcap.adapters.feast.bulk.errors import UnsupportedOnlineStoreError
from freqcap.adapters.feast.bulk.plan import ViewPlan
from freqcap.adapters.feast.bulk.reports import BulkState


class Worker:
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


class Target:
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

    def begin(self, plan: ViewPlan, as_of: datetime) -> None:
        raise NotImplementedError

    def write(self, batch: Batch) -> None:
        raise NotImplementedError

    def touch(self, batch: pa.RecordBatch, plan: ViewPlan) -> np.ndarray:
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

    def verify_row(self, batch, plan, row, entity_key, values, event_ts, created_ts) -> None:
        """Raise `online_format.FormatMismatch` if what this store adds to row `row` differs from Feast's."""
        raise NotImplementedError

    def cleanup(self, plan: ViewPlan, snapshot: Path, as_of: datetime, con: duckdb.DuckDBPyConnection) -> int:
        return 0

    def close(self) -> None:
        pass
