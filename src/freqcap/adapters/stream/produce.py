"""`freqcap stream produce`: replay simulator events into the Redis stream at a given rate.

Events go to their user's partition (`stream.partitions`), in event-time order (optionally only those after `since`, e.g. the batch cut-off), pipelined in small
chunks paced to `rate` events per second (0: as fast as Redis takes them). The producer declares the stream's
coverage in `<stream_key>:meta` (`coverage_start_us`: the stream holds every event with a later event time), which
the worker passes on to serving's batch/stream seam.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from freqcap.domain.stream.messages import event_fields
from freqcap.domain.stream.partitions import partition_of, stream_name

log = logging.getLogger(__name__)
_US = 1_000_000


@dataclass(frozen=True)
class ProduceReport:
    events: int
    duplicates: int
    seconds: float

    @property
    def rate(self) -> float:
        return (self.events + self.duplicates) / self.seconds if self.seconds > 0 else float("inf")


def load_events(events_dir: Path, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
    """Events of a directory in event-time order as stream message fields."""
    where = []
    if since is not None:
        where.append(f"event_ts > TIMESTAMPTZ '{since.isoformat()}'")
    if until is not None:
        where.append(f"event_ts <= TIMESTAMPTZ '{until.isoformat()}'")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    table = con.sql(
        f"SELECT * FROM read_parquet('{Path(events_dir).as_posix()}/**/*.parquet', hive_partitioning=true, "
        f"union_by_name=true) {clause} ORDER BY event_ts, event_id"
    ).to_arrow_table()
    return [event_fields(row) for row in table.to_pylist()]


def produce(
    client: Any,
    stream_key: str,
    messages: list[dict],
    *,
    rate: float = 0.0,
    chunk: int = 500,
    duplicate_share: float = 0.0,
    seed: int = 0,
    coverage_start: datetime | None = None,
    maxlen: int | None = None,
    partitions: int = 1,
) -> ProduceReport:
    """XADD `messages` (plus re-sent duplicates) paced to `rate`/s, each to its user's partition
    (`freqcap.domain.stream.partitions`); declares coverage first."""
    rng = random.Random(seed)
    if coverage_start is not None:
        client.hset(f"{stream_key}:meta", "coverage_start_us", int(coverage_start.timestamp() * _US))
    sent = dups = 0
    started = time.perf_counter()
    last_log = started
    i = 0
    while i < len(messages):
        batch = messages[i : i + chunk]
        i += len(batch)
        extra = [m for m in batch if duplicate_share and rng.random() < duplicate_share]
        pipe = client.pipeline(transaction=False)
        for m in batch + extra:
            key = stream_name(stream_key, partition_of(str(m.get("user_id", "")), partitions), partitions)
            pipe.xadd(key, m, maxlen=maxlen, approximate=True) if maxlen else pipe.xadd(key, m)
        pipe.execute()
        sent += len(batch)
        dups += len(extra)
        if rate > 0:
            due = started + (sent + dups) / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        now = time.perf_counter()
        if now - last_log > 10:
            last_log = now
            log.info("produced %d/%d events (%.0f/s)", sent, len(messages), (sent + dups) / (now - started))
    return ProduceReport(sent, dups, time.perf_counter() - started)
