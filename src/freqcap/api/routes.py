"""The decision API's endpoints: `POST /v1/decide`, `GET /v1/policy`, `POST /v1/admin/policy`, `/healthz`,
`/readyz`, `/metrics`, and the error handlers that keep the decide path answering.

The decide path itself (admission, lookup, engine, fail-open) is `decide.answer`. Every handler finds what it
shares with the others (policy, reader, budget, counters) in `serving_state(request)`.

The endpoints carry comments, not docstrings: FastAPI would publish a docstring as the operation's description, and
the OpenAPI schema is part of the contract.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from freqcap.adapters.policy_store import PolicyStoreUnavailable
from freqcap.api.decide import answer, crashed
from freqcap.api.dependencies import serving_state
from freqcap.api.policy_sync import live_policy
from freqcap.api.schemas import DecideRequest, json_response
from freqcap.api.server import arrived
from freqcap.domain.policy import PolicyValidationError, parse_policy
from freqcap.domain.policy.schema import policy_document

log = logging.getLogger(__name__)

router = APIRouter()


# Penalties for the candidates shown to this user now; fail-open (200, degraded) when they cannot be known.
# (A POST the msgspec fast path decodes never gets here: `fast_path`; this route answers the bodies it leaves to
# pydantic, and publishes the request schema.)
@router.post("/v1/decide")
async def decide_endpoint(body: DecideRequest, request: Request):
    request.state.decide_request = body  # for `unexpected_error`: a crash after this still answers fail-open
    return json_response(await answer(serving_state(request), body, arrived(request.scope)))


# The policy being served (its version and document); 503 before one is loaded.
@router.get("/v1/policy")
async def get_policy(request: Request):
    policy = serving_state(request).policy
    if policy is None:
        return JSONResponse({"detail": "no policy loaded"}, status_code=503)
    return {"version": policy.version, "policy": policy_document(policy)}


# Liveness: the process answers.
@router.get("/healthz")
async def healthz():
    return {"status": "ok"}


# Readiness: a policy and a feature reader are in place (503 until then).
@router.get("/readyz")
async def readyz(request: Request):
    state = serving_state(request)
    ready = state.ready
    body = {"ready": ready, "policy_version": state.policy_version}
    return JSONResponse(body, status_code=200 if ready else 503)


# The counters in the Prometheus text format.
@router.get("/metrics")
async def metrics(request: Request):
    state = serving_state(request)
    body = state.metrics.render(state.policy_version, state.decision_log, live_policy(state))
    return PlainTextResponse(body, media_type="text/plain; version=0.0.4")


# Swap in the policy of the body (JSON or YAML) if it is valid; else 422 and the live policy stays. With a policy
# store, the policy is saved there first (every replica picks it up from there); a store that cannot be written
# answers 503 and nothing changes (a policy on this process only would make replicas disagree).
@router.post("/v1/admin/policy")
async def reload_policy(request: Request):
    state = serving_state(request)
    if not state.admin_authorized(request.headers.get("authorization", "")):
        return JSONResponse({"detail": "invalid or missing bearer token"}, status_code=401)
    raw = (await request.body()).decode("utf-8", errors="replace")
    try:
        new = parse_policy(_policy_document(raw))
        state.reject_unknown_windows(new)
    except PolicyValidationError as exc:
        state.metrics.policy_reloads["invalid"] += 1
        keep = state.policy_version
        return JSONResponse({"detail": str(exc), "errors": exc.errors, "policy_version": keep}, status_code=422)
    if state.store is not None:
        loop = asyncio.get_running_loop()
        try:
            # Off the event loop: a slow store must not hold up decisions.
            revision = await loop.run_in_executor(None, state.store.save, policy_document(new))
        except PolicyStoreUnavailable as exc:
            state.metrics.policy_sync_errors["unavailable"] += 1
            keep = state.policy_version
            return JSONResponse({"detail": f"policy store: {exc}", "policy_version": keep}, status_code=503)
        state.store_revision = revision  # this process's sync must not reload what it just saved
    old = state.swap_policy(new, "push")  # the atomic swap
    state.metrics.policy_reloads["ok"] += 1
    log.info("policy swapped %s -> %s", old, new.version)
    return {"policy_version": new.version, "previous_version": old}


def _policy_document(raw: str) -> Any:
    """A JSON object (or string) as parsed; anything else as the text itself, for `parse_policy` to read as YAML."""
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return raw  # YAML text (or unreadable: parse_policy says so)
    return parsed if isinstance(parsed, dict | str) else raw


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each error's type, location and message only."""
    # FastAPI's own handler echoes each error's `input` and fails (500) on NaN/Infinity: keep the message only.
    errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Never a 500 on the decide path: whatever broke, the ad server gets "no penalty". Elsewhere a 500."""
    log.exception("unexpected error on %s", request.url.path)
    body = getattr(request.state, "decide_request", None)
    if request.url.path == "/v1/decide" and body is not None:
        return json_response(crashed(serving_state(request), body, exc))
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)
