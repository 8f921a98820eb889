"""Message parsing in C (`_parse.c`, through `MessageParser`) against `parse_message`, the reference, on random
messages: the producer's own and every way of breaking one (fields missing or extra, text instead of bytes, bad
UTF-8, blank or long ids, unknown types, formats not allowed, times in other forms, impossible or out of range).
The compiled path must give the same event or reason for every message, and must itself parse the common ones."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from freqcap.adapters.stream.parsing import MessageParser
from freqcap.adapters.stream.transport import Message
from freqcap.domain.stream.messages import StreamEvent, parse_message

T0 = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def native(compiled):
    module = compiled("freqcap.adapters.stream._parse")
    module.configure(StreamEvent)
    return module


def _time(rng: random.Random) -> str:
    """An event time as the producer writes it (`isoformat`), in assorted offsets, or in another form."""
    moment = T0 + timedelta(seconds=rng.randrange(-(10**9), 2 * 10**9) / 1000 * rng.choice([1, 1000]))
    if rng.random() < 0.3:
        moment = moment.replace(microsecond=0)
    offset = timezone(timedelta(minutes=rng.choice([0, 0, 330, -480, 23 * 60 + 59, -(23 * 60 + 59)])))
    text = moment.astimezone(offset).isoformat()
    form = rng.randrange(14)
    if form == 0:
        return text.replace("+00:00", "Z")
    if form == 1:  # milliseconds, nanoseconds: other digit counts
        return text[:23] + text[26:] if "." in text else text
    if form == 2:
        return text.replace("T", " ")
    if form == 3:
        return f"{moment.timestamp():.3f}"  # epoch seconds
    if form == 4:
        return f" {text} "
    if form == 5:
        return text.replace("+00:00", "z")
    if form == 6:  # impossible dates and times
        return rng.choice(["2027-02-29T10:00:00+00:00", "2028-02-29T10:00:00+00:00", "2026-04-31T00:00:00+00:00",
                           "2026-13-01T00:00:00+00:00", "2026-10-01T24:00:00+00:00", "2026-10-01T10:00:60+00:00",
                           "2026-10-01T10:00:00+24:00", "2026-10-01T10:61:00+00:00", "2026-00-10T10:00:00+00:00",
                           "2026-10-01T10:00:00", "2026-10-01", "not a time", ""])  # fmt: skip
    if form == 7:  # the plausible range's edges
        return rng.choice(["1999-12-31T23:59:59.999999+00:00", "2000-01-01T00:00:00+00:00",
                           "2000-01-01T00:30:00+01:00", "2099-12-31T23:59:59.999999+00:00",
                           "2100-01-01T00:00:00+00:00", "2099-12-31T23:00:00-01:00"])  # fmt: skip
    return text


def _message(rng: random.Random, i: int) -> Message:
    fields: dict = {
        b"event_id": f"imp-{i:09d}".encode(),
        b"event_type": rng.choice([b"impression"] * 6 + [b"click", b"conversion", b"Impression", b"view"]),
        b"event_ts": _time(rng).encode(),
        b"user_id": f"u{rng.randrange(10**6):07d}".encode(),
        b"advertiser_id": f"adv-{rng.randrange(40):03d}".encode(),
        b"campaign_id": f"cmp-{rng.randrange(200):04d}".encode(),
        b"ad_id": f"ad-{rng.randrange(900):05d}".encode(),
    }
    if rng.random() < 0.8:
        fields[b"format"] = rng.choice([b"feed", b"feed", b"story", b""])
    for _ in range(rng.choice([0, 0, 0, 1, 2])):  # break it
        name = rng.choice(list(fields))
        change = rng.randrange(9)
        if not isinstance(name, bytes) or not isinstance(fields[name], bytes):
            continue  # broken already
        if change == 0:
            del fields[name]
        elif change == 1:
            fields[name] = rng.choice([b"", b" ", b"\t\n", b"\x1c", b"\x1f ", b" x "])
        elif change == 2:
            fields[name] = b"x" * rng.choice([256, 257])
        elif change == 3:
            fields[name] = "é-ü".encode() + fields[name]
        elif change == 4:
            fields[name] = b"\xff\xfe"
        elif change == 5:
            fields[name] = fields[name].decode("utf-8", "replace")  # text, not bytes
        elif change == 6:
            fields[name.decode()] = fields.pop(name)
        elif change == 7:
            fields[b"conversion_value"] = rng.choice([b"1.5", b"-1", b"nan", b"x", b""])
        else:
            fields[b"extra"] = b"1"
    return Message(f"{1_790_000_000_000 + i}-{rng.randrange(3)}", fields)


@pytest.mark.parametrize("allowed", [None, frozenset({"feed"}), frozenset({"feed", "story", ""})])
def test_compiled_parsing_gives_what_parse_message_gives(native, allowed):
    rng = random.Random(len(allowed or ()))
    messages = [_message(rng, i) for i in range(6000)]
    want = [parse_message(m.fields, allowed) for m in messages]
    got = MessageParser().parse(messages, allowed)
    for m, w, g in zip(messages, want, got, strict=True):
        assert g == w and type(g) is type(w), m
    # The compiled path itself answered for the common messages (not only the Python fallback) and agreed.
    common = native.parse_common(messages, allowed)
    taken = [(c, w) for c, w in zip(common, want, strict=True) if c is not None]
    assert len(taken) > len(messages) // 20
    assert all(c == w and type(c) is StreamEvent for c, w in taken)
    assert sum(isinstance(w, str) for w in want) > len(messages) // 10  # broken ones were judged too


def test_compiled_times_are_the_exact_microseconds(native):
    """Independent of `parse_message`: the event time is the exact number of microseconds since the epoch
    (integer arithmetic on the datetime), on random isoformat times with and without fractions and offsets, from
    2000 to 2040 (below 2**51 microseconds, where a double holds every one exactly through `seconds * 10**6`)."""
    rng = random.Random(5)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    messages, exact = [], []
    for i in range(5000):
        moment = T0 + timedelta(microseconds=rng.randrange(-8 * 10**14, 4 * 10**14))
        offset = timezone(timedelta(minutes=rng.randrange(-23 * 60, 23 * 60)))
        fields = {b"event_id": b"e%d" % i, b"event_type": b"click", b"user_id": b"u", b"advertiser_id": b"a",
                  b"campaign_id": b"c", b"ad_id": b"d", b"event_ts": moment.astimezone(offset).isoformat().encode()}  # fmt: skip
        messages.append(Message(f"{i}-0", fields))
        exact.append((moment - epoch) // timedelta(microseconds=1))
    events = native.parse_common(messages, None)
    assert all(ev is not None for ev in events)
    assert [ev.ts_us for ev in events] == exact
    assert {ev.kind for ev in events} == {"c"}


def test_messages_that_are_not_lists_take_the_python_path():
    parser = MessageParser()
    message = Message("1-0", {b"event_id": b"e"})
    assert parser.parse((message,), None) == ["missing_event_type"]
