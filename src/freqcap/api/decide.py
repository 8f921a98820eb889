"""One decide request, start to answer: admission, the online lookup within its budget, the engine, the counters
and the decision log. Shared by the msgspec fast path (`fast_path`) and the FastAPI route (`routes`), so both
answer alike.

Fail-open is a contract: a feature lookup that errs or exceeds its time budget answers 200 with every candidate
eligible at penalty 1.0, `degraded: true` and a reason, and is counted in `/metrics`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import UTC, datetime
from typing import Any

from freqcap.api.anonymous import answer_anonymous
from freqcap.api.dependencies import ServingState
from freqcap.api.schemas import decide_response, fail_open_response
from freqcap.domain.policy.engine import Decision, decide

log = logging.getLogger(__name__)


class _NotReady(Exception):
    """No policy (or no reader) yet: answer fail-open with this reason."""


def request_time(body: Any) -> datetime:
    """`context.ts` (UTC when it has no offset), or the server's clock when the request has none."""
    ts = body.context.ts
    if ts is None:
        return datetime.now(UTC)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def pseudonymous_user(state: ServingState, user_id: str | None) -> str | None:
    """The id the stores know the request's user by: its pseudonym (`privacy`), computed once per request before
    the lookup; the raw id goes no further (the decision log never holds a user). None passes through (a request
    without a user id)."""
    pseudonymizer = state.pseudonymizer
    if user_id is None or pseudonymizer is None:
        return user_id
    return pseudonymizer(user_id)


async def answer(state: ServingState, body: Any, arrived: float | None = None) -> dict[str, Any]:
    """The answer to a decide request (`schemas.DecideRequest` or `wire.WireDecide`: the same fields), as plain
    values; `arrived`: when the request reached the process (perf_counter seconds, `server.arrived`), from which
    admission counts. Never raises for a store or engine failure: those answer fail-open with the reason."""
    if body.user_id is None:  # no id, nothing to look up: the policy's cohort-level decision
        return answer_anonymous(state, body, request_time(body))
    started = time.perf_counter()
    policy = state.policy  # one read of the reference: the whole request uses one policy version
    candidates = body.candidates  # the engine and the readers read the three ids as attributes
    version = policy.version if policy else None
    reason: str | None = None
    decisions: list[Decision] = []
    user = None
    at = request_time(body)
    try:
        if policy is None or state.reader is None:
            raise _NotReady("no_policy" if policy is None else "not_ready")
        if await state.admit(arrived):
            reason, user = await _lookup(state, pseudonymous_user(state, body.user_id), candidates, at)
        else:
            reason = "overload"  # no lookup slot within the admission budget: answered now, never queued
        if reason is None:
            decisions = decide(policy, user.audience, user.signal_tier, candidates, user.states, at)
            # Batch alone because the stream is stale: real decisions, flagged (not a fail-open).
            out = decide_response(version, decisions, stream_stale=getattr(user, "stream_stale", False))
    except _NotReady as exc:
        reason = str(exc)
    except Exception as exc:
        log.exception("decide failed")
        reason = f"internal_error: {type(exc).__name__}"
    if reason is not None:
        out = fail_open_response(version, [c.ad_id for c in candidates], reason)
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
    return out


def crashed(state: ServingState, body: Any, exc: BaseException) -> dict[str, Any]:
    """The fail-open answer for a request whose handling broke outside `answer`'s own guard, counted and logged."""
    reason = f"internal_error: {type(exc).__name__}"
    state.metrics.observe(0.0, reason)
    version = state.policy_version
    state.log_request(body, request_time(body), version, None, None, None, reason)
    anonymous = body.user_id is None
    return fail_open_response(version, [c.ad_id for c in body.candidates], reason, anonymous=anonymous)


async def _lookup(state: ServingState, user_id: str, cands: Any, at: datetime):
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
    if getattr(state.reader, "reads_stream", False) or getattr(state.reader, "reads_at", False):
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
