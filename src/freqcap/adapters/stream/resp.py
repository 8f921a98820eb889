"""Pre-packed Redis pipelines: RESP encoded in one `join`, sent in one write, one `read_response` per reply.

redis-py's `Pipeline` spends ~10-25 us of Python per command on packing and bookkeeping; the worker issues several
commands per changed pair, so that overhead, not Redis, bounded it (profiled). Same technique as the fast reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError


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
    """Send `commands` in one write and read one reply each (an error reply as its exception, raised after all
    replies are read unless `raise_errors` is False). Any other error closes the connection."""
    if not commands:
        return []
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(commands)], check_health=False)
        replies = []
        for _ in commands:
            try:
                replies.append(conn.read_response(disable_decoding=True))
            except ResponseError as exc:  # an error reply, read in full: the connection stays in step
                replies.append(exc)
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
