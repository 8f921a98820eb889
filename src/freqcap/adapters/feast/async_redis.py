"""The Redis online read on the event loop: the commands `RedisFeatureReader.prepare` packs, sent in one write on
an asyncio connection of our own, the replies parsed by hiredis as they arrive, decoded by `RedisFeatureReader.decode`.

Why not the thread pool: a lookup thread per request is a queue (a request waits for a free thread, and the wait
used to count against the store's budget), and the thread hop plus redis-py's reply-by-reply reading cost more CPU
than the round trip itself (profiled: docs/benchmarks). Why not `redis.asyncio`: its pipeline costs ~3 ms for ~120
HMGETs on this machine (every command through its Python bookkeeping), more than the sync reader.

Connections: one per lookup in flight, kept in an idle list and reused; at most `max_connections` open (the caller
admits at most that many lookups at once: `freqcap.api` admission). A lookup that is cancelled (its budget ran out)
or fails closes its connection, so a late reply is never read by another request. The budget measures the store: a
lookup whose replies were all in when its budget ran out (the event loop was busy and resumed it late) returns them. No timeouts here: the caller
bounds every read by its budget (`asyncio.wait_for`), which covers connecting, sending and waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import hiredis
import redis

from freqcap.adapters.feast.fast_reader import CLIENT_NAME, RedisFeatureReader
from freqcap.adapters.feast.reader import UserState
from freqcap.domain.policy.engine import Candidate


class _Protocol(asyncio.Protocol):
    """One Redis connection: feeds hiredis as bytes arrive; `call` resolves when `n` replies are in."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = hiredis.Reader()
        self.replies: list[Any] = []
        self.expected = 0
        self.waiter: asyncio.Future | None = None
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        parser, replies = self.parser, self.replies
        parser.feed(data)
        while (reply := parser.gets()) is not False:
            replies.append(reply)
        waiter = self.waiter
        if waiter is not None and len(replies) >= self.expected and not waiter.done():
            waiter.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(redis.ConnectionError(f"Redis closed the connection ({exc or 'EOF'})"))

    async def call(self, data: bytes, n: int) -> list[Any]:
        """Send `data` (n packed commands) and return the n replies; a Redis error reply raises ResponseError."""
        self.replies = []
        self.expected = n
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        waiter = self.waiter
        try:
            replies = await waiter
        except asyncio.CancelledError:
            # The budget ran out after every reply was in (the store answered; this process, busy, was late to
            # resume the request): use them. Only then: a lookup still waiting on the store is cancelled.
            if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
                raise
            replies = waiter.result()
        self.waiter = None
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise redis.ResponseError(str(reply))
        return replies

    def send(self, data: bytes, n: int) -> asyncio.Future:
        """Send `data` (n packed commands); the future resolves to the n replies (error replies included, as
        `hiredis.ReplyError`), or fails when the connection is lost. `call` for one connection; this for many at once."""
        self.replies = []
        self.expected = n
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _pack(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def setup_commands(kwargs: dict[str, Any]) -> tuple[bytes, int]:
    """(packed commands, count) a new connection sends first, from a redis-py pool's `connection_kwargs`: AUTH,
    SELECT (a non-zero db) and CLIENT SETNAME (so CLIENT LIST shows the reader's connections)."""
    setup = []
    if kwargs.get("password"):
        user = kwargs.get("username")
        auth = (user.encode(), kwargs["password"].encode()) if user else (kwargs["password"].encode(),)
        setup.append(_pack(b"AUTH", *auth))
    if int(kwargs.get("db") or 0):
        setup.append(_pack(b"SELECT", str(int(kwargs["db"])).encode()))
    setup.append(_pack(b"CLIENT", b"SETNAME", (kwargs.get("client_name") or CLIENT_NAME).encode()))
    return b"".join(setup), len(setup)


class ConnectionOwner:
    """Opens a reader's connections on the running loop (each set up with its `setup` commands) and counts them
    (`open_connections`); shared by the single-node and the cluster reader."""

    open_connections: int = 0

    async def _open(self, host: str, port: int, setup: Sequence[bytes]) -> _Protocol:
        _, proto = await asyncio.get_running_loop().create_connection(_Protocol, host, port)
        self.open_connections += 1
        try:
            await proto.call(*setup)
        except BaseException:
            self._discard(proto)
            raise
        return proto

    def _discard(self, proto: _Protocol) -> None:
        proto.close()
        self.open_connections -= 1


class AsyncRedisReader(ConnectionOwner):
    """`RedisFeatureReader.read` as a coroutine, on the event loop (same keys, same bytes, same `UserState`).

    Only for a plain TCP connection without the stream seam (`supports` says): the seam refreshes its status with
    blocking reads, so a reader with a stream stays on the thread pool.
    """

    def __init__(self, reader: RedisFeatureReader, *, max_connections: int = 32):
        if not self.supports(reader):
            raise ValueError("AsyncRedisReader needs a RedisFeatureReader on plain TCP without a stream")
        self.sync = reader
        kwargs = reader.client.connection_pool.connection_kwargs
        self.host = kwargs.get("host", "127.0.0.1")
        self.port = int(kwargs.get("port", 6379))
        self._setup = setup_commands(kwargs)
        self.max_connections = max_connections
        self._idle: list[_Protocol] = []
        self.open_connections = 0

    @staticmethod
    def supports(reader: Any) -> bool:
        """Can this reader's reads run on the event loop?"""
        if not isinstance(reader, RedisFeatureReader) or reader.stream is not None or reader.cluster:
            return False
        pool = reader.client.connection_pool
        return pool.connection_class is redis.Connection and not pool.connection_kwargs.get("path")

    async def _connect(self) -> _Protocol:
        return await self._open(self.host, self.port, self._setup)

    async def read(self, user_id: str, candidates: Sequence[Candidate], at: datetime | None = None) -> UserState:
        """The user's cohort and the state of every distinct (level, entity), as `RedisFeatureReader.read`."""
        plan, entities, commands = self.sync.prepare(user_id, candidates)
        proto = self._idle.pop() if self._idle else await self._connect()
        try:
            replies = await proto.call(b"".join(commands), len(commands))
        except BaseException:  # cancelled (budget), Redis gone, an error reply: this connection is not reused
            self._discard(proto)
            raise
        if proto.lost or len(self._idle) >= self.max_connections:
            self._discard(proto)
        else:
            self._idle.append(proto)
        return self.sync.decode(plan, entities, replies, at)

    def close(self) -> None:
        """Close the idle connections (those in flight close when their lookup ends)."""
        while self._idle:
            self._discard(self._idle.pop())
