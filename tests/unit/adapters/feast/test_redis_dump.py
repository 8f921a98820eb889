"""Redis DUMP payloads built column-wise: checked against Redis's published CRC check value and byte-by-byte loops.

The live-server check (a RESTOREd hash DUMPs byte-identically to the same hash written with HSET) is in
tests/integration/test_bulk_materialize.py; here the pure parts are checked without a server.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from freqcap.adapters.feast import redis_dump as rd


def test_crc64_matches_redis_check_value():
    # Redis src/crc64.c self-test: crc64(0, "123456789", 9) == 0xe9c6d914c4b8d9ca (CRC-64/Jones, reflected).
    assert rd.crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    assert rd.crc64(b"") == 0


def _bitwise_crc64(data: bytes) -> int:
    """CRC-64/Jones straight from the polynomial, one bit at a time (no table): the independent reference."""
    poly = int(f"{0xAD93D23594C935A9:064b}"[::-1], 2)  # reflected polynomial
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc


def test_vectorized_crc_equals_a_bitwise_loop_for_ragged_rows():
    rnd = random.Random(3)
    rows = [bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 1, 7, 64, 255, 400]))) for _ in range(300)]
    rows += [b"\x00" * 9, b"\x00abc", b"abc\x00"]  # leading/trailing zeros: padding must not be confused with data
    arr = pa.array(rows, pa.binary())
    want = [_bitwise_crc64(r) for r in rows]
    assert [int(x) for x in rd.crc64_rows(arr)] == want
    # A sliced array (non-zero offset) reads its own rows only.
    assert [int(x) for x in rd.crc64_rows(arr.slice(17, 40))] == want[17:57]
    assert len(rd.crc64_rows(pa.array([], pa.binary()))) == 0


@pytest.mark.parametrize(
    ("value", "as_int"),
    [
        (b"0", True),
        (b"7", True),
        (b"-12", True),
        (b"9223372036854775807", True),
        (b"-9223372036854775808", True),
        (b"9223372036854775808", False),  # overflows int64: Redis keeps it a string
        (b"01", False),
        (b"-0", False),
        (b"+1", False),
        (b" 1", False),
        (b"1 ", False),
        (b"", False),
        (b"\x20\x05", False),  # a ValueProto int64_val: tag 0x20 then the varint
    ],
)
def test_integer_like_strings_follow_redis_rules(value, as_int):
    assert rd.int_like(value) is as_int


def test_entries_flag_rows_that_cannot_be_short_strings():
    values = [b"\x20\x05", b"", b"x" * 63, b"x" * 64, b"42", b"-", b"4a"]
    got, bad = rd.entries(pa.array(values, pa.binary()))
    assert bad.tolist() == [False, False, False, True, True, False, False]
    for value, entry, flagged in zip(values, got.to_pylist(), bad.tolist(), strict=True):
        if not flagged:
            # listpack 6-bit string: 10xxxxxx length, the bytes, back-length = 1 + length
            assert entry == bytes([0x80 | len(value)]) + value + bytes([1 + len(value)])


def test_rdb_length_prefixes():
    lengths = np.array([0, 63, 64, 300, 16383, 16384, 70000])
    got = rd.rdb_length(lengths).to_pylist()
    assert got[:2] == [b"\x00", b"\x3f"]
    assert got[2:5] == [b"\x40\x40", b"\x41\x2c", b"\x7f\xff"]
    assert got[5:] == [b"\x80" + struct.pack(">I", 16384), b"\x80" + struct.pack(">I", 70000)]
    assert rd.rdb_length(np.array([100, 200])).to_pylist() == [b"\x40\x64", b"\x40\xc8"]


def test_vectorized_payloads_equal_payloads_built_value_by_value():
    rnd = random.Random(9)
    fields = [b"_ts:user_ad"] + [bytes([0x41 + i]) * 4 for i in range(14)]
    hashes = []
    for _ in range(200):
        hashes.append([(f, b"\x20" + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 10)))) for f in fields])
    columns = []
    for j, field in enumerate(fields):
        columns += [rd.entry(field), rd.entries(pa.array([h[j][1] for h in hashes], pa.binary()))[0]]
    args = [pa.scalar(c, pa.binary()) if isinstance(c, bytes) else c for c in columns]
    body = pc.binary_join_element_wise(*args, pa.scalar(b"", pa.binary()))
    got = rd.payloads(body, 2 * len(fields), rd.RDB_TYPE_HASH_LISTPACK, b"\x0a\x00").to_pylist()
    assert got == [rd.payload(h, rd.RDB_TYPE_HASH_LISTPACK, b"\x0a\x00") for h in hashes]
    one = got[0]
    # DUMP layout: type, RDB string of the listpack, RDB version, CRC-64 of everything before it (little-endian).
    assert one[0] == rd.RDB_TYPE_HASH_LISTPACK and one[-10:-8] == b"\x0a\x00"
    assert struct.unpack("<Q", one[-8:])[0] == _bitwise_crc64(one[:-8])
    listpack_len = ((one[1] & 0x3F) << 8) | one[2]
    listpack = one[3 : 3 + listpack_len]
    assert struct.unpack("<IH", listpack[:6]) == (listpack_len, 2 * len(fields)) and listpack[-1] == 0xFF
    assert rd.dump_header(one) == (rd.RDB_TYPE_HASH_LISTPACK, b"\x0a\x00")
