"""A decide request without a user id: the policy's cohort-level decision (`freqcap.domain.policy.anonymous`),
flagged `anonymous: true`, counted in /metrics and logged under the cohort `(anonymous)`.

No lookup: there is no one to look up. So no admission slot is taken and no store is read (the answer needs the
policy alone, and is served even before the feature reader is open); it cannot time out or fail open on the
store. Without a policy it fails open `no_policy`, like any request.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from freqcap.api.dependencies import ServingState
from freqcap.api.schemas import decide_response, fail_open_response
from freqcap.domain.policy.anonymous import ANONYMOUS_COHORT, anonymous_decisions

log = logging.getLogger(__name__)


def answer_anonymous(state: ServingState, body: Any, at: datetime) -> dict[str, Any]:
    """The answer to an id-less decide request decided as of `at`, as plain values. Never raises."""
    started = time.perf_counter()
    policy = state.policy  # one read: the whole request uses one policy version
    version = policy.version if policy else None
    candidates = body.candidates
    state.metrics.count_anonymous()
    reason = None if policy is not None else "no_policy"
    if reason is None:
        try:
            decisions = anonymous_decisions(policy, candidates)
            out = decide_response(version, decisions, stream_stale=False, anonymous=True)
        except Exception as exc:
            log.exception("anonymous decide failed")
            reason = f"internal_error: {type(exc).__name__}"
    if reason is not None:
        state.metrics.observe(time.perf_counter() - started, reason)
        state.log_request(body, at, version, None, None, None, reason)
        return fail_open_response(version, [c.ad_id for c in candidates], reason, anonymous=True)
    state.metrics.observe(time.perf_counter() - started, None, decisions)
    state.log_request(body, at, version, ANONYMOUS_COHORT, ANONYMOUS_COHORT, decisions, None)
    return out
