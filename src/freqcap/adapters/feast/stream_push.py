"""Pushing changed pairs to Feast's stream views (one row per pair: bucket arrays + last impression).

Two writers, same stored bytes (tests/integration/test_stream.py compares them field by field):
* `FeastPusher` — `FeatureStore.push` on the view's push source (any online store; embedded SQLite).
* `RedisDirectPusher` — the path `push` ends in for Feast's Redis store with `skip_dedup` (one HSET of every
  feature + `_ts:<view>`, then EXPIRE), with keys, fields and values from `freqcap.adapters.feast.online_format`,
  without the DataFrame -> Arrow -> proto round trip that caps `push` near 15-20 k rows/s (measured on Feast 0.67);
  all rows of a flush in one pipelined write; on a Redis Cluster (`topology`) one write per master, every master
  written before any reply is read (`freqcap.adapters.feast.cluster_routing.round_trip_by_node`).

The row's event timestamp is the push's wall-clock time, strictly increasing per worker: Feast's Redis store drops a
write whose timestamp is not newer than the stored one, and a late event can change a pair without moving its
newest event time.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pandas as pd
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from freqcap.adapters.feast import online_format as fmt
from freqcap.adapters.feast.cluster_routing import ClusterTopology, key_slot, round_trip_by_node
from freqcap.adapters.feast.native import row_codec
from freqcap.adapters.feast.repo.feature_views import STREAM_FEATURES, stream_view_name
from freqcap.adapters.stream.resp import round_trip
from freqcap.domain.stream.buckets import KIND_PREFIX, PairCounts

ENTITY_COLUMN = {"advertiser": "advertiser_id", "campaign": "campaign_id", "ad": "ad_id"}


@dataclass(frozen=True)
class PairState:
    """One (user, entity) pair's counters as pushed: kind -> {bucket end: count}, last impression (µs)."""

    level: str
    user_id: str
    entity_id: str
    buckets: dict[str, dict[int, int]]
    last_imp_us: int | None


