"""A partition's state: dedup marks, per-pair bucket counters, the watermark, counters and the last applied entry.

`RedisPartitionState` keeps it in Redis under `<state_prefix>:{p<k>}` (every key carries the partition's hash tag,
so on a Redis Cluster they share one slot). The worker decides a micro-batch in process
(`freqcap.domain.stream.batch`) and then writes all of it with **one atomic script** (`write_flush`): the new dedup
marks, the new state of every changed pair, the counters, the watermark and the id of the last stream entry the
batch covers. The script first checks that the caller still holds the partition's lease (a worker that lost it is
fenced off) and that the batch is newer than the last one applied (a replay after kill -9 writes nothing twice).

Keys (base `B` = `<state_prefix>:{p<k>}`):
* `B:status` — hash: `max_ts_us` (watermark), `last_id`, counters `applied`, `duplicates`, `late`,
  `dead_letters`, `dead:<reason>`, `pushed`; and, written outside the flush, `fresh_at_us`, `heartbeat_us`,
  `coverage_start_us`, `owner`; `layout`, where the pairs' state lives (`rows` or `keys`, below; absent:
  `keys`, the only layout before rows-as-state).
* `B:lease` — the owner's token `<worker>:<epoch>` with a TTL (`freqcap.adapters.stream.ownership`); `B:epoch`.
* `B:seen:<generation>` — hash of `event_id`s applied; a generation spans `dedup_ttl / 3` of wall time and lives
  4 spans, so a mark is remembered at least `dedup_ttl` (the four generations are checked).
* `B:s:<level>:<user>\\x1f<entity>` — a pair's counters, as encoded by the caller
  (`freqcap.adapters.feast.stream_push.state_blob`), expiring `retention` after its last change.
* `B:unpushed` — the state keys changed by flushes whose push has not finished (pushed again after a crash).
* `B:pending` — instead of state keys, when the online rows are the pairs' state (`stream.push_mode: direct` to a
  Redis online store): each unit appends the changed pairs' names and states (`<I n><name><I n><state>`...,
  `pack_pending`); a pair's last record is its state until the push, which then clears the log. A crash between
  commit and push re-pushes them from here on the next start.

A partition switches layout when the online key TTL crosses `stream.retention` + 1 h (rows that may expire before
the retention cannot hold the state). Going to `rows`, the state keys left behind go stale at the first commit;
going back to `keys`, the new owner therefore drops them first and reads a pair without a state key from its row
(`switch_layout`).

`MemoryPartitionState` is the same in process memory, for embedded replays (no Redis, nothing to fence).
"""

from __future__ import annotations

import marshal
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from freqcap.adapters.native import load
from freqcap.adapters.stream.resp import round_trip
from freqcap.domain.stream.batch import PairKey
from freqcap.domain.stream.partitions import compare_ids, state_base

SEP = "\x1f"
_SIZE = struct.Struct("<I")
_NAMES_MAX = 200_000
# The pending records' marshal version: 2 has no back-references (cheaper to write, and `_pending.c` writes the same
# bytes); `marshal.loads` reads every version, so records an older worker wrote in version 4 still load.
_MARSHAL_VERSION = 2
SEEN_GENERATIONS = 4


def pair_state_key(base: str, key: PairKey) -> str:
    level, user, entity = key
    return f"{base}:s:{level}:{user}{SEP}{entity}"


def split_state_key(name: str, base: str) -> PairKey:
    """`B:s:<level>:<user>\\x1f<entity>` -> (level, user, entity)."""
    rest = name[len(base) + 3 :]
    level, _, pair = rest.partition(":")
    user, _, entity = pair.partition(SEP)
    return level, user, entity


def _pack_keys(names: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(n)) + n for n in names)


