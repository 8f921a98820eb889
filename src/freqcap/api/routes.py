"""The decision API's endpoints: `POST /v1/decide`, `GET /v1/policy`, `POST /v1/admin/policy`, `/healthz`,
`/readyz`, `/metrics`, and the error handlers that keep the decide path answering.

Fail-open is a contract: a feature lookup that errs or exceeds its time budget answers 200 with every candidate
eligible at penalty 1.0, `degraded: true` and a reason, and is counted in `/metrics`. Every handler finds what it
shares with the others (policy, reader, budget, counters) in `serving_state(request)`.

The endpoints carry comments, not docstrings: FastAPI would publish a docstring as the operation's description, and
the OpenAPI schema is part of the contract.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from freqcap.adapters.policy_store import PolicyStoreUnavailable
from freqcap.api.dependencies import serving_state
from freqcap.api.policy_sync import live_policy
from freqcap.api.schemas import DecideRequest, decide_response, fail_open_response, json_response
from freqcap.domain.policy import PolicyValidationError, parse_policy
from freqcap.domain.policy.engine import Candidate, Decision, decide
from freqcap.domain.policy.schema import policy_document

log = logging.getLogger(__name__)

router = APIRouter()


class _NotReady(Exception):
    """No policy (or no reader) yet: answer fail-open with this reason."""


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _request_time(body: DecideRequest) -> datetime:
    """`context.ts` (UTC when it has no offset), or the server's clock when the request has none."""
    ts = body.context.ts
    return datetime.now(UTC) if ts is None else _utc(ts)


# Penalties for the candidates shown to this user now; fail-open (200, degraded) when they cannot be known.
@router.post("/v1/decide")
async def decide_endpoint(body: DecideRequest, request: Request):
    request.state.decide_request = body  # for `unexpected_error`: a crash after this still answers fail-open
    state = serving_state(request)
    started = time.perf_counter()
    policy = state.policy  # one read of the reference: the whole request uses one policy version
    ad_ids = [c.ad_id for c in body.candidates]
    version = policy.version if policy else None
    reason: str | None = None
    decisions: list[Decision] = []
    user = None
    at = _request_time(body)
    try:
        if policy is None or state.reader is None:
            raise _NotReady("no_policy" if policy is None else "not_ready")
        cands = [Candidate(c.ad_id, c.campaign_id, c.advertiser_id) for c in body.candidates]
        if await state.admit():
            reason, user = await _lookup(state, body.user_id, cands, at)
        else:
            reason = "overload"  # no lookup slot within the admission budget: answered now, never queued
        if reason is None:
            decisions = decide(policy, user.audience, user.signal_tier, cands, user.states, at)
            # Batch alone because the stream is stale: real decisions, flagged (not a fail-open).
            out = decide_response(version, decisions, stream_stale=getattr(user, "stream_stale", False))
    except _NotReady as exc:
        reason = str(exc)
    except Exception as exc:
        log.exception("decide failed")
        reason = f"internal_error: {type(exc).__name__}"
    if reason is not None:
        out = fail_open_response(version, ad_ids, reason)
        decisions = []
    state.metrics.observe(time.perf_counter() - started, reason, decisions)
    if reason is None:
        stale = getattr(user, "stream_stale", False)
        if stale:
            state.metrics.count_stream_stale()
        stale_reason = "stream_stale" if stale else None
        state.log_request(body, at, version, user.audience, user.signal_tier, decisions, stale_reason)
    else:
        state.log_request(body, at, version, None, None, None, reason)
    return json_response(out)  # plain values already: no jsonable_encoder, msgspec instead of json


async def _lookup(state, user_id: str, cands: list[Candidate], at: datetime):
    """(None, UserState), or (fail-open reason, None) when the store failed or exceeded the budget. The caller holds
    a lookup slot; it is given back when the lookup ends (a lookup thread: when the thread is free again)."""
    reader = state.async_reader
    if reader is not None:  # on the event loop: the budget covers connecting, sending and the reply
        try:
            async with asyncio.timeout(state.budget):
                return None, await reader.read(user_id, cands, at)
        except TimeoutError:
            return "timeout", None
        except Exception as exc:  # the store failed: fail open, and say why
            return f"store_error: {type(exc).__name__}", None
        finally:
            state.release()
    if getattr(state.reader, "reads_stream", False):
        read = functools.partial(state.reader.read, user_id, cands, at)
    else:
        read = functools.partial(state.reader.read, user_id, cands)
    try:
        lookup = state.pool.submit(read)  # a slot is a free thread: this starts now, it does not queue
    except BaseException:
        state.release()
        raise
    state.release_when_done(lookup)
    try:
        async with asyncio.timeout(state.budget):
            return None, await asyncio.wrap_future(lookup)
    except TimeoutError:
        return "timeout", None
    except Exception as exc:
        return f"store_error: {type(exc).__name__}", None


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
        state = serving_state(request)
        reason = f"internal_error: {type(exc).__name__}"
        state.metrics.observe(0.0, reason)
        version = state.policy_version
        state.log_request(body, _request_time(body), version, None, None, None, reason)
        return json_response(fail_open_response(version, [c.ad_id for c in body.candidates], reason))
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)
