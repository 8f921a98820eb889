"""Where stream messages come from. The worker sees only `Transport`; a Kafka consumer fits the same interface
(read a batch, acknowledge it after it is applied, dead-letter what cannot be applied, say whether it is caught up).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb
import redis

from freqcap.domain.stream.messages import event_fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    id: Any  # transport-specific (a Redis stream id, a Kafka offset, a row number)
    fields: dict[Any, Any] = field(default_factory=dict)


class Transport(Protocol):
    def read(self, max_count: int, block_ms: int) -> list[Message]:
        """Up to `max_count` messages not yet acknowledged by this consumer (waiting up to `block_ms`)."""

    def ack(self, ids: Sequence[Any]) -> None:
        """The messages are applied (or dead-lettered): never deliver them again."""

    def dead_letter(self, message: Message, reason: str) -> None:
        """Keep a message that cannot be applied, with the reason (then `ack` it)."""

    @property
    def caught_up(self) -> bool:
        """True when the last `read` returned everything the source held at the time it was issued."""

    def close(self) -> None: ...


def default_consumer_name() -> str:
    """Stable across restarts on one host, so a restarted worker resumes its own pending entries at once."""
    return f"{socket.gethostname()}-worker"


class RedisStreamTransport:
    """A Redis Streams consumer group: XREADGROUP, XACK, pending entries of this consumer first after a restart,
    and XAUTOCLAIM of entries left pending by a dead consumer for longer than `claim_idle_ms`."""

    def __init__(
        self, client: Any, stream: str, group: str, consumer: str, dead_letter_key: str, claim_idle_ms: int = 30_000
    ):
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.dead_letter_key = dead_letter_key
        self.claim_idle_ms = claim_idle_ms
        self._caught_up = False
        self._own_pending = True  # first drain what this consumer had been given before a restart
        self._claim_cursor = "0-0"
        self._last_claim = 0.0
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, max_count: int, block_ms: int) -> list[Message]:
        if self._own_pending:
            reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=max_count)
            entries = reply[0][1] if reply else []
            if entries:
                self._caught_up = False
                return [Message(i, f) for i, f in entries]
            self._own_pending = False
        now = time.monotonic()
        if now - self._last_claim >= self.claim_idle_ms / 1000 / 2:
            self._last_claim = now
            cursor, claimed, *_ = self.client.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, self._claim_cursor, count=max_count
            )
            self._claim_cursor = cursor
            if claimed:
                log.info("reclaimed %d pending entries of an idle consumer", len(claimed))
                self._caught_up = False
                return [Message(i, f) for i, f in claimed if f is not None]
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=max_count, block=block_ms or None
        )
        entries = reply[0][1] if reply else []
        self._caught_up = len(entries) < max_count
        return [Message(i, f) for i, f in entries]

    def ack(self, ids: Sequence[Any]) -> None:
        if ids:
            self.client.xack(self.stream, self.group, *ids)

    def dead_letter(self, message: Message, reason: str) -> None:
        fields = {k: v for k, v in message.fields.items()}
        fields[b"_reason"] = reason
        fields[b"_source_id"] = message.id
        fields[b"_source_stream"] = self.stream
        self.client.xadd(self.dead_letter_key, fields, maxlen=1_000_000, approximate=True)

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    def close(self) -> None:
        pass


class DirectoryReplayTransport:
    """Embedded mode: the events of a Parquet directory, in event-time order, as messages; dead letters go to a
    JSON-lines file. Nothing to acknowledge (a replay restarts from the beginning; state dedups)."""

    def __init__(self, events_dir: Path, dead_letter_path: Path, batch_rows: int = 50_000):
        self.dead_letter_path = dead_letter_path
        self._rows = self._iter_rows(events_dir, batch_rows)
        self._pending: list[Message] = []
        self._done = False

    @staticmethod
    def _iter_rows(events_dir: Path, batch_rows: int) -> Iterator[Message]:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        cursor = con.execute(
            f"SELECT * FROM read_parquet('{Path(events_dir).as_posix()}/**/*.parquet', hive_partitioning=true, "
            "union_by_name=true) ORDER BY event_ts, event_id"
        )
        cols = [d[0] for d in cursor.description]
        n = 0
        while True:
            batch = cursor.fetchmany(batch_rows)
            if not batch:
                break
            for values in batch:
                n += 1
                yield Message(n, event_fields(dict(zip(cols, values, strict=True))))

    def read(self, max_count: int, block_ms: int) -> list[Message]:
        out = []
        for message in self._rows:
            out.append(message)
            if len(out) >= max_count:
                break
        self._done = len(out) < max_count
        return out

    def ack(self, ids: Sequence[Any]) -> None:
        pass

    def dead_letter(self, message: Message, reason: str) -> None:
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        with self.dead_letter_path.open("a") as f:
            f.write(json.dumps({"id": message.id, "reason": reason, "fields": message.fields}, default=str) + "\n")

    @property
    def caught_up(self) -> bool:
        return self._done

    def close(self) -> None:
        pass