def pair_row(pair: PairState, oldest_end_kept: int) -> tuple[dict[str, Any], list[str]]:
    """The stream-view feature values of one pair (buckets older than the horizon dropped) and the state fields
    to prune."""
    row: dict[str, Any] = {}
    stale: list[str] = []
    for kind, prefix in KIND_PREFIX.items():
        buckets = pair.buckets.get(kind) or {}
        ends = sorted(buckets)
        if ends and ends[0] < oldest_end_kept:
            stale += [f"{kind}:{e}" for e in ends if e < oldest_end_kept]
            ends = [e for e in ends if e >= oldest_end_kept]
        counts = [buckets[e] for e in ends]
        if 0 in counts:
            ends = [e for e, n in zip(ends, counts, strict=True) if n]
            counts = [n for n in counts if n]
        row[f"{prefix}_buckets"] = ends
        row[f"{prefix}_counts"] = counts
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
    """Feast's Redis layout written directly (see module docstring): to `client` (a redis-py client of one server)
    or, when `topology` is given, to the masters of a Redis Cluster by each key's slot."""

    def __init__(self, store: Any, client: Any, key_ttl_seconds: int | None, topology: ClusterTopology | None = None):
        self.store = store
        self.client = client
        self.topology = topology
        self.clock = _Clock()
        self.key_ttl = key_ttl_seconds
        config = store.config
        self.fields: dict[str, fmt.RedisFields] = {}
        self._keys: dict[str, Any] = {}
        for level, column in ENTITY_COLUMN.items():
            view = store.get_feature_view(stream_view_name(level))
            have = [f.name for f in view.features]
            if list(STREAM_FEATURES) != have:
                name = fmt.redis_view_name(view, config)
                raise RuntimeError(f"stream view {name} has features {have}, expected {list(STREAM_FEATURES)}")
            self.fields[level] = fmt.redis_fields(view, STREAM_FEATURES, config)
            self._keys[level], _ = fmt.redis_key_builder(config, ("user_id", column))
        self._rng = random.Random(0)
        self._refreshed: dict[bytes, float] = {}  # Feast key -> when this process last refreshed its TTL
        self._wrapped: dict[bytes, bytes] = {}  # value -> the value as a RESP bulk string
        self._key_memo: dict[tuple[str, str, str], bytes] = {}
        # HSET <key> _ts:<view> <ts> <field> <value> ...: the command header and the field names, pre-packed.
        n_args = 2 + 2 * (1 + len(STREAM_FEATURES))
        self._packed = {
            level: (b"*%d\r\n$4\r\nHSET\r\n" % n_args, (_bulk(f.ts), *[_bulk(name) for name in f.features]))
            for level, f in self.fields.items()
        }
        self._native = row_codec()  # the HSET built in C when this install has the codec (same bytes)
        # HMGET <key> <the stream view's fields>: header and field names pre-packed (`read_counts`).
        self._hmget = {
            level: (b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(f.features)), b"".join(_bulk(n) for n in f.features))
            for level, f in self.fields.items()
        }

    def _key(self, pair: tuple[str, str, str]) -> bytes:
        """`redis_key` of a pair, memoized (a pair read on a miss is written soon after; bounded)."""
        key = self._key_memo.get(pair)
        if key is None:
            if len(self._key_memo) > 500_000:
                self._key_memo.clear()
            key = self._key_memo[pair] = self._keys[pair[0]](pair[1], pair[2])
        return key

    def redis_key(self, level: str, user_id: str, entity_id: str) -> bytes:
        """Feast's Redis key of (user, entity): the fast builder, self-checked against Feast's `_redis_key`."""
        return self._keys[level](user_id, entity_id)

    def encode(self, rows: Sequence[dict[str, Any]]) -> list[tuple[bytes, ...]]:
        """Serialized ValueProtos per row, in STREAM_FEATURES order (`online_format`'s encoders), then the first
        row and a sample checked byte for byte against Feast's own conversion; any difference raises."""
        out = []
        for row in rows:
            values = [fmt.int64_list(row[f]) for f in STREAM_FEATURES[:-1]]
            values.append(fmt.unix_timestamp(row["last_imp_ts"]))
            out.append(tuple(values))
        for i in {0, len(rows) - 1, self._rng.randrange(len(rows))} if rows else ():
            if out[i] != self.reference_encode(rows[i]):
                raise fmt.FormatMismatch(f"stream push encoding differs from Feast's for {rows[i]!r}")
        return out

    @staticmethod
    def reference_encode(row: dict[str, Any]) -> tuple[bytes, ...]:
        """Feast's own conversion of one row (what `push` stores; a missing time is the NaT sentinel)."""
        values = [fmt.feast_value_bytes([list(row[f])], ValueType.INT64_LIST)[0] for f in STREAM_FEATURES[:-1]]
        ts = row["last_imp_ts"]
        values.append(
            fmt.NULL_UNIX_TIMESTAMP if ts is None else fmt.feast_value_bytes([ts], ValueType.UNIX_TIMESTAMP)[0]
        )
        return tuple(values)

    def push(self, pairs: Sequence[tuple[PairState, dict[str, Any]]]) -> int:
        if not pairs:
            return 0
        ts_value = _bulk(fmt.event_timestamp(self.clock.next()))
        encoded = self.encode([row for _, row in pairs])
        expire_tail = b"$%d\r\n%d\r\n" % (len(str(self.key_ttl)), self.key_ttl) if self.key_ttl else b""
        commands, keys = [], []
        for (pair, _), values in zip(pairs, encoded, strict=True):
            head, fields = self._packed[pair.level]
            raw_key = self.redis_key(pair.level, pair.user_id, pair.entity_id)
            key = _bulk(raw_key)
            parts = [head, key, fields[0], ts_value]
            for f, v in zip(fields[1:], values, strict=True):
                parts += (f, _bulk(v))
            commands.append(b"".join(parts))
            keys.append(raw_key)
            if expire_tail:
                commands.append(b"*3\r\n$6\r\nEXPIRE\r\n" + key + expire_tail)
                keys.append(raw_key)
        self._send(commands, keys)
        return len(pairs)

    def _send(self, commands: list[bytes], keys: list[bytes]) -> None:
        """One pipelined write (per master on a cluster); `keys[i]` is the key of `commands[i]`."""
        if self.topology is None:
            round_trip(self.client, commands)
            return
        for reply in round_trip_by_node(self.topology, commands, [key_slot(k) for k in keys]):
            if isinstance(reply, Exception):
                raise reply

    def _check_sample(self, items: Sequence[tuple[tuple[str, str, str], PairCounts, tuple[bytes, ...]]]) -> None:
        """The first, last and a random row of a write checked against Feast's own conversion; any difference
        raises."""
        for i in {0, len(items) - 1, self._rng.randrange(len(items))}:
            (level, user, entity), counts, values = items[i]
            self._check_row(level, user, entity, counts, values)

    def _check_row(self, level: str, user: str, entity: str, counts: PairCounts, values: tuple[bytes, ...]) -> None:
        row, _ = pair_row(PairState(level, user, entity, counts.buckets, counts.last_imp_us), 0)
        if values != self.reference_encode(row):
            raise fmt.FormatMismatch(f"stream row encoding differs from Feast's for {row!r}")

    def push_values(
        self,
        items: Sequence[tuple[tuple[str, str, str], PairCounts, tuple[bytes, ...]]],
        written: dict[tuple[str, str, str], tuple[bytes, ...]] | None = None,
    ) -> int:
        """Write rows already encoded by `StreamRowEncoder` (one pipelined write; EXPIRE only when this process
        has not refreshed the key's TTL within `_EXPIRE_REFRESH_S`). A sample is checked against Feast's own
        conversion first.

        `written` (the caller's memory of what it last wrote for each pair, updated here once the write succeeded):
        a pair found there gets an HSET of only the fields whose value changed, plus the row's time; any other pair
        gets all its fields. Most events are impressions, so most rows change two or three of their seven values,
        and Redis's cost of an HSET grows with its fields. The caller forgets a pair whenever the row in Redis may
        have been written by someone else (a partition it did not hold throughout)."""
        if not items:
            return 0
        commands, keys = self.prepare_values(items, written)
        self.send(commands, keys)
        if written is not None:
            remember(written, items)
        return len(items)

    def prepare_values(
        self,
        items: Sequence[tuple[tuple[str, str, str], PairCounts, tuple[bytes, ...]]],
        written: dict[tuple[str, str, str], tuple[bytes, ...]] | None = None,
    ) -> tuple[list[bytes], list[bytes]]:
        """`push_values`' commands and their keys, not sent (`send` writes them; the caller then `remember`s)."""
        if not items:
            return [], []
        self._check_sample(items)
        ts_value = _bulk(fmt.event_timestamp(self.clock.next()))
        expire_tail = b"$%d\r\n%d\r\n" % (len(str(self.key_ttl)), self.key_ttl) if self.key_ttl else b""
        now = time.monotonic()
        memo, refreshed, native, wrapped = self._key_memo, self._refreshed, self._native, self._wrapped
        last_written = written if written is not None else {}
        commands, keys = [], []
        # The per-row work inlined (`_key`, `_changed`, `_refresh_due`): this loop runs for every changed pair.
        for pair, _, values in items:
            head, fields = self._packed[pair[0]]
            raw_key = memo.get(pair) or self._key(pair)  # most pairs were just read on a miss or written before
            key = b"$%d\r\n%s\r\n" % (len(raw_key), raw_key)
            keys.append(raw_key)
            if native is not None:
                commands.append(native.hset_command(head, key, fields, ts_value, values, last_written.get(pair)))
            else:
                commands.append(hset_command(head, key, fields, ts_value, values, last_written.get(pair), wrapped))
            if expire_tail and now - refreshed.get(raw_key, -_EXPIRE_REFRESH_S) >= _EXPIRE_REFRESH_S:
                self._refresh_due(raw_key, now)  # records it
                commands.append(b"*3\r\n$6\r\nEXPIRE\r\n" + key + expire_tail)
                keys.append(raw_key)
        return commands, keys

    def prepare_pairs(
        self,
        pairs: list[tuple[str, str, str]],
        cache: dict[tuple[str, str, str], PairCounts],
        encoder: StreamRowEncoder,
        written: dict[tuple[str, str, str], tuple[bytes, ...]],
    ) -> tuple[list[bytes], list[bytes], list[tuple[bytes, ...]]]:
        """`prepare_values` of the pairs' states in `cache`, each encoded here by `encoder`: the commands, their
        keys and each pair's values (to `remember` once written). With the codec, one pass in C (`push_rows`)
        encodes, diffs against `written` and builds the commands; a sample is checked against Feast's conversion
        either way."""
        if not pairs:
            return [], [], []
        if self._native is None or not encoder.compiled:
            items = [(k, counts, encoder.values(counts)) for k in pairs for counts in (cache[k],)]
            commands, keys = self.prepare_values(items, written)
            return commands, keys, [values for _, _, values in items]
        ts_value = _bulk(fmt.event_timestamp(self.clock.next()))
        expire = (
            (_bulk(b"%d" % self.key_ttl), self._refreshed, time.monotonic(), _EXPIRE_REFRESH_S)
            if self.key_ttl
            else None
        )
        commands, keys, values = self._native.push_rows(
            pairs, cache, written, self._key_memo, self._key, self._packed, ts_value, expire, encoder.python_values
        )
        for i in {0, len(pairs) - 1, self._rng.randrange(len(pairs))}:
            self._check_row(*pairs[i], cache[pairs[i]], values[i])
        return commands, keys, values

    def send(self, commands: list[bytes], keys: list[bytes]) -> None:
        """Write prepared commands (`prepare_values`); safe to run in another thread than the one preparing the
        next: it uses a connection of its own from the client's pool."""
        self._send(commands, keys)

    def _refresh_due(self, raw_key: bytes, now: float) -> bool:
        """Whether this process should refresh the key's TTL now (at most once per `_EXPIRE_REFRESH_S`)."""
        refreshed = self._refreshed
        if not self.key_ttl or now - refreshed.get(raw_key, -_EXPIRE_REFRESH_S) < _EXPIRE_REFRESH_S:
            return False
        if len(refreshed) > 2_000_000:
            refreshed.clear()
        refreshed[raw_key] = now
        return True

    def row_updates(
        self,
        items: Sequence[tuple[tuple[str, str, str], PairCounts, tuple[bytes, ...]]],
        written: dict[tuple[str, str, str], tuple[bytes, ...]],
    ) -> list[tuple[bytes, list[bytes], bool]]:
        """The same writes as `push_values` (only the changed values of a pair in `written`), as arguments for a
        script that writes them itself (`stream.push_mode: atomic`): (Feast key, [field, value, ...], refresh the
        key's TTL). The caller updates `written` (`remember`) once the script has run."""
        if not items:
            return []
        self._check_sample(items)
        ts_value = fmt.event_timestamp(self.clock.next())
        now = time.monotonic()
        out = []
        for pair, _, values in items:
            names = self.fields[pair[0]]
            raw_key = self._key(pair)
            flat = [names.ts, ts_value]
            for i in _changed(values, written.get(pair)):
                flat += (names.features[i], values[i])
            out.append((raw_key, flat, self._refresh_due(raw_key, now)))
        return out

    def read_counts(self, pairs: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], PairCounts]:
        """Pairs' counters read back from their stream rows (one pipelined HMGET per pair; per master on a
        cluster); a pair without a row is absent. The last impression comes back in whole seconds, which is all a
        row ever shows of it (the maximum of truncated times is the truncated maximum)."""
        if not pairs:
            return {}
        commands, keys = [], []
        heads = self._hmget
        for pair in pairs:
            raw_key = self._key(pair)
            head, tail = heads[pair[0]]
            commands.append(b"%s$%d\r\n%s\r\n%s" % (head, len(raw_key), raw_key, tail))
            keys.append(raw_key)
        if self.topology is None:
            replies = round_trip(self.client, commands)
        else:
            replies = round_trip_by_node(self.topology, commands, [key_slot(k) for k in keys])
        out = {}
        for pair, reply in zip(pairs, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            if reply.count(None) < len(reply):  # some field present
                out[pair] = row_counts(reply)
        return out


# A key's TTL (`Settings.online_key_ttl`, days) is refreshed at most this often per process: it only has to outlive
# the pair's last write, and an EXPIRE costs Redis about as much as the HSET.
_EXPIRE_REFRESH_S = 3600.0
ROW_TTL_REFRESH_S = _EXPIRE_REFRESH_S
_WRITTEN_MAX = 1_000_000
_ALL = range(len(STREAM_FEATURES))
_NOTHING = (None,) * len(STREAM_FEATURES)  # "nothing written before": every value differs from it


def _changed(values: Sequence[bytes], before: Sequence[bytes] | None) -> Sequence[int]:
    """Indexes of the values to write: those that differ from what was last written, all when nothing was."""
    if before is None:
        return _ALL
    return [i for i, (v, old) in enumerate(zip(values, before, strict=True)) if v != old]


def hset_command(
    head: bytes,
    key: bytes,
    fields: tuple[bytes, ...],
    ts_value: bytes,
    values: Sequence[bytes],
    before: Sequence[bytes] | None,
    wrapped: dict[bytes, bytes],
) -> bytes:
    """One HSET of a pair's row as RESP: `head` (the header of a whole row), `key`, the time's field and `ts_value`
    (bulk strings), then of the values only those that differ from `before` (what was last written; None: all),
    each after its field (`fields[1:]`, bulk). `wrapped` memoizes values as bulk strings (most are the encoder's
    memoized lists). The codec's `hset_command` builds the same bytes in C."""
    parts = [head, key, fields[0], ts_value]
    for f, v, old in zip(fields[1:], values, before or _NOTHING, strict=True):
        if v == old:
            continue
        w = wrapped.get(v)
        if w is None:
            w = b"$%d\r\n%s\r\n" % (len(v), v)
            if len(wrapped) > 200_000:
                wrapped.clear()
            wrapped[v] = w
        parts += (f, w)
    if before is not None and len(parts) < len(fields) * 2 + 2:  # fewer fields: the header counts them
        parts[0] = b"*%d\r\n$4\r\nHSET\r\n" % len(parts)
    return b"".join(parts)


def remember(
    written: dict[tuple[str, str, str], tuple[bytes, ...]],
    items: Sequence[tuple[tuple[str, str, str], Any, tuple[bytes, ...]]],
) -> None:
    """Record what was just written for each pair (bounded: a forgotten pair is only written whole next time)."""
    remember_pairs(written, [pair for pair, _, _ in items], [values for _, _, values in items])


def remember_pairs(
    written: dict[tuple[str, str, str], tuple[bytes, ...]],
    pairs: Sequence[tuple[str, str, str]],
    values: Sequence[tuple[bytes, ...]],
) -> None:
    """`remember` of pairs and their values side by side (`prepare_pairs`' result)."""
    if len(written) > _WRITTEN_MAX:
        written.clear()
    written.update(zip(pairs, values, strict=True))


def row_counts(values: Sequence[bytes | None]) -> PairCounts:
    """A stream row's values (STREAM_FEATURES order; None: field absent) -> counters."""
    lists = [fmt.int64_list_values(v) for v in values[:6]]
    pair = PairCounts(last_imp_us=_last_imp_us(values[6]))
    for i, kind in enumerate(KIND_PREFIX):
        pair.buckets[kind] = dict(zip(lists[2 * i], lists[2 * i + 1], strict=True))
    return pair


def _last_imp_us(raw: bytes | None) -> int | None:
    if not raw or raw == fmt.NULL_UNIX_TIMESTAMP:
        return None
    return ValueProto.FromString(raw).unix_timestamp_val * 1_000_000


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class StreamRowEncoder:
    """The stream view's values of a pair straight from its counters, in STREAM_FEATURES order: bucket ends and
    counts per kind (`online_format.int64_list`, with the varints of bucket ends memoized: every pair shares the same
    few ends), then the last impression (whole seconds). `RedisDirectPusher.push_values` checks a sample of every
    push against Feast's own conversion."""

    def __init__(self) -> None:
        self._ends: dict[int, bytes] = {}
        # (end, count) -> both lists of a kind with one bucket: most pairs of a flush hold one or two buckets.
        self._single: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        # The same for several buckets (sorted (end, count) items), and the last impression's value per second: an
        # event's three pairs (advertiser, campaign, ad of one user) often hold the same buckets and last impression.
        self._multi: dict[tuple[tuple[int, int], ...], tuple[bytes, bytes]] = {}
        self._last: dict[int, bytes] = {}
        self._native = row_codec()  # the same values built in C when this install has the codec

    @property
    def compiled(self) -> bool:
        """Whether the values are built by the compiled codec (`RedisDirectPusher.prepare_pairs` then encodes in C)."""
        return self._native is not None

    def _list(self, values: list[int], memo: bool) -> bytes:
        if not values:
            return fmt.EMPTY_INT64_LIST
        if memo:
            ends = self._ends
            if len(ends) > 100_000:
                ends.clear()
            parts = []
            for v in values:
                b = ends.get(v)
                if b is None:
                    b = ends[v] = fmt.varint(v)
                parts.append(b)
            body = b"".join(parts)
        else:
            body = b"".join(map(fmt.varint, values))
        return self._wrap(body)

    def _long_lists(self, buckets: dict[int, int]) -> tuple[bytes, bytes]:
        """Both lists of a kind with more than `_MEMO_BUCKETS` buckets; the per-bucket work in C (`map`, `join`):
        the ends' varints from the memo (the missing ones added), the counts' from a table of the small ones."""
        ends = sorted(buckets)
        numbers = list(map(buckets.__getitem__, ends))
        if 0 in numbers:  # a zero count is left out of the row, as for fewer buckets
            ends = [e for e in ends if buckets[e]]
            numbers = [n for n in numbers if n]
        memo = self._ends
        parts = list(map(memo.get, ends))
        if None in parts:
            if len(memo) > 100_000:
                memo.clear()
            for i, part in enumerate(parts):
                if part is None:
                    parts[i] = memo[ends[i]] = fmt.varint(ends[i])
        if numbers and (max(numbers) >= len(_COUNT_VARINTS) or min(numbers) < 0):
            counts = b"".join(map(fmt.varint, numbers))
        else:
            counts = b"".join(map(_COUNT_VARINTS.__getitem__, numbers))
        return self._wrap(b"".join(parts)), self._wrap(counts)

    @staticmethod
    def _wrap(body: bytes) -> bytes:
        """An Int64List ValueProto around the packed varints `body` (the empty list's own encoding when empty)."""
        if not body:
            return fmt.EMPTY_INT64_LIST
        inner = fmt.PACKED_VAL_TAG + fmt.varint(len(body)) + body
        return _LIST_TAG + fmt.varint(len(inner)) + inner

    def values(self, counts: PairCounts) -> tuple[bytes, ...]:
        """The pair's seven values, a tuple: the worker keeps the last written ones of every pair it holds, and a
        tuple of bytes leaves the cyclic garbage collector's lists (a list would be walked by every collection)."""
        native = self._native
        if native is not None:
            try:
                return native.encode_values(counts.buckets, counts.last_imp_us)
            except (TypeError, OverflowError):  # not plain int64 counters: the Python path below handles any int
                pass
        return self.python_values(counts)

    def python_values(self, counts: PairCounts) -> tuple[bytes, ...]:
        """`values` in Python: the codec's reference (and the path without it)."""
        out = []
        single = self._single
        for kind in KIND_PREFIX:
            buckets = counts.buckets.get(kind)
            if not buckets:
                out += _EMPTY_PAIR
            elif len(buckets) == 1:
                (item,) = buckets.items()
                lists = single.get(item)
                if lists is None:
                    if len(single) > 100_000:
                        single.clear()
                    lists = single[item] = (self._list([item[0]], True), self._list([item[1]], False))
                out += lists
            elif len(buckets) <= _MEMO_BUCKETS:
                items = tuple(sorted(buckets.items()))
                lists = self._multi.get(items)
                if lists is None:
                    if len(self._multi) > 100_000:
                        self._multi.clear()
                    ends = [e for e, n in items if n]
                    numbers = [n for _, n in items if n]
                    lists = self._multi[items] = (self._list(ends, True), self._list(numbers, False))
                out += lists
            else:  # a long-lived pair's many buckets: rarely the same twice, encoded without a per-bucket loop
                out += self._long_lists(buckets)
        last = counts.last_imp_us
        if last is None:
            out.append(fmt.NULL_UNIX_TIMESTAMP)
        else:
            second = last // 1_000_000
            value = self._last.get(second)
            if value is None:
                if len(self._last) > 100_000:
                    self._last.clear()
                value = self._last[second] = _TS_TAG + fmt.varint(second)
            out.append(value)
        return tuple(out)


_LIST_TAG = fmt.TAGS[ValueType.INT64_LIST]
_TS_TAG = fmt.TAGS[ValueType.UNIX_TIMESTAMP]
# Up to this many buckets a kind's two lists are memoized by their items (an event's three pairs often share them).
_MEMO_BUCKETS = 4
_COUNT_VARINTS = tuple(fmt.varint(n) for n in range(1 << 14))  # counts per bucket: small
_EMPTY_PAIR = (fmt.EMPTY_INT64_LIST, fmt.EMPTY_INT64_LIST)
_HEADER = struct.Struct("<6Iq")  # the six list lengths, the last impression


def state_blob(values: Sequence[bytes], last_imp_us: int | None) -> bytes:
    """A pair's durable state: the lengths of its six bucket lists and the exact last impression in microseconds
    (-1: none), then the lists as encoded for the stream row. Encoded once per flush, stored and pushed."""
    a, b, c, d, e, f = values[:6]
    head = _HEADER.pack(len(a), len(b), len(c), len(d), len(e), len(f), -1 if last_imp_us is None else last_imp_us)
    return b"".join((head, a, b, c, d, e, f))


def state_counts(blob: bytes) -> PairCounts:
    """`state_blob` read back into counters."""
    *lengths, last = _HEADER.unpack_from(blob, 0)
    lists, pos = [], _HEADER.size
    for n in lengths:
        lists.append(fmt.int64_list_values(blob[pos : pos + n]))
        pos += n
    pair = PairCounts(last_imp_us=None if last < 0 else last)
    for i, kind in enumerate(KIND_PREFIX):
        pair.buckets[kind] = dict(zip(lists[2 * i], lists[2 * i + 1], strict=True))
    return pair
