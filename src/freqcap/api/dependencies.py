"""What the decision API's handlers share: one `ServingState` per app, kept on `app.state.serving`.

Handlers reach it with `serving_state(request)`, a plain call rather than a FastAPI `Depends`: a dependency is
solved on every request, and the decide path does no per-request work it does not need.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from fastapi import Request
from pydantic import SecretStr

from freqcap.adapters.decision_log import DecisionLog, decision_rows
from freqcap.adapters.feast.reader import FeatureReader
from freqcap.adapters.policy_store import PolicyStore
from freqcap.api.metrics import Metrics
from freqcap.api.schemas import DecideRequest
from freqcap.config import admin_token_problem
from freqcap.domain.policy import Policy, PolicyValidationError
from freqcap.domain.policy.engine import Decision, compile_policy
from freqcap.domain.policy.guardrails import window_errors
from freqcap.domain.privacy import Pseudonymizer

log = logging.getLogger(__name__)

# What `create_app` takes as the admin token: none, one, or several (all accepted: a rotation in progress).
AdminTokens = str | SecretStr | Sequence[str | SecretStr] | None


def admin_token_list(tokens: AdminTokens) -> tuple[str, ...]:
    """The non-empty admin tokens in `tokens`; ValueError naming the setting (never the value) for one that is too
    short or padded with whitespace."""
    if tokens is None:
        return ()
    if isinstance(tokens, str | SecretStr):
        tokens = [tokens]
    plain = [t.get_secret_value() if isinstance(t, SecretStr) else t for t in tokens]
    for token in plain:
        if problem := admin_token_problem(token):
            raise ValueError(f"serving.admin_token {problem}")
    return tuple(t for t in plain if t)


class ServingState:
    """What the handlers share. `policy` is replaced by a single reference assignment (atomic hot reload).

    `windows` are the feature windows per level (a policy capping over another window is refused), `admin_tokens`
    guard the policy admin endpoint (any one of them is accepted; none: open), `decision_log` (optional) receives a sample of the decisions,
    `store` (optional) is the live-policy store every replica reads (`policy_sync`).
    """

    def __init__(
        self,
        *,
        budget_seconds: float,
        workers: int,
        windows: Mapping[str, set[int]],
        admin_tokens: Sequence[str],
        decision_log: DecisionLog | None,
        store: PolicyStore | None = None,
        admission_seconds: float = 0.002,
        max_in_flight: int = 32,
    ):
        self.policy: Policy | None = None
        # Where the live policy came from (`file`, `store`, `push`), when this process swapped it in (epoch
        # seconds) and when it was pushed (the store's `pushed_at`, when known): /metrics shows them.
        self.policy_source: str | None = None
        self.policy_loaded_at: float | None = None
        self.policy_pushed_at: str | None = None
        self.store = store
        # Revision of the store entry last seen (loaded, saved, or refused), and when the store last answered.
        self.store_revision: str | None = None
        self.store_read_at: float | None = None
        self.store_error: str | None = None  # the store's last failure while it is unreachable
        self.reader: FeatureReader | None = None
        # The reader's reads as coroutines on the event loop (Redis: AsyncRedisReader, Redis Cluster:
        # AsyncClusterReader), else None: the thread pool.
        self.async_reader: Any = None
        self.budget = budget_seconds
        self.workers = workers
        self.pool = self.new_pool()
        # Admission: lookup slots (`lookup_workers` threads, or `max_in_flight` lookups on the event loop) and how
        # long a request may wait for one before it is answered `overload`. Set per lifespan by `start_admission`.
        self.admission = admission_seconds
        self.max_in_flight = max_in_flight
        self.slots: asyncio.Semaphore | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # How late the event loop has been running timers lately (seconds, sustained: `watch_loop`): requests wait
        # that long in the loop before their handler runs; beyond the admission budget the process is out of CPU.
        self.loop_lag = 0.0
        self.metrics = Metrics()
        # Maps a request's user id to the pseudonym the stores hold (`api.decide.pseudonymous_user`); set by the
        # lifespan from `privacy` (None: privacy disabled, ids used as given).
        self.pseudonymizer: Pseudonymizer | None = None
        self.windows = windows
        # Bytes for the constant-time comparison; kept off the object's repr (it has none of its own).
        self._admin_tokens = tuple(t.encode() for t in admin_tokens)
        self.decision_log = decision_log

    def new_pool(self) -> ThreadPoolExecutor:
        """A thread pool for the store lookups (blocking calls kept off the event loop)."""
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="freqcap-lookup")

    def start_admission(self) -> None:
        """Fresh lookup slots on the running loop: one per lookup thread, or `max_in_flight` for the event loop."""
        self.loop = asyncio.get_running_loop()
        self.slots = asyncio.Semaphore(self.max_in_flight if self.async_reader is not None else self.workers)

    async def watch_loop(self, interval: float = 0.002, window: int = 4) -> None:
        """Measure the event loop's lag forever: how much later than asked a short sleep wakes up, the smallest of
        the last `window` samples (a sustained lag: the loop has a backlog; a burst of a few requests does not)."""
        loop = asyncio.get_running_loop()
        recent = [0.0] * window
        i = 0
        while True:
            asked = loop.time() + interval
            await asyncio.sleep(interval)
            recent[i % window] = max(0.0, loop.time() - asked)
            i += 1
            self.loop_lag = min(recent)

    async def admit(self, arrived: float | None = None) -> bool:
        """Take a lookup slot within the admission budget, counted from `arrived` (perf_counter seconds: when the
        request reached the process; None: now): at once when one is free, else wait for one for what is left of
        the budget. False: overload (answer at once, fail-open); True: the caller must give the slot back
        (`release` / `release_when_done`). Also False while the event loop lags by more than the budget: requests
        are then waiting in the loop itself (CPU saturated), and answering them cheaply is how the backlog drains."""
        if self.loop_lag > self.admission and asyncio.get_running_loop() is self.loop:
            # (the lag is the lifespan's loop's: a request served on another loop, in tests, is not late)
            self.metrics.count_shed("loop_lag")
            return False
        left = self.admission if arrived is None else self.admission - (time.perf_counter() - arrived)
        if left <= 0:
            self.metrics.count_shed("waited")  # it waited for the loop longer than the budget already
            return False
        slots = self.slots
        if not slots.locked():
            await slots.acquire()  # a free slot: returns without suspending
            return True
        try:
            await asyncio.wait_for(slots.acquire(), left)
        except TimeoutError:
            self.metrics.count_shed("no_slot")
            return False
        return True

    def release(self) -> None:
        self.slots.release()

    def release_when_done(self, lookup: Future) -> None:
        """Give the slot back when the lookup thread is really done, not when the request stopped waiting for it:
        a thread stuck on a frozen store keeps its slot, so later requests are shed rather than queued behind it."""
        loop, slots = self.loop, self.slots

        def done(_: Future) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the app has stopped
                loop.call_soon_threadsafe(slots.release)

        lookup.add_done_callback(done)

    @property
    def policy_version(self) -> str | None:
        """The version of the policy being served, None before one is loaded."""
        return self.policy.version if self.policy else None

    @property
    def ready(self) -> bool:
        """Both a policy and a feature reader: decisions can be made."""
        return self.policy is not None and self.reader is not None

    def swap_policy(self, policy: Policy, source: str, pushed_at: str | None = None) -> str | None:
        """Serve `policy` from now on (one reference assignment: a request in flight keeps the one it read);
        returns the previous version."""
        old = self.policy_version
        compile_policy(policy)  # the engine's lookup tables, built before the first request needs them
        self.policy = policy
        self.policy_source, self.policy_loaded_at, self.policy_pushed_at = source, time.time(), pushed_at
        return old

    def reject_unknown_windows(self, policy: Policy) -> None:
        """Raise `PolicyValidationError` when a cap counts over a window the features do not (serving could not
        evaluate it)."""
        if errors := window_errors(policy, self.windows):
            raise PolicyValidationError(errors)

    def admin_authorized(self, authorization: str) -> bool:
        """Does this `Authorization` header carry an admin bearer token? Always, when there is none (dev).

        Every accepted token is compared, each in constant time, whichever matches: the time taken says nothing
        about which token (or how much of one) was right."""
        if not self._admin_tokens:
            return True
        scheme, _, token = authorization.partition(" ")
        offered = token.strip().encode()
        matches = [hmac.compare_digest(offered, accepted) for accepted in self._admin_tokens]
        return scheme.lower() == "bearer" and any(matches)

    def log_request(
        self,
        body: DecideRequest,
        at: datetime,
        version: str | None,
        audience: str | None,
        signal_tier: str | None,
        decisions: Sequence[Decision] | None,
        reason: str | None,
    ) -> None:
        """Record one answered request (decided as of `at`) in the decision log, if it is sampled; `decisions`
        None: failed open."""
        decision_log = self.decision_log
        if decision_log is None or not decision_log.sample():
            return
        try:
            rows = decision_rows(
                ts=at,
                fmt=body.context.format,
                audience=audience,
                signal_tier=signal_tier,
                policy_version=version,
                candidates=body.candidates,
                decisions=decisions,
                degraded_reason=reason,
            )
            decision_log.record(rows)
        except Exception:  # logging must never cost a decision
            log.exception("decision log record failed")


def serving_state(request: Request) -> ServingState:
    """The state of the app serving this request."""
    return request.app.state.serving
