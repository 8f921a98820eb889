"""`freqcap stream`: the long-running worker. Read -> validate -> apply (dedup, buckets) -> ack -> push -> status.

Crash safety: the state lives in Redis and each micro-batch is applied atomically and idempotently before its
messages are acknowledged; pushes write a pair's whole current state, so repeating one is harmless; a pair leaves
the dirty set only if it did not change again while it was being pushed. Kill -9 anywhere, restart, and the
counts converge to exactly what a single delivery would have produced (tests/integration/test_stream.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from freqcap.adapters.feast.stream_push import Pusher, pair_row
from freqcap.adapters.stream.state import LATE, State
from freqcap.adapters.stream.transport import Message, Transport
from freqcap.config import StreamConfig
from freqcap.domain.stream.buckets import prune_horizon
from freqcap.domain.stream.messages import StreamEvent, parse_message

log = logging.getLogger(__name__)
_US = 1_000_000


@dataclass
class WorkerStats:
    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    dead_letters: int = 0
    pushed: int = 0
    batches: int = 0
    dead_by_reason: dict[str, int] = field(default_factory=dict)


class StreamWorker:
    """One consumer. `run()` loops until `stop()` (or, with `until_caught_up`, until the source is drained)."""

    def __init__(
        self,
        cfg: StreamConfig,
        transport: Transport,
        state: State,
        pusher: Pusher,
        *,
        status_client: Any = None,
        allowed_formats: tuple[str, ...] | None = None,
        coverage_key: str | None = None,
        on_batch: Callable[[WorkerStats], None] | None = None,
    ):
        self.cfg = cfg
        self.transport = transport
        self.state = state
        self.pusher = pusher
        self.status_client = status_client
        self.allowed_formats = allowed_formats
        self.coverage_key = coverage_key or f"{cfg.stream_key}:meta"
        self.on_batch = on_batch
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._bucket = int(cfg.seconds("bucket"))
        self._retention = cfg.seconds("retention")
        self._push_every = cfg.seconds("push_interval")
        self._last_push = 0.0
        self._last_log = time.monotonic()
        self._status_key = f"{cfg.state_prefix}:status"

    def stop(self) -> None:
        self._stop.set()

    def run(self, until_caught_up: bool = False, max_seconds: float | None = None) -> WorkerStats:
        started = time.monotonic()
        while not self._stop.is_set():
            read_started = time.time()
            messages = self.transport.read(self.cfg.batch_size, self.cfg.block_ms)
            self._process(messages)
            caught_up = self.transport.caught_up
            now = time.monotonic()
            if caught_up or now - self._last_push >= self._push_every:
                self.push_dirty(drain=caught_up)
                self._last_push = now
            self._write_status(read_started if caught_up else None)
            if self.on_batch:
                self.on_batch(self.stats)
            self._maybe_log()
            if until_caught_up and caught_up and not messages:
                break
            if max_seconds is not None and now - started > max_seconds:
                break
        self.push_dirty(drain=True)
        self._write_status(None)
        return self.stats

    def _process(self, messages: list[Message]) -> None:
        if not messages:
            return
        self.stats.messages += len(messages)
        events: list[StreamEvent] = []
        sources: list[Message] = []
        for message in messages:
            parsed = parse_message(message.fields, self.allowed_formats)
            if isinstance(parsed, str):
                self._dead(message, parsed)
            else:
                events.append(parsed)
                sources.append(message)
        results = self.state.apply(events)
        for message, result in zip(sources, results, strict=True):
            if result == LATE:
                self._dead(message, "late")
        self.stats.applied += sum(1 for r in results if r == 0)
        self.stats.duplicates += sum(1 for r in results if r == 1)
        self.stats.late += sum(1 for r in results if r == LATE)
        self.transport.ack([m.id for m in messages])
        self.stats.batches += 1

    def _dead(self, message: Message, reason: str) -> None:
        self.transport.dead_letter(message, reason)
        self.stats.dead_letters += 1
        key = reason.split("_", 1)[0] if reason.startswith(("missing_", "too_long_", "bad_encoding_")) else reason
        self.stats.dead_by_reason[key] = self.stats.dead_by_reason.get(key, 0) + 1
        if self.status_client is not None:
            self.status_client.hincrby(self._status_key, "dead_letters", 1)

    def push_dirty(self, drain: bool = False, chunk: int = 5_000) -> int:
        """Push changed pairs (all of them when `drain`), then remove them from the dirty set."""
        total = 0
        while True:
            dirty = self.state.dirty(chunk)
            if not dirty:
                break
            watermark = self.state.watermark_us()
            horizon = prune_horizon(watermark, self._retention, self._bucket) if watermark else 0
            if hasattr(self.pusher, "push_dirty"):  # encoded and written inside Redis (RedisLuaPusher)
                total += self.pusher.push_dirty(dirty, horizon)
                if not drain or len(dirty) < chunk:
                    break
                continue
            keys = [k for k, _ in dirty]
            pairs = self.state.read_pairs(keys)
            rows = []
            stale = []
            for key, pair in zip(keys, pairs, strict=True):
                if pair is None:
                    continue
                row, old = pair_row(pair, horizon)
                rows.append((pair, row))
                if old:
                    stale.append((key, old))
            self.pusher.push(rows)
            self.state.prune(stale)
            self.state.ack_pushed(dirty)
            total += len(rows)
            if not drain or len(dirty) < chunk:
                break
        self.stats.pushed += total
        if total and self.status_client is not None:
            self.status_client.hincrby(self._status_key, "pushed", total)
        return total

    def _write_status(self, fresh_at: float | None) -> None:
        if self.status_client is None:
            return
        mapping = {"heartbeat_us": int(time.time() * _US)}
        if fresh_at is not None:
            mapping["fresh_at_us"] = int(fresh_at * _US)
        pipe = self.status_client.pipeline(transaction=False)
        pipe.hset(self._status_key, mapping=mapping)
        pipe.hget(self.coverage_key, "coverage_start_us")
        _, coverage = pipe.execute()
        if coverage is not None:
            self.status_client.hset(self._status_key, "coverage_start_us", coverage)
        else:
            watermark = self.state.watermark_us()
            if watermark:  # no producer declared coverage: from about the first event this group applied
                lateness = int(self.cfg.seconds("allowed_lateness") * _US)
                self.status_client.hsetnx(self._status_key, "coverage_start_us", watermark - lateness)

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last_log < 10:
            return
        self._last_log = now
        s = self.stats
        log.info(
            "stream: %d messages, %d applied, %d duplicates, %d late, %d dead letters, %d pairs pushed",
            s.messages,
            s.applied,
            s.duplicates,
            s.late,
            s.dead_letters,
            s.pushed,
        )
