"""Where stream messages come from. The worker sees only `Transport`; a Kafka consumer fits the same interface
(read a batch, acknowledge it after it is applied, dead-letter what cannot be applied, say whether it is caught up).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import duckdb
import redis

from freqcap.adapters.stream.resp import pack, round_trip
from freqcap.domain.stream.messages import event_fields

log = logging.getLogger(__name__)


class Message(NamedTuple):
    """One stream entry (a named tuple: one is built per entry read, at a third of a frozen dataclass's cost)."""

    id: str  # a Redis stream id `<ms>-<seq>` (a replay numbers its rows the same way)
    fields: dict[Any, Any]


class Transport(Protocol):
    def take_over(self) -> int:
        """Become the partition's only reader: claim what earlier readers left unacknowledged (read first)."""

    def read(self, max_count: int, block_ms: int) -> list[Message]:
        """Up to `max_count` messages not yet acknowledged by this consumer (waiting up to `block_ms`), in stream
        order: entries pending for this consumer first, then new ones."""

    def ack(self, ids: Sequence[str]) -> None:
        """The messages are applied (or dead-lettered): never deliver them again."""

    def dead_letter(self, dead: Sequence[tuple[Message, str]]) -> None:
        """Keep messages that cannot be applied, each with its reason; repeating it for the same messages (a replay
        after a crash) adds nothing."""

    @property
    def caught_up(self) -> bool:
        """True when the last `read` returned everything the source held at the time it was issued."""

    def close(self) -> None: ...


def default_consumer_name() -> str:
    """Stable across restarts on one host, so a restarted worker resumes its own pending entries at once."""
    return f"{socket.gethostname()}-worker"


def _entries(reply: Any) -> list[Message]:
    """Raw XREADGROUP reply -> messages (an entry deleted from the stream comes back with no fields)."""
    if not reply:
        return []
    out = []
    for raw_id, flat in reply[0][1]:
        fields = dict(zip(flat[0::2], flat[1::2], strict=True)) if flat else {}
        out.append(Message(raw_id.decode(), fields))
    return out


class RedisStreamTransport:
    """One partition's stream through a consumer group: after `take_over` every pending entry of the group is this
    consumer's, read in stream order before anything new (`XREADGROUP` from `0`, then `>`); dead letters go to the
    partition's dead-letter stream under the source entry's id (idempotent)."""

    def __init__(self, client: Any, stream: str, group: str, consumer: str, dead_letter_key: str):
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.dead_letter_key = dead_letter_key
        self._caught_up = False
        self._cursor: str | None = "0"  # own pending entries after this id; None once all were read
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def take_over(self) -> int:
        """Claim every entry pending in the group (left by earlier owners, dead or fenced) for this consumer, so
        they are read before anything new: events are applied in stream order whoever read them first."""
        cursor, claimed = "0-0", 0
        while True:
            cmd = pack(b"XAUTOCLAIM", self.stream, self.group, self.consumer, 0, cursor, b"COUNT", 10_000, b"JUSTID")
            reply = round_trip(self.client, [cmd])[0]
            cursor = reply[0].decode()
            claimed += len(reply[1])
            if cursor == "0-0":
                break
        if claimed:
            log.info("%s: took over %d pending entries", self.stream, claimed)
        self._cursor = "0"
        return claimed

    def read(self, max_count: int, block_ms: int) -> list[Message]:
        if self._cursor is not None:
            cmd = pack(b"XREADGROUP", b"GROUP", self.group, self.consumer, b"COUNT", max_count, b"STREAMS",
                       self.stream, self._cursor)  # fmt: skip
            messages = _entries(round_trip(self.client, [cmd])[0])
            if messages:
                self._cursor = messages[-1].id
                self._caught_up = False
                return messages
            self._cursor = None
        args: list[Any] = [b"XREADGROUP", b"GROUP", self.group, self.consumer, b"COUNT", max_count]
        if block_ms:
            args += [b"BLOCK", block_ms]
        messages = _entries(round_trip(self.client, [pack(*args, b"STREAMS", self.stream, b">")])[0])
        self._caught_up = len(messages) < max_count
        return messages

    def ack(self, ids: Sequence[str]) -> None:
        for i in range(0, len(ids), 10_000):
            round_trip(self.client, [pack(b"XACK", self.stream, self.group, *ids[i : i + 10_000])])

    def dead_letter(self, dead: Sequence[tuple[Message, str]]) -> None:
        if not dead:
            return
        commands = [self._xadd(message, reason, message.id) for message, reason in dead]
        replies = round_trip(self.client, commands, raise_errors=False)
        for (message, reason), reply in zip(dead, replies, strict=True):
            if not isinstance(reply, Exception):
                continue
            if "equal or smaller" not in str(reply):
                raise reply
            # Already there (a replay), unless the stream holds newer entries written some other way (an older
            # worker's auto ids): then add it under a new id rather than lose it.
            if not self.client.xrange(self.dead_letter_key, message.id, message.id):
                round_trip(self.client, [self._xadd(message, reason, "*")])

    def _xadd(self, message: Message, reason: str, entry_id: str) -> bytes:
        args: list[Any] = [b"XADD", self.dead_letter_key, b"MAXLEN", b"~", 1_000_000, entry_id]
        for k, v in message.fields.items():
            args += [k, v]
        args += [b"_reason", reason, b"_source_id", message.id, b"_source_stream", self.stream]
        return pack(*args)

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
                yield Message(f"{n}-0", event_fields(dict(zip(cols, values, strict=True))))

    def read(self, max_count: int, block_ms: int) -> list[Message]:
        out = []
        for message in self._rows:
            out.append(message)
            if len(out) >= max_count:
                break
        self._done = len(out) < max_count
        return out

    def take_over(self) -> int:
        return 0

    def ack(self, ids: Sequence[str]) -> None:
        pass

    def dead_letter(self, dead: Sequence[tuple[Message, str]]) -> None:
        if not dead:
            return
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        with self.dead_letter_path.open("a") as f:
            # `dead_at` (wall clock, UTC) dates the line for retention (freqcap.adapters.stream.dead_letters).
            dead_at = datetime.now(UTC).isoformat()
            for message, reason in dead:
                record = {"id": message.id, "reason": reason, "dead_at": dead_at, "fields": message.fields}
                f.write(json.dumps(record, default=str) + "\n")

    @property
    def caught_up(self) -> bool:
        return self._done

    def close(self) -> None:
        pass
