"""Redis `DUMP` payloads of small hashes, built column-wise: `RESTORE` writes a whole hash in one cheap command.

Why: a bulk write of a 15-field hash as `HSET key f1 v1 ... f15 v15` + `EXPIRE` costs Redis ~14 µs of its one core
per row (34 arguments parsed into 34 objects, 15 listpack look-ups, a second command for the TTL): the raw
pipelined floor on a 2-core box is ~70 k rows/s. `RESTORE key ttl payload` carries the same hash as the bytes
Redis itself keeps in memory (a listpack), so Redis checks a CRC, copies the blob and sets the TTL: ~2.5x fewer
Redis microseconds per row (measured in `benchmarks/bench_materialize.py`). It only creates keys — a key that
exists answers `BUSYKEY` and is written with `HSET` instead, so fields other views keep in the same hash are never
touched.

The payload is the `DUMP` format (Redis `cluster.c`/`rdb.c`): one RDB object type byte (`RDB_TYPE_HASH_LISTPACK`,
16, since Redis 7.0), the listpack as an RDB string (length-prefixed, uncompressed), the RDB version (2 bytes,
little-endian) and a CRC-64 (Jones polynomial, reflected, init 0; little-endian) of everything before it. The
listpack (`listpack.c`): a 6-byte header (total bytes uint32, element count uint16), entries, `0xFF`; a string
entry shorter than 64 bytes is `0x80 | len`, the bytes, and its back-length `1 + len`.

Nothing here is trusted on faith: the writer takes the type byte and RDB version from a `DUMP` the server itself
made, and before using `RESTORE` it writes one real row both ways and requires the two keys' `DUMP`s to be
byte-identical (`freqcap.adapters.feast.bulk.redis_target`). A server whose hash encoding differs (older Redis,
other listpack limits) falls back to `HSET`; a Redis upgrade that changes the format fails that check (and the
tests), not production.

Pure functions only (NumPy/Arrow); no I/O.
"""

from __future__ import annotations

import re
import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

RDB_TYPE_HASH_LISTPACK = 16
# Redis listpacks store strings that parse as int64 as integers: such a string needs the integer encodings.
_INT_LIKE = re.compile(rb"-?[1-9][0-9]{0,18}|0")
# First bytes that can start a string Redis would store as an integer (a digit or '-').
_INT_START = np.zeros(256, dtype=bool)
_INT_START[list(b"-0123456789")] = True
# 6-bit string entries: shorter than 64 bytes (every ValueProto / Timestamp / field name the feature views use).
MAX_SHORT = 63

_JONES_REFLECTED = 0x95AC9329AC4BC9B5  # reflect(0xAD93D23594C935A9)


def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _JONES_REFLECTED if c & 1 else c >> 1
        table[i] = c
    return table


def _crc_table16(table: np.ndarray) -> np.ndarray:
    """CRC state after two zero bytes from every 16-bit start state: two table steps per 16-bit word at once."""
    x = np.arange(1 << 16, dtype=np.uint64)
    eight = np.uint64(8)
    for _ in range(2):
        x = table[(x & np.uint64(0xFF)).astype(np.intp)] ^ (x >> eight)
    return x


_CRC_TABLE = _crc_table()
_CRC_TABLE16 = _crc_table16(_CRC_TABLE)
_CRC_LIST = [int(x) for x in _CRC_TABLE]


def crc64(data: bytes, crc: int = 0) -> int:
    """Redis's CRC-64 (Jones, reflected, init 0, no final xor) of `data`, byte by byte: the reference."""
    table = _CRC_LIST
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def crc64_rows(arr: pa.Array) -> np.ndarray:
    """Redis's CRC-64 of every row of a binary array at once (uint64 per row).

    Rows are right-aligned in a zero-padded byte matrix: with init 0 a leading zero byte leaves the CRC at 0,
    so padding in front changes nothing, and every row advances through one column per step together. Each step
    consumes two bytes (a little-endian 16-bit word) through a 65,536-entry table: the CRC is linear, so two byte
    steps from state `c` equal `table16[(c ^ word) & 0xFFFF] ^ (c >> 16)`.
    """
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    lengths = pc.binary_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    width = int(lengths.max())
    width += width % 2  # whole 16-bit words (one more leading zero where needed)
    # Zero bytes in front of every row (a C++ join, no per-byte index arithmetic), so each row is `width` long.
    pad = width - lengths
    pad_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(pad, out=pad_offsets[1:])
    zeros = pa.Array.from_buffers(
        pa.binary(),
        n,
        [None, pa.py_buffer(pad_offsets.astype(np.int32)), pa.py_buffer(np.zeros(int(pad_offsets[-1]), np.uint8))],
    )
    padded = pc.binary_join_element_wise(zeros, arr, pa.scalar(b"", pa.binary()))
    start = np.frombuffer(padded.buffers()[1], np.int32, count=1, offset=padded.offset * 4)[0]
    rows = np.frombuffer(padded.buffers()[2], np.uint8)[int(start) : int(start) + n * width].reshape(n, width)
    # Column-major (words, n): each step reads one contiguous column (word j of every row).
    words = np.ascontiguousarray(rows.view("<u2").T)
    crc = np.zeros(n, np.uint64)
    low = np.empty(n, np.uint16)
    sixteen = np.uint64(16)
    for j in range(width // 2):
        np.bitwise_xor(crc.astype(np.uint16), words[j], out=low)
        crc >>= sixteen
        crc ^= np.take(_CRC_TABLE16, low)
    return crc


def _one_byte_rows(values: np.ndarray) -> pa.Array:
    """Each uint8 as a 1-byte binary row."""
    n = len(values)
    offsets = np.arange(n + 1, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(values, np.uint8))]
    )


