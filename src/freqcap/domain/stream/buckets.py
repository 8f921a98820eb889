"""Time buckets for the stream's rolling counters. Pure: no I/O.

An event at time `ts` falls in the bucket labelled by its *end*, `ceil(ts / width) * width` (epoch seconds), so a
bucket `e` holds the events in `(e - width, e]` — the same half-open convention as the batch windows `(T - W, T]`.
A batch cut-off `T` that is a multiple of the width therefore splits buckets cleanly: every event with `ts <= T`
is in a bucket `e <= T`, every event with `ts > T` in a bucket `e > T`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from freqcap.config import parse_duration

# Event type -> one-letter kind used in state field names, and the feature prefix of the stream views.
KINDS: dict[str, str] = {"impression": "i", "click": "c", "conversion": "v"}
KIND_PREFIX: dict[str, str] = {"i": "imp", "c": "clk", "v": "conv"}
_US = 1_000_000


def bucket_end(ts_us: int, width_s: int) -> int:
    """The end (epoch seconds) of the bucket holding an event at `ts_us` microseconds: events in (end - w, end]."""
    width_us = width_s * _US
    return -(-ts_us // width_us) * width_s


@dataclass(frozen=True)
class Buckets:
    """Counts of one event kind for one (user, entity) pair: bucket ends ascending, with their counts."""

    ends: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()

    @staticmethod
    def from_mapping(counts: Mapping[int, int]) -> Buckets:
        items = sorted((int(e), int(n)) for e, n in counts.items() if n)
        return Buckets(tuple(e for e, _ in items), tuple(n for _, n in items))

    def total_between(self, lo_end_exclusive: float, hi_start_exclusive: float, width_s: int) -> int:
        """Sum of buckets with end > lo and start (end - width) < hi."""
        ends = self.ends
        i = bisect_right(ends, lo_end_exclusive)
        j = bisect_left(ends, hi_start_exclusive + width_s)
        return sum(self.counts[i:j]) if j > i else 0

    def latest_end_before(self, t: float, width_s: int) -> int | None:
        """The latest bucket end whose bucket starts before `t` (the newest bucket with an event at or before t)."""
        j = bisect_left(self.ends, t + width_s)
        return self.ends[j - 1] if j else None


@dataclass(slots=True)
class PairCounts:
    """Mutable per-pair state used by the in-memory store and tests: kind -> {bucket end: count}, last impression.
    Slots: a worker holds `stream.cache_pairs` of them, and an instance without a `__dict__` is one object fewer for
    the cyclic garbage collector to walk."""

    buckets: dict[str, dict[int, int]] = field(default_factory=lambda: {"i": {}, "c": {}, "v": {}})  # KIND_PREFIX
    last_imp_us: int | None = None

    def add(self, kind: str, ts_us: int, width_s: int) -> None:
        end = bucket_end(ts_us, width_s)
        b = self.buckets[kind]
        b[end] = b.get(end, 0) + 1
        if kind == "i" and (self.last_imp_us is None or ts_us > self.last_imp_us):
            self.last_imp_us = ts_us

    def prune(self, oldest_end_kept: int) -> None:
        for b in self.buckets.values():
            if b and min(b) < oldest_end_kept:
                for end in [e for e in b if e < oldest_end_kept]:
                    del b[end]


def prune_horizon(watermark_us: int, retention_s: float, width_s: int) -> int:
    """The oldest bucket end still kept: buckets ending at or before `watermark - retention` are dropped."""
    return bucket_end(watermark_us - int(retention_s * _US), width_s) + width_s


def parse_fields(fields: Iterable[tuple[bytes | str, bytes | str]]) -> tuple[dict[str, dict[int, int]], int | None]:
    """State hash fields (`i:<end>`, `c:<end>`, `v:<end>`, `last_imp`) -> per-kind bucket maps and last impression."""
    out: dict[str, dict[int, int]] = {k: {} for k in KIND_PREFIX}
    by_byte = {ord(k): v for k, v in out.items()}
    last = None
    for name, value in fields:
        if isinstance(name, str):
            name = name.encode()
        if name == b"last_imp":
            last = int(value)
            continue
        target = by_byte.get(name[0])
        if target is not None and name[1:2] == b":":
            target[int(name[2:])] = int(value)
    return out, last


def window_seconds(labels: Sequence[str]) -> tuple[int, ...]:
    return tuple(int(parse_duration(w).total_seconds()) for w in labels)
