"""The stream worker's edge: parsed events and dead letters carry pseudonyms (checked against `hmac` directly)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, NamedTuple

from freqcap.domain.privacy import Pseudonymizer
from freqcap.domain.stream.messages import StreamEvent, parse_message
from freqcap.domain.stream.privacy import pseudonymize_dead, pseudonymize_events

KEY = b"s" * 32
P = Pseudonymizer({"k7": KEY}, "k7")


def expected(user_id: str) -> str:
    digest = hmac.new(KEY, user_id.encode(), hashlib.sha256).digest()[:16]
    return "u.k7." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Msg(NamedTuple):  # the transport's Message shape: a named tuple of an id and its fields
    id: str
    fields: dict[Any, Any]


def _fields(user: bytes, event_id: str = "e1") -> dict[bytes, bytes]:
    return {
        b"event_id": event_id.encode(),
        b"event_type": b"impression",
        b"event_ts": b"2026-10-10T02:00:00+00:00",
        b"user_id": user,
        b"advertiser_id": b"v1",
        b"campaign_id": b"c1",
        b"ad_id": b"a1",
    }


def test_events_keep_everything_but_the_user_id():
    parsed = [parse_message(_fields(u.encode(), f"e{i}")) for i, u in enumerate(["u1", "u2", "u1", "ü-3"])]
    assert all(isinstance(p, StreamEvent) for p in parsed)
    out = pseudonymize_events(P, parsed)
    assert [e.user_id for e in out] == [expected(u) for u in ["u1", "u2", "u1", "ü-3"]]
    for before, after in zip(parsed, out, strict=True):
        assert (before.event_id, before.kind, before.ts_us, before.advertiser_id, before.campaign_id, before.ad_id) == (
            after.event_id,
            after.kind,
            after.ts_us,
            after.advertiser_id,
            after.campaign_id,
            after.ad_id,
        )


def test_a_cache_kept_across_units_gives_the_same_pseudonyms_and_stays_bounded():
    from freqcap.domain.stream import privacy

    cache: dict[str, str] = {}
    users = [f"u{i % 7}" for i in range(30)]
    for start in range(0, 30, 10):  # three units sharing the worker's cache
        unit = [parse_message(_fields(u.encode(), f"e{start + i}")) for i, u in enumerate(users[start : start + 10])]
        assert [e.user_id for e in pseudonymize_events(P, unit, cache)] == [
            expected(u) for u in users[start : start + 10]
        ]
    assert cache == {u: expected(u) for u in set(users)}
    cache.update({f"x{i}": "stale" for i in range(privacy._CACHE_MAX)})  # past the bound: cleared before use
    (ev,) = pseudonymize_events(P, [parse_message(_fields(b"u1"))], cache)
    assert ev.user_id == expected("u1") and len(cache) == 1


def test_dead_letters_carry_the_pseudonym_or_no_user_id():
    dead = [
        (Msg("1-0", _fields(b"u1")), "bad_event_type"),
        (Msg("2-0", {k.decode(): v.decode() for k, v in _fields(b"u2").items()}), "late"),  # text fields
        (Msg("3-0", _fields(b"\xff\xfe")), "bad_encoding_user_id"),  # not text: dropped, not kept
        (Msg("4-0", {b"event_id": b"x"}), "missing_user_id"),
    ]
    out = pseudonymize_dead(P, dead)
    assert [reason for _, reason in out] == [reason for _, reason in dead]
    assert out[0][0].fields[b"user_id"] == expected("u1").encode()
    assert out[1][0].fields["user_id"] == expected("u2")
    assert b"user_id" not in out[2][0].fields and out[2][0].fields[b"ad_id"] == b"a1"
    assert out[3][0].fields == {b"event_id": b"x"}
    assert [m.id for m, _ in out] == ["1-0", "2-0", "3-0", "4-0"]
    assert dead[0][0].fields[b"user_id"] == b"u1", "the input messages are not modified"