def _unpack_keys(blob: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(blob):
        (n,) = struct.unpack_from("<I", blob, pos)
        out.append(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def pack_pending(base: str, pairs: Iterable[tuple[PairKey, Any]], names: dict[PairKey, bytes] | None = None) -> bytes:
    """`B:pending` records of the pairs' states (`PairCounts`): name, then the counters marshalled (the bucket maps
    and the exact last impression; far cheaper to build than the stream row, which is encoded once per push).
    `names`: the caller's memo of each pair's length-prefixed name under `base` (bounded here)."""
    out: list[bytes] = []
    head = f"{base}:s:"
    dumps, size = marshal.dumps, _SIZE.pack
    if names is None:
        names = {}
    elif len(names) > _NAMES_MAX:
        names.clear()
    for key, counts in pairs:  # this runs per changed pair per unit
        name = names.get(key)
        if name is None:
            level, user, entity = key
            raw = f"{head}{level}:{user}{SEP}{entity}".encode()  # pair_state_key
            name = names[key] = size(len(raw)) + raw
        blob = dumps((counts.buckets, counts.last_imp_us), _MARSHAL_VERSION)
        out += (name, size(len(blob)), blob)
    return b"".join(out)


def pending_packer() -> Callable[[str, list[PairKey], dict[PairKey, Any], dict[PairKey, bytes]], bytes]:
    """`pack(base, keys, cache, names)`: `pack_pending` of the pairs `keys` with their states in `cache` (`names`:
    the caller's memo), in C when this install has it (`_pending.c`; same records), else `pack_pending`."""
    native = load("freqcap.adapters.stream._pending")

    def pack(base: str, keys: list[PairKey], cache: dict[PairKey, Any], names: dict[PairKey, bytes]) -> bytes:
        if native is None:
            return pack_pending(base, ((k, cache[k]) for k in keys), names)
        if len(names) > _NAMES_MAX:
            names.clear()
        return native.pack_pending(f"{base}:s:", keys, cache, names)

    return pack


def unpack_pending(blob: bytes, base: str) -> dict[PairKey, tuple[dict[str, dict[int, int]], int | None]]:
    """`B:pending` -> each pair's last recorded (bucket maps, last impression)."""
    items = _unpack_keys(blob)
    out = {}
    for name, state in zip(items[::2], items[1::2], strict=True):
        out[split_state_key(name.decode(), base)] = marshal.loads(state)
    return out


# ------------------------------------------------------------------------------------------------ the flush unit


@dataclass
class FlushUnit:
    """Everything one micro-batch writes, atomically."""

    token: str  # the lease token the writer holds
    first_id: str  # first and last stream entry the batch covers
    last_id: str
    watermark_us: int | None
    new_ids: Sequence[str]
    pairs: Sequence[tuple[PairKey, bytes]]  # each changed pair's state, encoded by the caller
    counters: dict[str, int] = field(default_factory=dict)  # status field -> increment
    # `stream.push_mode: atomic`: the changed pairs' online rows, written by the same script instead of `pairs`
    # (the online store on the stream's server): (Feast key, [field, value, ...], refresh the key's TTL).
    rows: Sequence[tuple[bytes, Sequence[bytes], bool]] = ()
    row_ttl: int = 0
    # The online rows are the state (`pack_pending` records of the changed pairs, appended to `B:pending` instead
    # of `pairs` and the unpushed names).
    pending: bytes | None = None


@dataclass(frozen=True)
class Snapshot:
    """What a new owner of a partition starts from."""

    watermark_us: int | None
    last_id: str | None
    unpushed: list[PairKey]
    # `B:pending`: the pairs' states recorded since the last finished push (bucket maps, last impression).
    pending: dict[PairKey, tuple[dict[str, dict[int, int]], int | None]] = field(default_factory=dict)


# KEYS: status, lease, seen generation, unpushed, then the changed pairs' state keys, then their online rows' keys.
# ARGV: token, first id, last id, seen ttl, pair ttl, watermark ('' = none), n new ids, n pairs, n rows, row ttl,
# ids..., one blob per pair, the unpushed blob, per row (n field/value items, refresh TTL 0/1, items...), then
# (status field, increment) pairs.
# Returns -1 when the lease is not the caller's (fenced: nothing written), 0 when the batch is not newer than the
# last one applied (a replay: nothing written), 1 when written.
_FLUSH = r"""
local status, lease, seen, unpushed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('GET', lease) ~= ARGV[1] then return -1 end
local function split(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local last = redis.call('HGET', status, 'last_id')
if last then
  local lm, ls = split(last)
  local fm, fs = split(ARGV[2])
  if fm < lm or (fm == lm and fs <= ls) then return 0 end
end
local n_ids, n_pairs, n_rows = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local pos = 11
local chunk = 2000
local i = 0
while i < n_ids do
  local j = math.min(i + chunk, n_ids)
  local args = {}
  for k = i, j - 1 do
    args[#args + 1] = ARGV[pos + k]
    args[#args + 1] = '1'
  end
  redis.call('HSET', seen, unpack(args))
  i = j
end
if n_ids > 0 then redis.call('EXPIRE', seen, tonumber(ARGV[4])) end
pos = pos + n_ids
local pair_ttl = tonumber(ARGV[5])
for k = 5, 4 + n_pairs do
  redis.call('SET', KEYS[k], ARGV[pos], 'EX', pair_ttl)
  pos = pos + 1
end
if string.len(ARGV[pos]) > 0 then redis.call('APPEND', unpushed, ARGV[pos]) end
pos = pos + 1
local row_ttl = ARGV[10]
for k = 5 + n_pairs, 4 + n_pairs + n_rows do
  local n = tonumber(ARGV[pos])
  local refresh = ARGV[pos + 1]
  redis.call('HSET', KEYS[k], unpack(ARGV, pos + 2, pos + 1 + n))
  if refresh == '1' then redis.call('EXPIRE', KEYS[k], row_ttl) end
  pos = pos + 2 + n
end
while pos < #ARGV do
  redis.call('HINCRBY', status, ARGV[pos], ARGV[pos + 1])
  pos = pos + 2
end
if ARGV[6] ~= '' then redis.call('HSET', status, 'max_ts_us', ARGV[6]) end
redis.call('HSET', status, 'last_id', ARGV[3])
return 1
"""

FENCED, REPLAYED, WRITTEN = -1, 0, 1

# Clears the unpushed names and the pending log, only for the lease holder: a fenced worker that finishes its push
# late must not drop what the new owner recorded since.
_PUSHED = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"""


def write_flush(client: Any, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> int:
    """The one write of a micro-batch: `_FLUSH` with every key in KEYS (one slot: a Redis Cluster client routes it
    to the partition's node). Kept this small so another client (a cluster client) can be swapped in."""
    return int(script(keys=keys, args=args, client=client))


class RedisPartitionState:
    """A partition's state in Redis (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        partition: int,
        *,
        dedup_ttl_s: float,
        retention_s: float,
        clock: Any = time.time,
    ):
        self.client = client
        self.partition = partition
        self.base = state_base(prefix, partition)
        self.status_key = f"{self.base}:status"
        self.lease_key = f"{self.base}:lease"
        self.unpushed_key = f"{self.base}:unpushed"
        self.pending_key = f"{self.base}:pending"
        self.pair_ttl = max(1, int(retention_s))
        self.span = max(1.0, dedup_ttl_s / (SEEN_GENERATIONS - 1))
        self.seen_ttl = int(self.span * SEEN_GENERATIONS) + 60
        self.clock = clock
        self._script = client.register_script(_FLUSH)
        self._pushed = client.register_script(_PUSHED)

    def _seen_key(self, generation: int) -> str:
        return f"{self.base}:seen:{generation}"

    def load(self) -> Snapshot:
        """Watermark, last applied entry and the pairs whose push did not finish."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.status_key, ["max_ts_us", "last_id"])
        pipe.get(self.unpushed_key)
        pipe.get(self.pending_key)
        (wm, last), unpushed, pending = pipe.execute()
        keys = [split_state_key(k.decode(), self.base) for k in _unpack_keys(unpushed or b"")]
        return Snapshot(
            int(wm) if wm else None,
            last.decode() if last else None,
            list(dict.fromkeys(keys)),
            unpack_pending(pending or b"", self.base),
        )

    def seen(self, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` already marked (any of the live generations)."""
        if not ids:
            return set()
        now = int(self.clock() // self.span)
        encoded = [i.encode() for i in ids]
        body = b"".join(b"$%d\r\n%s\r\n" % (len(e), e) for e in encoded)
        commands = []
        for g in range(now - SEEN_GENERATIONS + 1, now + 1):
            key = self._seen_key(g).encode()
            commands.append(b"*%d\r\n$5\r\nHMGET\r\n$%d\r\n%s\r\n" % (len(ids) + 2, len(key), key) + body)
        out: set[str] = set()
        for reply in round_trip(self.client, commands):
            out.update(i for i, v in zip(ids, reply, strict=True) if v is not None)
        return out

    def read_pairs(self, keys: Sequence[PairKey]) -> dict[PairKey, bytes]:
        """The stored state of each pair that has one."""
        if not keys:
            return {}
        blobs = self.client.mget([pair_state_key(self.base, k) for k in keys])
        return {k: b for k, b in zip(keys, blobs, strict=True) if b}

    def write_pairs(self, pairs: Sequence[tuple[PairKey, bytes]]) -> None:
        """Pairs' state keys written outside a flush (a new owner keeping state keys takes over a pending log)."""
        pipe = self.client.pipeline(transaction=False)
        for key, blob in pairs:
            pipe.set(pair_state_key(self.base, key), blob, ex=self.pair_ttl)
        pipe.execute()

    def commit(self, unit: FlushUnit) -> int:
        """Write a micro-batch atomically: WRITTEN, REPLAYED (already applied: nothing written) or FENCED."""
        names = [pair_state_key(self.base, k) for k, _ in unit.pairs]
        seen_key = self._seen_key(int(self.clock() // self.span))
        # The script appends its blob to KEYS[4]: the unpushed names, or the pending log (then `pairs` is empty).
        log_key = self.unpushed_key if unit.pending is None else self.pending_key
        keys = [self.status_key, self.lease_key, seen_key, log_key, *names, *(r[0] for r in unit.rows)]
        args: list[Any] = [
            unit.token,
            unit.first_id,
            unit.last_id,
            self.seen_ttl,
            self.pair_ttl,
            "" if unit.watermark_us is None else unit.watermark_us,
            len(unit.new_ids),
            len(names),
            len(unit.rows),
            unit.row_ttl,
            *unit.new_ids,
            *[blob for _, blob in unit.pairs],
            _pack_keys(n.encode() for n in names) if unit.pending is None else unit.pending,
        ]
        for _, items, refresh in unit.rows:
            args += [len(items), 1 if refresh else 0, *items]
        for name, delta in unit.counters.items():
            if delta:
                args += [name, delta]
        return write_flush(self.client, self._script, keys, args)

    def switch_layout(self, layout: str) -> int:
        """Record where the pairs' state lives from now on (`rows` or `keys`; called by a new owner before its first
        commit). From `rows` to `keys` the partition's state keys are stale (pairs changed since live only in their
        rows): they are deleted first, and the number deleted returned."""
        previous = self.client.hget(self.status_key, "layout")
        dropped = 0
        if layout == "keys" and previous == b"rows":
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=pair_state_pattern(self.base), count=10_000):
                batch.append(key)
                if len(batch) >= 1_000:
                    dropped += self._unlink(batch)
                    batch = []
            dropped += self._unlink(batch)
        if previous != layout.encode():
            self.client.hset(self.status_key, "layout", layout)
        return dropped

    def _unlink(self, keys: list[bytes]) -> int:
        if not keys:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for key in keys:  # one key per command: on a cluster every command stays within one slot
            pipe.unlink(key)
        return sum(pipe.execute())

    def holds(self, token: str) -> bool:
        """Whether `token` still holds the partition's lease (checked right before a push: a worker that lost it
        while paused between its commit and its push must not overwrite a newer owner's rows with older states;
        the new owner pushes those states from the pending log instead)."""
        current = self.client.get(self.lease_key)
        return current is not None and current.decode() == token

    def pushed(self, token: str | None = None) -> None:
        """Every pair of the flushes so far is in the online store: the unpushed names and the pending log go (with a
        `token`, only while it holds the lease)."""
        if token is None:
            self.client.delete(self.unpushed_key, self.pending_key)
        else:
            self._pushed(keys=[self.lease_key, self.unpushed_key, self.pending_key], args=[token], client=self.client)

    def status(self) -> dict[bytes, bytes]:
        return self.client.hgetall(self.status_key)


def glob_escape(text: str) -> str:
    """`text` matched literally by a Redis MATCH pattern (a state prefix may hold `[`, `*`, `?` or `\\`)."""
    return "".join("\\" + c if c in "[]*?\\" else c for c in text)


def pair_state_pattern(base: str) -> str:
    """The MATCH pattern of every pair-state key under `base` (`pair_state_key`)."""
    return glob_escape(f"{base}:s:") + "*"


class MemoryPartitionState:
    """The same rules in process memory (embedded replay of an event directory: one run, one owner)."""

    def __init__(self, partition: int = 0, **_: Any):
        self.partition = partition
        self.seen_ids: set[str] = set()
        self.pairs: dict[PairKey, bytes] = {}
        self.watermark_us: int | None = None
        self.last_id: str | None = None
        self.counters: dict[str, int] = {}

    def load(self) -> Snapshot:
        return Snapshot(self.watermark_us, self.last_id, [])

    def seen(self, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in self.seen_ids}

    def read_pairs(self, keys: Sequence[PairKey]) -> dict[PairKey, bytes]:
        return {k: self.pairs[k] for k in keys if k in self.pairs}

    def write_pairs(self, pairs: Sequence[tuple[PairKey, bytes]]) -> None:
        self.pairs.update(pairs)

    def commit(self, unit: FlushUnit) -> int:
        if self.last_id is not None and compare_ids(unit.first_id, self.last_id) <= 0:
            return REPLAYED
        self.seen_ids.update(unit.new_ids)
        for key, blob in unit.pairs:
            self.pairs[key] = blob
        for name, delta in unit.counters.items():
            self.counters[name] = self.counters.get(name, 0) + delta
        if unit.watermark_us is not None:
            self.watermark_us = unit.watermark_us
        self.last_id = unit.last_id
        return WRITTEN

    def holds(self, token: str) -> bool:
        return True  # one run, one owner

    def pushed(self, token: str | None = None) -> None:
        pass

    def status(self) -> dict[bytes, bytes]:
        out = {k.encode(): str(v).encode() for k, v in self.counters.items()}
        if self.watermark_us is not None:
            out[b"max_ts_us"] = str(self.watermark_us).encode()
        return out
