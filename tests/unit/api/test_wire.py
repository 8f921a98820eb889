"""The hot path's msgspec decoder (`freqcap.api.wire`) against the published pydantic model (`DecideRequest`): on
generated bodies, whatever msgspec accepts pydantic accepts too, with the same values. (Bodies only pydantic
accepts are allowed: the fast path hands those to FastAPI; `test_typical_bodies_take_the_fast_path` makes sure
the bodies an ad server sends are not among them.)"""

from __future__ import annotations

import json
from datetime import UTC

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from freqcap.api.schemas import DecideRequest
from freqcap.api.wire import decode_decide

MISSING = object()

TEXT = st.one_of(
    st.sampled_from(["", "u1", "ad-7", " ", "é", "\u0000", "a" * 300]),
    st.text(max_size=8),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
    st.booleans(),
    st.lists(st.text(max_size=2), max_size=2),
)
TIMESTAMPS = st.one_of(
    st.sampled_from(
        [
            "2026-10-10T00:00:00Z",
            "2026-10-10T00:00:00.123456Z",
            "2026-10-10T00:00:00+02:00",
            "2026-10-10T00:00:00",
            "2026-10-10 00:00:00Z",
            "2026-10-10t00:00:00z",
            "2026-10-10T00:00Z",
            "2026-10-10",
            "2026-10-10T24:00:00Z",
            "2026-10-10T23:59:60Z",
            "2026-02-30T00:00:00Z",
            "2026-10-10T00:00:00.1234567891Z",
            "2026-10-10T00:00:00+24:00",
            "20261010T000000Z",
            "1760054400",
            "now",
            "",
        ]
    ),
    st.datetimes(timezones=st.sampled_from([None, UTC])).map(lambda d: d.isoformat()),
    st.integers(0, 2_000_000_000),
    st.floats(0, 2e9, allow_nan=False),
    st.none(),
    st.booleans(),
)


def _maybe(value_strategy):
    return st.one_of(st.just(MISSING), value_strategy)


@st.composite
def candidates(draw):
    cand = {}
    for key in ("ad_id", "campaign_id", "advertiser_id"):
        value = draw(st.one_of(st.text(min_size=1, max_size=6), _maybe(TEXT)))
        if value is not MISSING:
            cand[key] = value
    if draw(st.booleans()) and draw(st.booleans()):
        cand[draw(st.sampled_from(["extra", "ad_id ", "AD_ID"]))] = 1
    return cand


@st.composite
def bodies(draw):
    body: dict = {}
    # Absent and null (an id-less request, answered with the anonymous decision) are drawn often, like "".
    user = draw(st.one_of(st.text(min_size=1, max_size=6), _maybe(TEXT), st.sampled_from([MISSING, None, ""])))
    if user is not MISSING:
        body["user_id"] = user
    context = draw(
        st.one_of(
            st.fixed_dictionaries({"format": st.one_of(st.just("feed"), TEXT)}, optional={"ts": TIMESTAMPS}),
            TEXT,
            st.just({"format": "feed", "ts": "2026-10-10T00:00:00Z", "other": 1}),
        )
    )
    if draw(st.integers(0, 9)):
        body["context"] = context
    n = draw(st.sampled_from([0, 1, 2, 3, 499, 500, 501]))
    one = draw(candidates())
    many = [one] * n if n > 3 else [draw(candidates()) for _ in range(n)]
    if draw(st.integers(0, 9)):
        body["candidates"] = draw(st.one_of(st.just(many), TEXT))
    if draw(st.integers(0, 9)) == 0:
        body["unexpected"] = True
    return body


def _pydantic(raw: bytes) -> DecideRequest | None:
    try:
        return DecideRequest.model_validate_json(raw)
    except ValidationError:
        return None


@settings(max_examples=600, deadline=None)
@given(bodies())
def test_msgspec_accepts_only_what_pydantic_accepts(body):
    raw = json.dumps(body).encode()
    fast, slow = decode_decide(raw), _pydantic(raw)
    if fast is None:
        return  # FastAPI answers it: pydantic's verdict, whatever it is
    assert slow is not None, f"msgspec took a body pydantic refuses: {raw[:300]!r}"
    assert fast.user_id == slow.user_id
    assert fast.context.format == slow.context.format
    if slow.context.ts is None:
        assert fast.context.ts is None
    else:
        assert fast.context.ts is not None
        assert (fast.context.ts.tzinfo is None) == (slow.context.ts.tzinfo is None)
        assert fast.context.ts == slow.context.ts
    got = [(c.ad_id, c.campaign_id, c.advertiser_id) for c in fast.candidates]
    assert got == [(c.ad_id, c.campaign_id, c.advertiser_id) for c in slow.candidates]


def test_typical_bodies_take_the_fast_path():
    """What an ad server sends (RFC 3339 ts with Z or an offset, or none) is decoded by msgspec, not handed on."""
    cands = [{"ad_id": f"a{i}", "campaign_id": "c", "advertiser_id": "v"} for i in range(100)]
    for ctx in (
        {"format": "feed", "ts": "2026-10-10T08:00:00Z"},
        {"format": "feed", "ts": "2026-10-10T08:00:00.250+02:00"},
        {"format": "feed", "ts": None},
        {"format": "feed"},
    ):
        for user in ({"user_id": "u"}, {"user_id": None}, {}):  # with an id, null, absent (anonymous)
            raw = json.dumps({**user, "context": ctx, "candidates": cands}).encode()
            assert decode_decide(raw) is not None, (ctx, user)
            assert _pydantic(raw) is not None, (ctx, user)


def test_a_missing_or_null_user_id_is_none_in_both_and_an_empty_one_is_refused_by_both():
    rest = '"context": {"format": "feed"}, "candidates": [{"ad_id": "a", "campaign_id": "c", "advertiser_id": "v"}]'
    for raw in (b"{" + rest.encode() + b"}", b'{"user_id": null, ' + rest.encode() + b"}"):
        assert decode_decide(raw).user_id is None and _pydantic(raw).user_id is None
    raw = b'{"user_id": "", ' + rest.encode() + b"}"
    assert decode_decide(raw) is None and _pydantic(raw) is None


def test_duplicate_keys_take_the_last_in_both():
    cand = '{"ad_id": "x", "campaign_id": "c", "advertiser_id": "v"}'
    raw = b'{"user_id": "a", "user_id": "b", "context": {"format": "f"}, "candidates": [' + cand.encode() + b"]}"
    assert decode_decide(raw).user_id == _pydantic(raw).user_id == "b"


def test_junk_is_not_taken():
    """Bodies msgspec refuses (bad JSON, trailing data, wrong top-level type) are left to pydantic's 422."""
    for raw in (b"", b"{", b"[]", b"null", b'{"user_id": "u"} x', b"\xff\xfe"):
        assert decode_decide(raw) is None
        assert _pydantic(raw) is None
