"""Pre-packed Redis pipelines: RESP encoded in one `join`, sent in one write, one `read_response` per reply.

redis-py's `Pipeline` spends ~10-25 us of Python per command on packing and bookkeeping; the worker issues several
commands per changed pair, so that overhead, not Redis, bounded it (profiled). Same technique as the fast reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def _bulk(value: bytes | str | int) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    elif isinstance(value, int):
        value = b"%d" % value
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack(*args: bytes | str | int) -> bytes:
    """One command as RESP."""
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


def round_trip(client: Any, commands: Sequence[bytes], raise_errors: bool = True) -> list[Any]:
    """Send `commands` in one write and read one reply each, parsed by hiredis straight off the socket (an error
    reply comes back as its `ResponseError`, raised after all replies are read unless `raise_errors` is False).
    Any other error closes the connection."""
    if not commands:
        return []
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(commands)], check_health=False)
        replies = _read_replies(conn, len(commands))
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    if raise_errors:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


def _read_replies(conn: Any, n: int) -> list[Any]:
    """n replies from the connection's socket: redis-py's per-reply `read_response` costs more Python than a
    pipelined write of one small command costs Redis, so the bytes are fed to one hiredis reader in large chunks."""
    sock = conn._sock
    reader = hiredis.Reader(replyError=ResponseError)
    replies: list[Any] = []
    while len(replies) < n:
        reply = reader.gets()
        if reply is False:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError as exc:
                raise RedisTimeoutError(f"Timeout reading from {conn.host}:{conn.port}") from exc
            except OSError as exc:
                raise RedisConnectionError(f"Error reading from {conn.host}:{conn.port}: {exc}") from exc
            if not chunk:
                raise RedisConnectionError(f"Connection closed by server ({conn.host}:{conn.port})")
            reader.feed(chunk)
            continue
        replies.append(reply)
    return replies
