"""Pseudonymous user ids in the stream worker: applied to a unit of messages right after parsing. Pure.

The worker is an ingestion edge: the producer partitions by the raw id (it is at the edge too, and a user's events
must all reach one partition whatever the key), and everything the worker keeps or forwards — pair state, pushes
to the online store, dead letters — carries the pseudonym. Dedup marks are keyed by event id, not user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from freqcap.domain.privacy import Pseudonymizer
from freqcap.domain.stream.messages import StreamEvent

_USER_KEYS = ("user_id", b"user_id")
_CACHE_MAX = 100_000  # ids; a worker's cache of pseudonyms is cleared when it grows past this


def pseudonymize_fields(fields: dict[Any, Any], pseudonym: Any) -> dict[Any, Any]:
    """A message's fields with `user_id` replaced by `pseudonym(raw text)`; a user id that is not valid UTF-8 text
    is dropped (its bytes may still be an id: nothing of it is kept)."""
    out = dict(fields)
    for key in _USER_KEYS:
        if key not in out:
            continue
        value = out[key]
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else value
        except UnicodeDecodeError:
            text = None
        if isinstance(text, str):
            out[key] = pseudonym(text).encode() if isinstance(value, bytes) else pseudonym(text)
        else:
            del out[key]
    return out


def pseudonymize_events(
    pseudonymizer: Pseudonymizer, events: Sequence[StreamEvent], cache: dict[str, str] | None = None
) -> list[StreamEvent]:
    """The events with pseudonymous `user_id`; each distinct id of the unit is hashed once, or once while it stays
    in the caller's `cache` (raw id -> pseudonym, kept across units by the worker; bounded here)."""
    if cache is None:
        cache = {}
    elif len(cache) > _CACHE_MAX:
        cache.clear()
    out = []
    for ev in events:
        pseudonym = cache.get(ev.user_id)
        if pseudonym is None:
            pseudonym = cache[ev.user_id] = pseudonymizer(ev.user_id)
        # The constructor, not dataclasses.replace: this runs once per event on the worker's hot path.
        out.append(StreamEvent(ev.event_id, ev.kind, ev.ts_us, pseudonym, ev.advertiser_id, ev.campaign_id, ev.ad_id))
    return out


def pseudonymize_dead(pseudonymizer: Pseudonymizer, dead: Sequence[tuple[Any, str]]) -> list[tuple[Any, str]]:
    """Dead letters (message, reason) whose message fields carry the pseudonym instead of the raw `user_id`
    (messages are named tuples with `fields`: the transport's `Message`)."""
    return [(m._replace(fields=pseudonymize_fields(m.fields, pseudonymizer)), reason) for m, reason in dead]
