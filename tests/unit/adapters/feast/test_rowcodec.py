"""The compiled row codec (`_rowcodec.c`) against the Python steps it replaces and against Feast's own conversion.

The Python encoder (`StreamRowEncoder.python_values`) and HSET builder (`stream_push.hset_command`) are the
reference; Feast's `python_values_to_proto_values` (through `RedisDirectPusher.reference_encode`) and a RESP parser
(hiredis) check both independently."""

from __future__ import annotations

import os
import random

import hiredis
import pytest

from freqcap.adapters.feast.native import row_codec
from freqcap.adapters.feast.stream_push import (
    PairState,
    RedisDirectPusher,
    StreamRowEncoder,
    hset_command,
    pair_row,
)
from freqcap.domain.stream.buckets import PairCounts

_T0 = 1_790_000_000


@pytest.fixture(scope="module")
def codec():
    module = row_codec()
    if module is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the row codec is not built in this install (hatch_build.py needs a C compiler)")
        pytest.skip("the row codec is not built here (no C compiler when the package was installed)")
    return module


def _random_pairs(rng: random.Random, n: int) -> list[PairCounts]:
    """Pairs as the worker holds them: mostly one or two impression buckets; some clicks and conversions; zero
    counts (left out of a row with several buckets, kept in a row with one); long-lived pairs with many buckets and
    counts beyond the small-count table; no impression, or one at a negative or far time."""
    pairs = []
    for _ in range(n):
        pair = PairCounts()
        for kind, choices in (("i", [0, 1, 1, 1, 2, 3, 5, 9, 40]), ("c", [0, 0, 1, 2, 6]), ("v", [0, 0, 0, 1, 20])):
            for _ in range(rng.choice(choices)):
                pair.buckets[kind][(_T0 + 60 * rng.randrange(1500))] = rng.choice([1, 1, 2, 3, 0, 200, 20_000, 1 << 40])
        pair.last_imp_us = rng.choice([None, _T0 * 1_000_000 + rng.randrange(10**9), -1_500_001, 1 << 60])
        pairs.append(pair)
    return pairs


def test_the_codecs_values_equal_the_python_encoders_and_feasts(codec):
    rng = random.Random(5)
    pairs = _random_pairs(rng, 3000)
    python = StreamRowEncoder()
    native_values = [codec.encode_values(p.buckets, p.last_imp_us) for p in pairs]
    assert native_values == [python.python_values(p) for p in pairs]
    assert any(len(p.buckets["i"]) > 16 for p in pairs)  # beyond the codec's stack buffers
    # Feast's own conversion (slow: 300 pairs) of the pairs a row can hold: a time Python's datetime can hold, and
    # no kind whose only bucket counts zero (never in a row; the encoders keep it, Feast's row would drop it).
    checked = 0
    for pair, values in zip(pairs, native_values, strict=True):
        if checked == 300:
            break
        single_zero = any(list(b.values()) == [0] for b in pair.buckets.values())
        if single_zero or (pair.last_imp_us is not None and not 0 <= pair.last_imp_us < 4 * 10**15):
            continue
        row, _ = pair_row(PairState("ad", "u", "a", pair.buckets, pair.last_imp_us), 0)
        assert values == RedisDirectPusher.reference_encode(row)
        checked += 1
    assert checked == 300


def test_a_single_bucket_with_a_zero_count_and_an_empty_pair_are_encoded_as_in_python(codec):
    python = StreamRowEncoder()
    for pair in (PairCounts(), PairCounts({"i": {_T0: 0}, "c": {}, "v": {}}), PairCounts({"i": {_T0: 0, _T0 + 60: 0}})):
        assert codec.encode_values(pair.buckets, pair.last_imp_us) == python.python_values(pair)


def test_counts_beyond_int64_fall_back_to_the_python_path(codec):
    pair = PairCounts({"i": {_T0: 1 << 70}, "c": {}, "v": {}}, last_imp_us=_T0 * 1_000_000)
    with pytest.raises(OverflowError):
        codec.encode_values(pair.buckets, pair.last_imp_us)
    encoder = StreamRowEncoder()
    assert encoder.values(pair) == encoder.python_values(pair)  # the encoder fell back, the same bytes


def _args(command: bytes) -> list[bytes]:
    reader = hiredis.Reader()
    reader.feed(command)
    return reader.gets()


def test_the_codecs_hset_writes_only_the_changed_values_as_the_python_builder_does(codec):
    rng = random.Random(9)
    encoder = StreamRowEncoder()
    fields = tuple(b"$4\r\nf%03d\r\n" % i for i in range(8))
    names = [b"f%03d" % i for i in range(8)]
    head, key, ts_value = b"*18\r\n$4\r\nHSET\r\n", b"$5\r\nkey:1\r\n", b"$3\r\nts!\r\n"
    pairs = _random_pairs(rng, 600)
    seen_partial = 0
    for now, earlier in zip(pairs, pairs[1:] + pairs[:1], strict=True):
        values = encoder.python_values(now)
        before = rng.choice([None, encoder.python_values(earlier), list(values), tuple(values)])
        if before is not None and rng.random() < 0.5:  # one value as it was, the rest changed
            before = list(before)
            before[rng.randrange(7)] = values[rng.randrange(7)]
        command = codec.hset_command(head, key, fields, ts_value, values, before)
        assert command == hset_command(head, key, fields, ts_value, values, before, {})
        # Independently: a valid RESP command of the time and exactly the values that differ from `before`.
        expected = [b"HSET", b"key:1", names[0], b"ts!"]
        for i, value in enumerate(values):
            if before is None or value != before[i]:
                expected += [names[i + 1], value]
        assert _args(command) == expected
        seen_partial += before is not None and 4 < len(expected) < 18
    assert seen_partial > 50


def test_the_codec_rejects_malformed_arguments_with_an_error_not_a_crash(codec):
    fields = tuple(b"$1\r\nf\r\n" for _ in range(8))
    with pytest.raises(ValueError):
        codec.hset_command(b"h", b"k", fields[:3], b"t", [b"v"] * 7, None)
    with pytest.raises(ValueError):
        codec.hset_command(b"h", b"k", fields, b"t", [b"v"] * 7, [b"v"] * 6)
    with pytest.raises(TypeError):
        codec.hset_command(b"h", b"k", fields, b"t", ["text"] * 7, None)
    with pytest.raises(TypeError):
        codec.encode_values({"i": {"not an int": 1}}, None)
    with pytest.raises(TypeError):
        codec.encode_values([], None)
