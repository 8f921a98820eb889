"""Redis protocol for bulk writes: pre-built RESP commands sent over one raw socket, every reply counted and checked.

Commands are built column-wise as Arrow binary arrays (`RedisTarget.commands`); their bytes go out in one
`sendall` and the replies are read back in large chunks, not parsed one object at a time as redis-py's pipeline
does (which costs more Python per row than the write costs Redis). All replies of the commands used here (HSET,
EXPIRE, EXISTS, RESTORE) are single lines, so counting newlines counts replies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from freqcap.adapters.feast.bulk.errors import BulkMaterializeError

CRLF = b"\r\n"


def bulk_string(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def buffer_view(arr: pa.Array) -> memoryview:
    """The contiguous bytes of a binary array's values (all rows back to back)."""
    offsets = np.frombuffer(arr.buffers()[1], np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    return memoryview(arr.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def send_and_check(conn: Any, data: memoryview, replies: int) -> None:
    """Send pipelined commands whose replies are all single-line (integers or errors); raise on any error reply."""
    conn._sock.sendall(data)
    read_and_check(conn, replies)


def read_and_check(conn: Any, replies: int) -> None:
    """Read `replies` single-line replies of commands sent before; raise on any error reply (after reading all)."""
    sock = conn._sock
    seen = 0
    at_line_start = True
    first_error: bytes | None = None
    while seen < replies:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise BulkMaterializeError("Redis closed the connection during a bulk write")
        seen += chunk.count(b"\n")
        if first_error is None:
            start = 0 if at_line_start and chunk[:1] == b"-" else chunk.find(b"\n-") + 1
            if start or (chunk[:1] == b"-" and at_line_start):
                end = chunk.find(b"\r", start)
                first_error = chunk[start : end if end >= 0 else None]
        at_line_start = chunk.endswith(b"\n")
    if seen != replies:
        raise BulkMaterializeError(f"expected {replies} Redis replies, got {seen}")
    if first_error is not None:
        raise BulkMaterializeError(f"Redis rejected a bulk write: {first_error.decode(errors='replace')}")


def send_and_read(conn: Any, data: memoryview, replies: int) -> list[bytes]:
    """Send pipelined commands and return their single-line replies, raising on an error reply."""
    lines = send_and_read_lines(conn, data, replies)
    errors = [line for line in lines if line.startswith(b"-")]
    if errors:
        raise BulkMaterializeError(f"Redis rejected a bulk probe: {errors[:1]!r} ({len(errors)} of {replies} replies)")
    return lines


def send_and_read_lines(conn: Any, data: memoryview, replies: int) -> list[bytes]:
    """Send pipelined commands whose replies are single lines; return the lines (errors included)."""
    conn._sock.sendall(data)
    return read_lines(conn, replies)


def read_lines(conn: Any, replies: int) -> list[bytes]:
    """Read `replies` single-line replies of commands sent before; return the lines (errors included)."""
    sock = conn._sock
    chunks: list[bytes] = []
    seen = 0
    while seen < replies:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise BulkMaterializeError("Redis closed the connection during a bulk write")
        chunks.append(chunk)
        seen += chunk.count(b"\n")
    if seen != replies:
        raise BulkMaterializeError(f"expected {replies} Redis replies, got {seen}")
    return b"".join(chunks).split(b"\r\n")[:replies]
