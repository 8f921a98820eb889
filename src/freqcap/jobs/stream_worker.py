"""`freqcap stream`: the long-running worker. It owns some of the stream's partitions (leases,
`freqcap.adapters.stream.ownership`) and runs each through `freqcap.jobs.stream_partition.PartitionConsumer`:
read large batches, decide them in process, write each micro-batch with one atomic write, push, acknowledge.

Crash safety: a partition's state, dedup marks, watermark, counters and the id of the last applied entry are
written together, atomically, before anything is acknowledged; entries at or before that id are never applied
again; a new owner claims every entry its predecessor left pending before reading anything new, so events are
applied in stream order whoever read them. Kill -9 anywhere, restart under the same name or another, move
partitions between workers: the counts equal a single delivery of every event
(tests/integration/test_stream_crash.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from freqcap.adapters.feast.native import row_codec_name
from freqcap.config import StreamConfig
from freqcap.domain.privacy import Pseudonymizer
from freqcap.jobs.stream_partition import LostPartition, PartitionConsumer

log = logging.getLogger(__name__)
_US = 1_000_000


@dataclass
class WorkerStats:
    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    dead_letters: int = 0
    skipped: int = 0  # entries an earlier flush had applied (a replay after a crash): acknowledged only
    pushed: int = 0
    batches: int = 0
    takeovers: int = 0
    # `stream.overlap_push`: pushes the next micro-batch's decisions ran beside (awaited before its commits), and
    # how long the consumer then still waited for them — steadily above zero: Redis, not the worker, is the limit.
    pushes_overlapped: int = 0
    push_wait_seconds: float = 0.0
    # pair states dropped from memory to stay within `stream.cache_pairs` (read back from Redis when next needed):
    # steadily high, the cache is too small for the partition's active pairs
    evicted: int = 0
    dead_by_reason: dict[str, int] = field(default_factory=dict)


class StreamWorker:
    """One worker process. `run()` loops until `stop()` (or, with `until_caught_up`, until its partitions are
    drained). `open_partition(p)` gives a partition's (transport, state)."""

    def __init__(
        self,
        cfg: StreamConfig,
        ownership: Any,
        open_partition: Callable[[int], tuple[Any, Any]],
        pusher: Any,
        *,
        status_client: Any = None,
        allowed_formats: tuple[str, ...] | None = None,
        coverage_key: str | None = None,
        crash_hook: Callable[[str], None] | None = None,
        pseudonymizer: Pseudonymizer | None = None,
    ):
        self.cfg = cfg
        self.pseudonymizer = pseudonymizer
        self.ownership = ownership
        self.open_partition = open_partition
        self.pusher = pusher
        self.status_client = status_client
        self.allowed_formats = allowed_formats
        self.coverage_key = coverage_key or f"{cfg.stream_key}:meta"
        self.crash_hook = crash_hook
        self.stats = WorkerStats()
        self.consumers: dict[int, PartitionConsumer] = {}
        self._assigned: list[int] = []
        self._stop = threading.Event()
        self._last_manage = float("-inf")
        self._last_log = time.monotonic()
        self._pushed_reported = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self, until_caught_up: bool = False, max_seconds: float | None = None) -> WorkerStats:
        started = time.monotonic()
        log.info("stream worker: row codec %s (freqcap.adapters.feast.native)", row_codec_name())
        try:
            while not self._stop.is_set():
                self._manage()
                idle = self._round()
                self._maybe_log()
                if until_caught_up and idle and self._drained():
                    break
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
            for consumer in list(self.consumers.values()):
                self._flush_and_release(consumer)
        finally:
            self.ownership.leave()
        return self.stats

    def _round(self) -> bool:
        """One read of every owned partition; True when none had anything."""
        if not self.consumers:
            time.sleep(min(0.2, self.cfg.block_ms / 1000 or 0.05))
            return True
        got = 0
        block = self.cfg.block_ms // len(self.consumers)
        for p, consumer in list(self.consumers.items()):
            try:
                got += consumer.step(block)
            except LostPartition as exc:
                log.warning("%s: giving it up", exc)
                del self.consumers[p]
                continue
            self._write_status(consumer)
        return got == 0

    def _drained(self) -> bool:
        """Every partition assigned to this worker is owned by it and drained (a worker assigned nothing, e.g.
        while a dead worker's membership has not expired yet, is not done)."""
        mine = set(self.consumers)
        return bool(self._assigned) and set(self._assigned) <= mine and all(c.drained for c in self.consumers.values())

    def _manage(self) -> None:
        """Heartbeat, renew held leases, give back partitions assigned elsewhere, take free assigned ones."""
        now = time.monotonic()
        if now - self._last_manage < self.ownership.renew_every_s:
            return
        self._last_manage = now
        self._assigned = assigned = self.ownership.heartbeat()
        for p, consumer in list(self.consumers.items()):
            if p not in assigned:
                log.info("partition %d is assigned to another worker: releasing it", p)
                self._flush_and_release(consumer)
            elif not self.ownership.renew(p, consumer.token):
                log.warning("partition %d: lease lost, leaving its pending entries to the new owner", p)
                del self.consumers[p]
        for p in assigned:
            if p in self.consumers:
                continue
            token = self.ownership.acquire(p)
            if token is None:
                continue
            transport, state = self.open_partition(p)
            consumer = PartitionConsumer(
                self.cfg,
                p,
                token,
                transport,
                state,
                self.pusher,
                self.stats,
                allowed_formats=self.allowed_formats,
                crash_hook=self.crash_hook,
                pseudonymizer=self.pseudonymizer,
            )
            consumer.start()
            self.consumers[p] = consumer
            self.stats.takeovers += 1
            log.info("partition %d acquired (%s)", p, token)

    def _flush_and_release(self, consumer: PartitionConsumer) -> None:
        try:
            consumer.flush(final=True)
            self._write_status(consumer)
        except LostPartition as exc:
            log.warning("%s", exc)
        self.consumers.pop(consumer.partition, None)
        self.ownership.release(consumer.partition, consumer.token)

    def _write_status(self, consumer: PartitionConsumer) -> None:
        """Heartbeat, freshness (when the partition is drained and everything read is pushed) and coverage."""
        client = self.status_client
        if client is None:
            return
        key = consumer.state.status_key
        mapping: dict[str, Any] = {"heartbeat_us": int(time.time() * _US), "owner": self.ownership.name}
        if consumer.caught_up_at is not None and not consumer.pending:
            mapping["fresh_at_us"] = int(consumer.caught_up_at * _US)
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, mapping=mapping)
        pushed = self.stats.pushed - self._pushed_reported
        if pushed:
            pipe.hincrby(key, "pushed", pushed)
            self._pushed_reported = self.stats.pushed
        pipe.hget(self.coverage_key, "coverage_start_us")
        coverage = pipe.execute()[-1]
        if coverage is not None and coverage != consumer.coverage_written:
            client.hset(key, "coverage_start_us", coverage)
            consumer.coverage_written = coverage
        elif coverage is None and consumer.coverage_written is None and consumer.watermark_us:
            # No producer declared coverage: from about the first event this partition applied.
            lateness = int(self.cfg.seconds("allowed_lateness") * _US)
            client.hsetnx(key, "coverage_start_us", consumer.watermark_us - lateness)
            consumer.coverage_written = b""

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last_log < 10:
            return
        self._last_log = now
        s = self.stats
        log.info(
            "stream: partitions %s, %d messages, %d applied, %d duplicates, %d late, %d dead letters, %d pushed",
            sorted(self.consumers),
            s.messages,
            s.applied,
            s.duplicates,
            s.late,
            s.dead_letters,
            s.pushed,
        )
