"""The decide request decoded by msgspec: the hot path's codec, held to the pydantic model the OpenAPI schema
publishes (`schemas.DecideRequest`).

Why two descriptions of one request: pydantic validation cost ~15 % of a serving worker's CPU under load
(profiled with 100 candidates, docs/benchmarks/http.md), msgspec's decode-and-validate a few percent. The
pydantic model stays the contract (FastAPI publishes its schema and answers every body msgspec refuses, so the
422s and the lenient forms pydantic accepts, such as a numeric `ts`, are unchanged); these structs only take the
bodies both accept. tests/unit/api/test_wire.py holds them to the same verdicts on generated bodies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class WireContext(msgspec.Struct, forbid_unknown_fields=True):
    format: _NonEmpty
    ts: datetime | None = None


class WireCandidate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A candidate ad: the engine and the readers read its three ids as attributes, as from `Candidate`."""

    ad_id: _NonEmpty
    campaign_id: _NonEmpty
    advertiser_id: _NonEmpty


class WireDecide(msgspec.Struct, forbid_unknown_fields=True):
    context: WireContext
    candidates: Annotated[list[WireCandidate], msgspec.Meta(min_length=1, max_length=500)]
    user_id: _NonEmpty | None = None  # absent or null: the anonymous decision


_decoder = msgspec.json.Decoder(WireDecide)


def decode_decide(body: bytes) -> WireDecide | None:
    """The request, or None when msgspec does not take it as it stands (the pydantic model then decides: a 422
    with its message, or a body in a form only pydantic reads)."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
