"""The Redis Cluster online read on the event loop: `RedisClusterFeatureReader.prepare_routed`'s commands grouped
by master, written to every master on connections of our own before any reply is awaited, the replies parsed by
hiredis as they arrive and decoded by `RedisFeatureReader.decode`.

One set of connections per master (an idle list each, at most `max_connections` kept), as `AsyncRedisReader` keeps
one set for a single node; a lookup takes one connection per master it needs. A lookup that is cancelled (its
budget ran out) or fails closes every connection it used, so a late reply is never read by another request. A
routing failure (`MOVED` / `ASK` / `CLUSTERDOWN` reply, a master that refuses or drops the connection) fails the
lookup and makes the shared topology re-read the slot map, in a task of its own (no request waits for it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import hiredis
import redis

from freqcap.adapters.feast.async_redis import AsyncRedisReader, ConnectionOwner, _pack, _Protocol, setup_commands
from freqcap.adapters.feast.fast_reader import RedisClusterFeatureReader
from freqcap.adapters.feast.reader import UserState
from freqcap.adapters.redis_cluster import ROUTING_ERRORS, Node, SlotMap, parse_cluster_slots
from freqcap.domain.policy.engine import Candidate

log = logging.getLogger(__name__)

REFRESH_TIMEOUT = 1.0  # seconds per node tried when re-reading the slot map

# Error replies that mean "ask another node", as redis-py names them (the fail-open reason shows the class name).
_REPLY_ERRORS = {
    "MOVED": redis.exceptions.MovedError,
    "ASK": redis.exceptions.AskError,
    "CLUSTERDOWN": redis.exceptions.ClusterDownError,
    "TRYAGAIN": redis.exceptions.TryAgainError,
}


def reply_error(reply: hiredis.ReplyError) -> redis.RedisError:
    """The redis-py exception for an error reply (`MOVED 3999 127.0.0.1:7001` -> MovedError)."""
    text = str(reply)
    code, _, rest = text.partition(" ")
    cls = _REPLY_ERRORS.get(code)
    return cls(rest) if cls is not None else redis.ResponseError(text)


class AsyncClusterReader(ConnectionOwner):
    """`RedisClusterFeatureReader.read` as a coroutine on the event loop (same keys, bytes and `UserState`).

    Only without the stream seam and on plain TCP (`supports`): the seam refreshes with blocking reads.
    """

    def __init__(self, reader: RedisClusterFeatureReader, *, max_connections: int = 32):
        if not self.supports(reader):
            raise ValueError("AsyncClusterReader needs a RedisClusterFeatureReader on plain TCP without a stream")
        self.sync = reader
        self.topology = reader.topology
        self.max_connections = max_connections
        self._idle: dict[Node, list[_Protocol]] = {}
        self._setup: dict[Node, tuple[bytes, int]] = {}
        self.open_connections = 0
        self._refreshing: asyncio.Future | None = None

    @staticmethod
    def supports(reader: Any) -> bool:
        """Can this reader's reads run on the event loop?"""
        if not isinstance(reader, RedisClusterFeatureReader) or reader.stream is not None:
            return False
        kwargs = reader.topology.client_kwargs
        return not kwargs.get("ssl") and not kwargs.get("unix_socket_path")

    async def _connect(self, node: Node) -> _Protocol:
        setup = self._setup.get(node)
        if setup is None:
            setup = self._setup[node] = setup_commands(self.topology.client(node).connection_pool.connection_kwargs)
        return await self._open(node[0], node[1], setup)

    async def _acquire(self, node: Node) -> _Protocol:
        idle = self._idle.get(node)
        while idle:
            proto = idle.pop()
            if not proto.lost:
                return proto
            self._discard(proto)  # the master closed it while idle (restarted, killed)
        return await self._connect(node)

    def _release(self, node: Node, proto: _Protocol) -> None:
        idle = self._idle.setdefault(node, [])
        if proto.lost or len(idle) >= self.max_connections:
            self._discard(proto)
        else:
            idle.append(proto)

    def _refresh_soon(self, exc: BaseException) -> None:
        """After a routing failure, re-read the slot map in a task of its own (one at a time, at most once per
        `min_refresh_interval`). On the event loop, not a thread: a thread running Python holds the GIL for up to
        5 ms at a time, which delays every request on the loop (and sheds them as `overload`)."""
        if not isinstance(exc, ROUTING_ERRORS) or (self._refreshing is not None and not self._refreshing.done()):
            return
        self.topology.failures_reported += 1
        if self.topology.begin_refresh():
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        for node in self.topology.candidates():
            try:
                slot_map = await asyncio.wait_for(self._read_slots(node), REFRESH_TIMEOUT)
            except (OSError, TimeoutError, redis.RedisError) as exc:
                log.debug("CLUSTER SLOTS from %s:%s failed: %s", *node, exc)
                continue
            if slot_map.nodes:
                self.topology.install(slot_map)
                return
        log.warning("Redis Cluster slot map refresh failed: no node answered; keeping the old one")

    async def _read_slots(self, node: Node) -> SlotMap:
        setup = self._setup.get(node)
        if setup is None:
            setup = self._setup[node] = setup_commands(self.topology.client(node).connection_pool.connection_kwargs)
        _, proto = await asyncio.get_running_loop().create_connection(_Protocol, node[0], node[1])
        try:
            replies = await proto.call(setup[0] + _pack(b"CLUSTER", b"SLOTS"), setup[1] + 1)
        finally:
            proto.close()
        return parse_cluster_slots(replies[-1], node)

    async def read(self, user_id: str, candidates: Sequence[Candidate], at: datetime | None = None) -> UserState:
        """The user's cohort and the state of every distinct (level, entity), as `RedisClusterFeatureReader.read`."""
        plan, entities, commands, slots = self.sync.prepare_routed(user_id, candidates)
        used: list[tuple[Node, _Protocol, list[int], asyncio.Future]] = []
        try:
            slot_map = self.topology.loaded
            if slot_map is None:  # never read (the cluster was down at start): read it on a thread, fail this one
                raise redis.ConnectionError("the Redis Cluster slot map is not loaded yet")
            nodes = slot_map.nodes
            for index, positions in slot_map.group(slots).items():
                node = nodes[index]
                proto = await self._acquire(node)
                waiter = proto.send(b"".join([commands[i] for i in positions]), len(positions))
                used.append((node, proto, positions, waiter))
            replies: list[Any] = [None] * len(commands)
            for _, _, positions, waiter in used:
                try:
                    got = await waiter
                except asyncio.CancelledError:
                    # The budget ran out after every master had answered (this process was late to resume the
                    # request): use the replies. Only then: a lookup still waiting on a master is cancelled.
                    if not all(w.done() and not w.cancelled() and w.exception() is None for *_, w in used):
                        raise
                    got = waiter.result()
                for i, reply in zip(positions, got, strict=True):
                    if isinstance(reply, hiredis.ReplyError):
                        raise reply_error(reply)
                    replies[i] = reply
        except BaseException as exc:  # cancelled, a master gone, an error reply: none of these connections is reused
            for _, proto, _, waiter in used:
                if not waiter.done():
                    waiter.cancel()  # nobody will await it: closing the connection must not set an error on it
                elif not waiter.cancelled():
                    waiter.exception()  # looked at (no "exception never retrieved" warning)
                self._discard(proto)
            self._refresh_soon(exc)
            raise
        for node, proto, _, _ in used:
            proto.waiter = None
            self._release(node, proto)
        return self.sync.decode(plan, entities, replies, at)

    def close(self) -> None:
        """Close the idle connections (those in flight close when their lookup ends)."""
        for idle in self._idle.values():
            while idle:
                self._discard(idle.pop())


def async_reader_for(reader: Any, max_connections: int) -> AsyncRedisReader | AsyncClusterReader | None:
    """The event-loop reader for `reader` (single-node Redis or Redis Cluster), or None: it stays on threads."""
    if AsyncRedisReader.supports(reader):
        return AsyncRedisReader(reader, max_connections=max_connections)
    if AsyncClusterReader.supports(reader):
        return AsyncClusterReader(reader, max_connections=max_connections)
    return None
