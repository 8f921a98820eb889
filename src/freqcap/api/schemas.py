"""The decision API's wire format: the request models (pydantic, in the OpenAPI schema) and the response bodies.

Responses are plain dicts built here and encoded by msgspec (`encode`), not pydantic models nor the standard
library's `json`: for 100 candidates the standard encoder cost ~0.2 ms a request (profiled), msgspec a few µs.
The request model is pydantic: FastAPI publishes its schema and answers what the hot path's msgspec decoder
(`wire`) leaves to it; tests hold the two to the same verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from freqcap.domain.policy.engine import Decision


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecideContext(_Strict):
    format: str = Field(min_length=1)
    # Optional: the server's clock (UTC) when absent or null.
    ts: datetime | None = None


class CandidateIn(_Strict):
    ad_id: str = Field(min_length=1)
    campaign_id: str = Field(min_length=1)
    advertiser_id: str = Field(min_length=1)


class DecideRequest(_Strict):
    # Optional: a request without one (absent or null) gets the policy's cohort-level decision, flagged
    # `anonymous` (freqcap.domain.policy.anonymous). An empty string is refused: "no id" is said by leaving it out.
    user_id: str | None = Field(default=None, min_length=1)
    context: DecideContext
    candidates: list[CandidateIn] = Field(min_length=1, max_length=500)


def decision_json(d: Decision) -> dict[str, Any]:
    """One candidate's decision as it goes on the wire."""
    b = d.binding
    binding = None if b is None else {"level": b.level, "window": b.window, "cap": b.cap, "count": b.count}
    return {
        "ad_id": d.ad_id,
        "eligible": d.eligible,
        "penalty": d.penalty,
        "distance_to_cap": d.distance_to_cap,
        "binding": binding,
        "reason": d.reason,
    }


def decide_response(
    version: str | None, decisions: Sequence[Decision], *, stream_stale: bool, anonymous: bool = False
) -> dict[str, Any]:
    """The answer with real decisions; decided from batch alone when the stream was stale (flagged, not failed);
    `anonymous`: the cohort-level decision of a request without a user id (flagged, not degraded)."""
    bindings: dict[int, dict[str, Any] | None] = {}  # candidates often share a Binding object: one dict each
    wire = []
    for d in decisions:
        b = d.binding
        binding = bindings.get(id(b), False)
        if binding is False:
            binding = bindings[id(b)] = None if b is None else decision_json(d)["binding"]
        wire.append(
            {
                "ad_id": d.ad_id,
                "eligible": d.eligible,
                "penalty": d.penalty,
                "distance_to_cap": d.distance_to_cap,
                "binding": binding,
                "reason": d.reason,
            }
        )
    return {
        "policy_version": version,
        "degraded": stream_stale,
        "degraded_reason": "stream_stale" if stream_stale else None,
        "anonymous": anonymous,
        "decisions": wire,
    }


def fail_open_response(
    version: str | None, ad_ids: Sequence[str], reason: str, *, anonymous: bool = False
) -> dict[str, Any]:
    """The fail-open answer: every candidate eligible at penalty 1.0, `degraded` with the reason."""
    return {
        "policy_version": version,
        "degraded": True,
        "degraded_reason": reason,
        "anonymous": anonymous,
        "decisions": [
            {"ad_id": a, "eligible": True, "penalty": 1.0, "distance_to_cap": None, "binding": None, "reason": reason}
            for a in ad_ids
        ],
    }


encode = msgspec.json.Encoder().encode  # plain values -> JSON bytes


def json_response(body: dict[str, Any]) -> Response:
    """`body` (plain values) as an `application/json` response, encoded by msgspec."""
    return Response(encode(body), media_type="application/json")
