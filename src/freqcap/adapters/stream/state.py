"""The worker's state: dedup marks, per-pair bucket counters and the set of pairs changed since their last push.

`RedisState` keeps all of it in Redis, so a worker killed at any instant loses nothing: each micro-batch of events
is applied by one Lua script — atomically — that marks each `event_id` seen (SET NX with a TTL) and increments the
pair counters only for events it had not seen. Delivery is at-least-once (a message is acknowledged after its batch
is applied); a redelivered event finds its mark and changes nothing. The event-time watermark lives beside it, so
the lateness rule gives the same answer after a restart. `MemoryState` is the same logic for embedded replays.

Keys (prefix `P`, `stream.state_prefix`):
* `P:seen:<event_id>` — dedup mark, expires after `dedup_ttl`.
* `P:s:<level>:<user_id>\\x1f<entity_id>` — hash of `i:<bucket end>`, `c:<...>`, `v:<...>` counts and `last_imp`
  (epoch microseconds); expires `retention` after its last event.
* `P:dirty` — sorted set of pair keys changed since pushed, scored by a batch sequence number (so a push removes
  a key only if it did not change again meanwhile).
* `P:status` — watermark (`max_ts_us`), counters, coverage, the last time the worker was caught up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from freqcap.adapters.stream.resp import pack, round_trip
from freqcap.domain.stream.buckets import PairCounts, bucket_end, parse_fields
from freqcap.domain.stream.messages import StreamEvent

SEP = "\x1f"
LEVELS = ("advertiser", "campaign", "ad")
OK, DUPLICATE, LATE = 0, 1, 2

_APPLY = r"""
local seen_prefix, pair_prefix, dirty, seq_key, status = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local lateness, dedup_ttl, pair_ttl, n = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local wm_text = redis.call('HGET', status, 'max_ts_us')
local wm = tonumber(wm_text or '0')
local seq = redis.call('INCR', seq_key)
local touched = {}
local out = {}
local ok, dup, late = 0, 0, 0
local base = 9
for e = 1, n do
  local eid, kind, ts_text, bucket = ARGV[base+1], ARGV[base+2], ARGV[base+3], ARGV[base+4]
  local user = ARGV[base+5]
  local ts = tonumber(ts_text)
  -- Seen first: a redelivered event that was applied is a duplicate, never "late".
  if redis.call('EXISTS', seen_prefix .. eid) == 1 then
    out[e] = 1; dup = dup + 1
  elseif wm > 0 and ts < wm - lateness then
    out[e] = 2; late = late + 1
  else
    redis.call('SET', seen_prefix .. eid, '1', 'EX', dedup_ttl)
    local levels = {'advertiser', 'campaign', 'ad'}
    for l = 1, 3 do
      local key = pair_prefix .. levels[l] .. ':' .. user .. '\31' .. ARGV[base+5+l]
      redis.call('HINCRBY', key, kind .. ':' .. bucket, 1)
      if kind == 'i' then
        local cur = tonumber(redis.call('HGET', key, 'last_imp') or '0')
        if ts > cur then redis.call('HSET', key, 'last_imp', ts_text) end
      end
      touched[key] = true
    end
    if ts > wm then wm = ts; wm_text = ts_text end
    out[e] = 0; ok = ok + 1
  end
  base = base + 8
end
for key, _ in pairs(touched) do
  redis.call('EXPIRE', key, pair_ttl)
  redis.call('ZADD', dirty, seq, key)
end
if wm_text then redis.call('HSET', status, 'max_ts_us', wm_text) end
redis.call('HINCRBY', status, 'applied', ok)
redis.call('HINCRBY', status, 'duplicates', dup)
redis.call('HINCRBY', status, 'late', late)
return out
"""

# Remove pushed keys from the dirty set only if their score (the batch that last changed them) is unchanged.
_ACK_PUSHED = r"""
local dirty = ARGV[1]
local removed = 0
for i = 2, #ARGV, 2 do
  local score = redis.call('ZSCORE', dirty, ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i+1]) then
    redis.call('ZREM', dirty, ARGV[i]); removed = removed + 1
  end
end
return removed
"""


@dataclass(frozen=True)
class PairState:
    """One (user, entity) pair's counters as read for a push."""

    level: str
    user_id: str
    entity_id: str
    buckets: dict[str, dict[int, int]]
    last_imp_us: int | None


class State(Protocol):
    def apply(self, events: Sequence[StreamEvent]) -> list[int]: ...
    def dirty(self, limit: int) -> list[tuple[Any, float]]: ...
    def read_pairs(self, keys: Sequence[Any]) -> list[PairState | None]: ...
    def prune(self, pairs: Sequence[tuple[Any, Sequence[str]]]) -> None: ...
    def ack_pushed(self, keys: Sequence[tuple[Any, float]]) -> int: ...
    def watermark_us(self) -> int | None: ...


def split_pair_key(name: str, pair_prefix: str) -> tuple[str, str, str]:
    """`P:s:<level>:<user>\\x1f<entity>` -> (level, user, entity)."""
    rest = name[len(pair_prefix) :]
    level, _, pair = rest.partition(":")
    user, _, entity = pair.partition(SEP)
    return level, user, entity


