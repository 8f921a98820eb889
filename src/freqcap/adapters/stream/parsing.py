"""A commit unit's messages parsed: `parse_message` of each, with the common message parsed in C when this install
has it (`_parse.c`; `FREQCAP_NATIVE=off` turns it off).

The compiled function only answers for the message it is sure of (the producer's format, every field valid) and
leaves everything else to `parse_message`, the reference, which also names what is wrong with a bad one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from freqcap.adapters.native import load
from freqcap.domain.stream.messages import StreamEvent, parse_message


class MessageParser:
    """`parse(messages, allowed_formats)`: per message (`fields` at index 1, the transport's `Message`) its
    `StreamEvent` or its dead-letter reason, as `parse_message` gives them."""

    def __init__(self) -> None:
        self._native = load("freqcap.adapters.stream._parse")
        if self._native is not None:
            self._native.configure(StreamEvent)

    def parse(
        self, messages: Sequence[tuple[Any, Any]], allowed_formats: Collection[str] | None
    ) -> list[StreamEvent | str]:
        if self._native is None or not isinstance(messages, list):
            return [parse_message(m[1], allowed_formats) for m in messages]
        out = self._native.parse_common(messages, allowed_formats)
        for i, event in enumerate(out):
            if event is None:
                out[i] = parse_message(messages[i][1], allowed_formats)
        return out
