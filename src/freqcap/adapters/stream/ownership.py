"""Which worker consumes which partition: leases in Redis, one owner per partition at a time.

Each worker heartbeats its name into `<state_prefix>:members` (a sorted set scored by the wall clock; members
silent for a lease TTL are dropped). From the live members every worker computes the same round-robin assignment
(`freqcap.domain.stream.partitions.assignment`) and then
* **acquires** each partition assigned to it whose lease `<state_prefix>:{p<k>}:lease` is free: the token
  `<worker>:<epoch>` (epoch: `INCR <state_prefix>:{p<k>}:epoch`) is set with `NX` and a TTL;
* **renews** the leases it holds (only while the stored token is its own);
* **releases** a partition assigned to another worker after finishing its current micro-batch, so the new owner
  takes it at once.

A worker that dies keeps its partitions until their leases expire (`stream.lease_ttl`); then the assigned worker
acquires them and claims every entry the dead one left pending before reading anything new. Every flush checks the
token inside its atomic write, so a worker that lost its lease (paused, partitioned) cannot write after another took
over. `StaticOwnership` is the degenerate case for embedded replays: one worker, every partition, no Redis.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from freqcap.domain.stream.partitions import assignment, state_base

log = logging.getLogger(__name__)

_ACQUIRE = r"""
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(ARGV[1]) + 1) ~= ARGV[1] .. ':' then return false end
local epoch = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. ':' .. epoch
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
"""
_RENEW = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseOwnership:
    """Partition leases for worker `name` (see the module docstring). One instance per worker process."""

    def __init__(self, client: Any, prefix: str, partitions: int, name: str, lease_ttl_s: float):
        self.client = client
        self.prefix = prefix
        self.partitions = partitions
        self.name = name
        self.ttl_ms = max(100, int(lease_ttl_s * 1000))
        self.members_key = f"{prefix}:members"
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def _keys(self, p: int) -> tuple[str, str]:
        base = state_base(self.prefix, p)
        return f"{base}:lease", f"{base}:epoch"

    def heartbeat(self) -> list[int]:
        """Record this worker as live; the partitions the assignment gives it."""
        now_ms = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.members_key, {self.name: now_ms})
        pipe.zremrangebyscore(self.members_key, "-inf", now_ms - self.ttl_ms)
        pipe.zrange(self.members_key, 0, -1)
        *_, members = pipe.execute()
        names = [m.decode() for m in members]
        return assignment(names, self.partitions).get(self.name, [])

    def acquire(self, partition: int) -> str | None:
        """A new lease token (a new epoch) when the partition is free or held under this worker's own name (a
        restart of the same consumer: the old process is gone), else None."""
        lease, epoch = self._keys(partition)
        token = self._acquire(keys=[lease, epoch], args=[self.name, self.ttl_ms])
        return token.decode() if token else None

    def renew(self, partition: int, token: str) -> bool:
        """False when the lease is no longer this worker's (it must stop writing the partition)."""
        return bool(self._renew(keys=[self._keys(partition)[0]], args=[token, self.ttl_ms]))

    def release(self, partition: int, token: str) -> None:
        self._release(keys=[self._keys(partition)[0]], args=[token])

    def leave(self) -> None:
        """Stop being a member (a clean shutdown: the others rebalance at once)."""
        self.client.zrem(self.members_key, self.name)

    @property
    def renew_every_s(self) -> float:
        return self.ttl_ms / 1000 / 4


class StaticOwnership:
    """Every partition, always, no lease (embedded replay)."""

    name = "replay"

    def __init__(self, partitions: int = 1):
        self.partitions = partitions
        self.renew_every_s = float("inf")

    def heartbeat(self) -> list[int]:
        return list(range(self.partitions))

    def acquire(self, partition: int) -> str | None:
        return "static"

    def renew(self, partition: int, token: str) -> bool:
        return True

    def release(self, partition: int, token: str) -> None:
        pass

    def leave(self) -> None:
        pass
