"""Partitions of the stream: which stream a user's events go to, the names of a partition's keys, and which live
worker should own which partition. Pure: no I/O.

* A user's events all go to one partition, `crc32(user_id) % n` (stable across processes and languages), so one
  partition holds every event of its users and its state (pair counters, dedup marks) is self-contained.
* With one partition the stream is `stream_key` itself (what older producers write); with `n > 1` partition `k` is
  `<stream_key>:{p<k>}`. Every key of a partition's state carries the hash tag `{p<k>}`
  (`<state_prefix>:{p<k>}:...`): on a Redis Cluster they share one slot, so a partition's flush is one atomic unit
  on one node.
* Ownership: each worker heartbeats into a member set; the live members, sorted by name, get the partitions
  round-robin (`assignment`). A worker takes a partition only when its lease is free and gives one back when the
  assignment moves it elsewhere, so at most one worker writes a partition at a time (the lease token is checked
  inside the atomic write).
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Sequence


def partition_of(user_id: str, partitions: int) -> int:
    """The partition of a user's events."""
    if partitions == 1:
        return 0
    return zlib.crc32(user_id.encode("utf-8")) % partitions


def tag(partition: int) -> str:
    """The Redis Cluster hash tag every key of a partition carries."""
    return f"{{p{partition}}}"


def stream_name(stream_key: str, partition: int, partitions: int) -> str:
    """The stream of partition `partition` (`stream_key` itself when there is one partition)."""
    return stream_key if partitions == 1 else f"{stream_key}:{tag(partition)}"


def dead_letter_name(dead_letter_key: str, partition: int, partitions: int) -> str:
    """The dead-letter stream of a partition (`dead_letter_key` itself when there is one partition)."""
    return dead_letter_key if partitions == 1 else f"{dead_letter_key}:{tag(partition)}"


def state_base(state_prefix: str, partition: int) -> str:
    """The prefix of a partition's state keys: `<state_prefix>:{p<k>}`."""
    return f"{state_prefix}:{tag(partition)}"


def assignment(members: Sequence[str], partitions: int) -> dict[str, list[int]]:
    """Partitions per live member: members sorted by name, partition k to member k mod m."""
    live = sorted(set(members))
    out: dict[str, list[int]] = {m: [] for m in live}
    if not live:
        return out
    for p in range(partitions):
        out[live[p % len(live)]].append(p)
    return out


def id_key(entry_id: str) -> tuple[int, int]:
    """A Redis stream id `<ms>-<seq>` as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def compare_ids(a: str, b: str) -> int:
    """Order of two Redis stream ids `<ms>-<seq>`: -1, 0 or 1."""
    x, y = id_key(a), id_key(b)
    return (x > y) - (x < y)


def first_after(ids: Sequence[str], last_id: str) -> int:
    """In ids in stream order (ascending), the index of the first one after `last_id`: those before it are at or
    before it. A bisection: a micro-batch is thousands of ids, and comparing each cost ~3 % of a worker."""
    return bisect_right(ids, id_key(last_id), key=id_key)