class RedisState:
    """Idempotent, crash-safe state in Redis (see the module docstring)."""

    def __init__(
        self, client: Any, prefix: str, *, bucket_s: int, lateness_s: float, dedup_ttl_s: float, retention_s: float
    ):
        self.client = client
        self.prefix = prefix
        self.pair_prefix = f"{prefix}:s:"
        self.dirty_key = f"{prefix}:dirty"
        self.status_key = f"{prefix}:status"
        self.bucket_s = bucket_s
        self.lateness_us = int(lateness_s * 1_000_000)
        self.dedup_ttl = max(1, int(dedup_ttl_s))
        self.pair_ttl = max(1, int(retention_s))
        self._apply = client.register_script(_APPLY)
        self._ack = client.register_script(_ACK_PUSHED)

    def apply(self, events: Sequence[StreamEvent], chunk: int = 200) -> list[int]:
        """Apply a micro-batch; per event OK, DUPLICATE or LATE. Each `chunk` events run as one atomic script (a
        few ms of Redis time, so serving reads on the same Redis never wait long); the chunks go in one round trip."""
        if not events:
            return []
        b = self.bucket_s
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(events), chunk):
            part = events[start : start + chunk]
            args: list[Any] = [
                f"{self.prefix}:seen:",
                self.pair_prefix,
                self.dirty_key,
                f"{self.prefix}:seq",
                self.status_key,
                self.lateness_us,
                self.dedup_ttl,
                self.pair_ttl,
                len(part),
            ]
            for ev in part:
                args += [
                    ev.event_id,
                    ev.kind,
                    ev.ts_us,
                    bucket_end(ev.ts_us, b),
                    ev.user_id,
                    ev.advertiser_id,
                    ev.campaign_id,
                    ev.ad_id,
                ]
            self._apply(args=args, client=pipe)
        return [int(x) for reply in pipe.execute() for x in reply]

    def dirty(self, limit: int) -> list[tuple[bytes, float]]:
        return self.client.zrange(self.dirty_key, 0, limit - 1, withscores=True)

    def read_pairs(self, keys: Sequence[bytes]) -> list[PairState | None]:
        replies = round_trip(self.client, [pack(b"HGETALL", key) for key in keys])
        out: list[PairState | None] = []
        for key, flat in zip(keys, replies, strict=True):
            if not flat:
                out.append(None)  # expired: nothing in retention
                continue
            level, user, entity = split_pair_key(key.decode(), self.pair_prefix)
            buckets, last = parse_fields(zip(flat[0::2], flat[1::2], strict=True))
            out.append(PairState(level, user, entity, buckets, last))
        return out

    def prune(self, pairs: Sequence[tuple[bytes, Sequence[str]]]) -> None:
        round_trip(self.client, [pack(b"HDEL", key, *fields) for key, fields in pairs if fields])

    def ack_pushed(self, keys: Sequence[tuple[bytes, float]]) -> int:
        if not keys:
            return 0
        args: list[Any] = [self.dirty_key]
        for key, score in keys:
            args += [key, repr(float(score))]
        return int(self._ack(args=args))

    def watermark_us(self) -> int | None:
        value = self.client.hget(self.status_key, "max_ts_us")
        return int(value) if value else None


class MemoryState:
    """The same semantics in process memory, for embedded replays of an event directory (no Redis)."""

    def __init__(self, *, bucket_s: int, lateness_s: float, **_: Any):
        self.bucket_s = bucket_s
        self.lateness_us = int(lateness_s * 1_000_000)
        self.seen: set[str] = set()
        self.pairs: dict[tuple[str, str, str], PairCounts] = {}
        self._dirty: dict[tuple[str, str, str], float] = {}
        self._seq = 0
        self.max_ts_us: int | None = None
        self.applied = self.duplicates = self.late = 0

    def apply(self, events: Sequence[StreamEvent]) -> list[int]:
        self._seq += 1
        out = []
        for ev in events:
            if ev.event_id in self.seen:  # seen first: a redelivered applied event is a duplicate, never late
                out.append(DUPLICATE)
                self.duplicates += 1
                continue
            if self.max_ts_us is not None and ev.ts_us < self.max_ts_us - self.lateness_us:
                out.append(LATE)
                self.late += 1
                continue
            self.seen.add(ev.event_id)
            for level, entity in zip(LEVELS, (ev.advertiser_id, ev.campaign_id, ev.ad_id), strict=True):
                key = (level, ev.user_id, entity)
                self.pairs.setdefault(key, PairCounts()).add(ev.kind, ev.ts_us, self.bucket_s)
                self._dirty[key] = self._seq
            if self.max_ts_us is None or ev.ts_us > self.max_ts_us:
                self.max_ts_us = ev.ts_us
            out.append(OK)
            self.applied += 1
        return out

    def dirty(self, limit: int) -> list[tuple[tuple[str, str, str], float]]:
        return list(self._dirty.items())[:limit]

    def read_pairs(self, keys: Sequence[tuple[str, str, str]]) -> list[PairState | None]:
        out: list[PairState | None] = []
        for key in keys:
            pair = self.pairs.get(key)
            if pair is None:
                out.append(None)
                continue
            out.append(PairState(*key, {k: dict(v) for k, v in pair.buckets.items()}, pair.last_imp_us))
        return out

    def prune(self, pairs: Sequence[tuple[tuple[str, str, str], Sequence[str]]]) -> None:
        for key, fields in pairs:
            pair = self.pairs.get(key)
            if pair is None:
                continue
            for name in fields:
                kind, _, end = name.partition(":")
                pair.buckets.get(kind, {}).pop(int(end), None)

    def ack_pushed(self, keys: Sequence[tuple[tuple[str, str, str], float]]) -> int:
        n = 0
        for key, score in keys:
            if self._dirty.get(key) == score:
                del self._dirty[key]
                n += 1
        return n

    def watermark_us(self) -> int | None:
        return self.max_ts_us
