"""The fast reader's HMGET commands built from cached key pieces (`_TierCommands`) equal the commands packed
from whole keys built by Feast's own serializer, for any user and entity ids (mixed lengths, non-ASCII, empty),
in any order, with the cache warm or cold."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from freqcap.adapters.feast import online_format as fmt
from freqcap.adapters.feast.fast_reader import _hmget_parts, _TierCommands, pack_hmget

TAIL = _hmget_parts((b"f1", b"_ts:view", b"\x01\x02\x03\x04"))
IDS = st.text(max_size=40)


def _pair(join_keys):
    config = SimpleNamespace(project="freqcap_test", entity_key_serialization_version=3)

    def feast_key(user, entity):  # Feast's serializer, not the fast builder
        key = fmt.string_entity_key(join_keys, (user, entity))
        return fmt._redis_key(config.project, key, entity_key_serialization_version=3)

    return _TierCommands.for_level(config, join_keys, feast_key, TAIL), feast_key


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(IDS, IDS), min_size=1, max_size=30), st.sampled_from(["ad_id", "zz_id"]))
def test_commands_from_pieces_equal_whole_keys(pairs, entity_key):
    """`ad_id` sorts before `user_id` (the entity's piece first, freqcap's views); `zz_id` after (the user's)."""
    built, feast_key = _pair(("user_id", entity_key))
    assert built is not None
    for user, entity in pairs + pairs:  # the second round hits the kept pieces
        assert built.command(built.user_part(user), entity) == pack_hmget(feast_key(user, entity), TAIL)


def test_a_layout_it_does_not_know_is_refused():
    config = SimpleNamespace(project="p", entity_key_serialization_version=3)
    assert _TierCommands.for_level(config, ("ad_id", "user_id"), lambda u, e: b"", TAIL) is None
    assert _TierCommands.for_level(config, ("user_id", "ad_id"), lambda u, e: b"not feast's key", TAIL) is None


def test_varint_equals_protobufs_encoder_at_every_length():
    """`online_format.varint` (unrolled up to five bytes) against protobuf's own varint encoder, around every
    7-bit boundary, for negatives (64-bit two's complement) and at random."""
    import random

    from google.protobuf.internal.encoder import _SignedVarintEncoder, _VarintBytes

    from freqcap.adapters.feast.online_format import varint

    def signed(n):  # protobuf's int64 encoding of n (negatives as ten bytes)
        out = []
        _SignedVarintEncoder()(out.append, n, True)
        return b"".join(out)

    rng = random.Random(3)
    numbers = [0, 1, 127, 128, 1_790_000_012, (1 << 63) - 1, -1, -(1 << 63)]
    for bits in range(1, 64):
        numbers += [(1 << bits) - 1, 1 << bits, (1 << bits) + 1, -(1 << bits)]
    numbers += [rng.randrange(-(1 << 63), 1 << 63) for _ in range(2000)]
    for n in numbers:
        if -(1 << 63) <= n < 1 << 63:
            assert varint(n) == signed(n), n
            if n >= 0:
                assert varint(n) == _VarintBytes(n), n
