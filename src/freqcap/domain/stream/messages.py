"""Stream messages -> events, or the reason a message goes to the dead-letter stream. Pure.

A message carries the event contract's columns as string fields: `event_id`, `event_type`,
`event_ts` (ISO-8601 with a UTC offset, or epoch seconds), `user_id`, `advertiser_id`, `campaign_id`, `ad_id`,
`format`, optional `conversion_value`. Every event type needs the three hierarchy ids (clicks and conversions
carry the attributed ad). Nothing here raises on bad input: a bad message yields a reason, never an exception.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection, Mapping
from datetime import datetime
from sys import intern
from typing import NamedTuple

from freqcap.domain.stream.buckets import KINDS

REQUIRED = ("event_id", "event_type", "event_ts", "user_id", "advertiser_id", "campaign_id", "ad_id")
_MAX_ID = 256
# Plausible event times: 2000-01-01 .. 2100-01-01 (epoch seconds); anything else is a unit or parsing mistake.
_TS_MIN, _TS_MAX = 946_684_800, 4_102_444_800


class StreamEvent(NamedTuple):
    """One valid event (immutable; a named tuple: built twice per event on the worker's hot path, at a third of a
    frozen dataclass's cost)."""

    event_id: str
    kind: str  # i | c | v
    ts_us: int  # epoch microseconds, UTC
    user_id: str
    advertiser_id: str
    campaign_id: str
    ad_id: str


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def parse_ts(text: str) -> int | None:
    """ISO-8601 with an explicit offset, or epoch seconds -> epoch microseconds; None when unusable."""
    text = text.strip()
    if not text:
        return None
    seconds = None
    if text[4:5] != "-":  # not ISO-8601 (the producer's format): epoch seconds? (no exception on the common path)
        with contextlib.suppress(ValueError):
            seconds = float(text)
    if seconds is None:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None  # a naive time is ambiguous: the contract says UTC, explicitly
        seconds = dt.timestamp()
    if not math.isfinite(seconds) or not _TS_MIN <= seconds < _TS_MAX:
        return None
    return round(seconds * 1_000_000)


def parse_message(
    fields: Mapping[bytes | str, bytes | str], allowed_formats: Collection[str] | None = None
) -> StreamEvent | str:
    """The event in a stream message, or a dead-letter reason (`missing_<field>`, `bad_event_type`, ...)."""
    fast = _parse_fast(fields, allowed_formats)
    return fast if fast is not None else parse_message_full(fields, allowed_formats)


def parse_message_full(
    fields: Mapping[bytes | str, bytes | str], allowed_formats: Collection[str] | None = None
) -> StreamEvent | str:
    """`parse_message` without its fast path for the common message: the rules, checked one by one."""
    try:  # every key and value UTF-8 bytes (a Redis reply)
        values = {k.decode(): v.decode() for k, v in fields.items()}
    except (AttributeError, UnicodeDecodeError):  # text, or something to name
        values = {}
        for key, value in fields.items():
            name = _text(key)
            text = _text(value)
            if name is None:
                return "bad_encoding"
            if text is None:
                return f"bad_encoding_{name}"
            values[name] = text
    for name in REQUIRED:
        text = values.get(name)
        if not text or text.isspace():
            return f"missing_{name}"
        if len(text) > _MAX_ID:
            return f"too_long_{name}"
    kind = KINDS.get(values["event_type"])
    if kind is None:
        return "bad_event_type"
    ts_us = parse_ts(values["event_ts"])
    if ts_us is None:
        return "bad_event_ts"
    if allowed_formats is not None and values.get("format") not in allowed_formats:
        return "bad_format"
    value = values.get("conversion_value")
    if value not in (None, ""):
        try:
            number = float(value)
        except ValueError:
            return "bad_conversion_value"
        if not math.isfinite(number) or number < 0:
            return "bad_conversion_value"
    return StreamEvent(
        event_id=values["event_id"],
        kind=kind,
        ts_us=ts_us,
        user_id=values["user_id"],
        advertiser_id=values["advertiser_id"],
        campaign_id=values["campaign_id"],
        ad_id=values["ad_id"],
    )


def _parse_fast(
    fields: Mapping[bytes | str, bytes | str], allowed_formats: Collection[str] | None
) -> StreamEvent | None:
    """The common message (a Redis reply: bytes, every field valid, no conversion value) parsed with the fewest
    steps; None for anything else, which `parse_message` then judges in full (and names what is wrong).
    The same rules: every required field non-blank and at most `_MAX_ID` characters, a known type, an ISO-8601 time
    with an explicit offset (or epoch seconds) in range, an allowed format."""
    # Exactly the required fields, or those and `format`: any other field takes the full path (every field must be
    # valid UTF-8, and a conversion value is checked).
    size = len(fields)
    try:
        # Spelled out (no generator): this runs once per message.
        eid = fields[b"event_id"].decode()  # type: ignore[index]
        etype = fields[b"event_type"].decode()  # type: ignore[index]
        ets = fields[b"event_ts"].decode()  # type: ignore[index]
        user = fields[b"user_id"].decode()  # type: ignore[index]
        adv = fields[b"advertiser_id"].decode()  # type: ignore[index]
        camp = fields[b"campaign_id"].decode()  # type: ignore[index]
        ad = fields[b"ad_id"].decode()  # type: ignore[index]
        if size == 8:
            fmt: str | None = fields[b"format"].decode()  # type: ignore[index]
        elif size == 7:
            fmt = None
        else:
            return None
    except (KeyError, AttributeError, UnicodeDecodeError):
        return None
    if allowed_formats is not None and fmt not in allowed_formats:
        return None
    for text in (eid, user, adv, camp, ad):
        if not text or len(text) > _MAX_ID or text.isspace():
            return None
    kind = KINDS.get(etype)
    if kind is None or len(ets) > _MAX_ID:
        return None
    ts_us = parse_ts(ets)
    if ts_us is None:
        return None
    # The entity ids interned: a few thousand of them, each in many pair keys (one copy each, not one per pair).
    return StreamEvent(eid, kind, ts_us, user, intern(adv), intern(camp), intern(ad))


def event_fields(row: Mapping[str, object]) -> dict[str, str]:
    """An events-table row (the event contract's columns) -> stream message fields (what `produce` writes)."""
    ts = row["event_ts"]
    ts_text = ts.isoformat() if hasattr(ts, "isoformat") else str(ts)
    out = {
        "event_id": str(row["event_id"]),
        "event_type": str(row["event_type"]),
        "event_ts": ts_text,
        "user_id": str(row["user_id"]),
        "advertiser_id": str(row.get("advertiser_id") or ""),
        "campaign_id": str(row.get("campaign_id") or ""),
        "ad_id": str(row.get("ad_id") or ""),
        "format": str(row.get("format") or ""),
    }
    value = row.get("conversion_value")
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        out["conversion_value"] = repr(float(value))
    return out