def _fixed_rows(mat: np.ndarray) -> pa.Array:
    """Each row of a (n, width) uint8 matrix as a binary row."""
    n, width = mat.shape
    offsets = np.arange(0, width * n + 1, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(mat.tobytes())])


def int_like(value: bytes) -> bool:
    """True if Redis's listpack would store `value` as an integer (so a string entry would not match it)."""
    if not _INT_LIKE.fullmatch(value):
        return False
    return -(2**63) <= int(value) < 2**63


def entry(value: bytes) -> bytes:
    """The listpack string entry of one short value (raises if it is long or would be stored as an integer)."""
    if len(value) > MAX_SHORT or int_like(value):
        raise ValueError(f"not a short string entry: {value!r}")
    return bytes([0x80 | len(value)]) + value + bytes([1 + len(value)])


def entries(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Listpack string entries of every row, and a mask of rows that cannot be one (too long or integer-like)."""
    lengths = pc.binary_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
    bad = lengths > MAX_SHORT
    nonempty = lengths > 0
    if nonempty.any():
        offsets = np.frombuffer(values.buffers()[1], np.int32, count=len(values) + 1, offset=values.offset * 4)
        data = np.frombuffer(values.buffers()[2], np.uint8)
        first = np.zeros(len(values), np.uint8)
        first[nonempty] = data[offsets[:-1][nonempty]]
        suspects = np.flatnonzero(nonempty & _INT_START[first])
        for i in suspects.tolist():
            bad[i] = int_like(values[i].as_py())
    small = np.minimum(lengths, MAX_SHORT)
    out = pc.binary_join_element_wise(
        _one_byte_rows((0x80 | small).astype(np.uint8)),
        values,
        _one_byte_rows((1 + small).astype(np.uint8)),
        pa.scalar(b"", pa.binary()),
    )
    return out, bad


def rdb_length(n: np.ndarray) -> pa.Array:
    """RDB length prefixes (6-bit, 14-bit big-endian, or 0x80 + 32-bit big-endian) per row."""
    n = n.astype(np.int64)
    if n.size and int(n.max()) >= 16384:
        return pa.array([_rdb_len(int(x)) for x in n], pa.binary())
    if n.size and int(n.min()) >= 64:
        mat = np.empty((len(n), 2), np.uint8)
        mat[:, 0] = 0x40 | (n >> 8)
        mat[:, 1] = n & 0xFF
        return _fixed_rows(mat)
    return pa.array([_rdb_len(int(x)) for x in n], pa.binary())


def _rdb_len(n: int) -> bytes:
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    return b"\x80" + struct.pack(">I", n)


def payloads(body: pa.Array, elements: int, rdb_type: int, rdb_version: bytes) -> pa.Array:
    """DUMP payloads of listpack hashes whose entries (field, value, field, value, ...) are `body` per row."""
    if elements >= 65535:
        raise ValueError("too many listpack elements")
    total = pc.binary_length(body).to_numpy(zero_copy_only=False).astype(np.int64) + 7  # header + 0xFF
    header = np.empty((len(body), 6), np.uint8)
    header[:, :4] = total.astype("<u4").view(np.uint8).reshape(-1, 4)
    header[:, 4:] = np.frombuffer(struct.pack("<H", elements), np.uint8)
    core = pc.binary_join_element_wise(
        pa.scalar(bytes([rdb_type]), pa.binary()),
        rdb_length(total),
        _fixed_rows(header),
        body,
        pa.scalar(b"\xff" + rdb_version, pa.binary()),
        pa.scalar(b"", pa.binary()),
    )
    crc = crc64_rows(core).astype("<u8")
    return pc.binary_join_element_wise(
        core, _fixed_rows(crc.view(np.uint8).reshape(-1, 8)), pa.scalar(b"", pa.binary())
    )


def payload(pairs: list[tuple[bytes, bytes]], rdb_type: int, rdb_version: bytes) -> bytes:
    """The DUMP payload of one hash, built value by value (the reference for `payloads`)."""
    body = b"".join(entry(f) + entry(v) for f, v in pairs)
    listpack = struct.pack("<IH", len(body) + 7, 2 * len(pairs)) + body + b"\xff"
    core = bytes([rdb_type]) + _rdb_len(len(listpack)) + listpack + rdb_version
    return core + struct.pack("<Q", crc64(core))


def dump_header(dump: bytes) -> tuple[int, bytes]:
    """The RDB type byte and the 2-byte RDB version of a payload the server made with DUMP."""
    if len(dump) < 11:
        raise ValueError("not a DUMP payload")
    return dump[0], dump[-10:-8]


__all__ = [
    "RDB_TYPE_HASH_LISTPACK",
    "crc64",
    "crc64_rows",
    "dump_header",
    "entries",
    "entry",
    "int_like",
    "payload",
    "payloads",
    "rdb_length",
]
