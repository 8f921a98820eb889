"""The decision API: `create_app` wires the state, the routes and the error handlers, and runs the lifespan.

The endpoints are in `routes`, the state they share in `dependencies`, the wire format in `schemas`, the
counters in `metrics`, the policy at start and the sync with the live-policy store in `policy_sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from freqcap.adapters.decision_log import DecisionLog
from freqcap.adapters.feast.async_cluster import async_reader_for
from freqcap.adapters.feast.fast_reader import DEFAULT_SOCKET_TIMEOUT, make_reader
from freqcap.adapters.feast.reader import FeastReader, FeatureReader
from freqcap.adapters.feast.store import open_store
from freqcap.adapters.policy_store import PolicyStore, policy_store_from_settings
from freqcap.adapters.secrets import load_pseudonymizer
from freqcap.api.dependencies import AdminTokens, ServingState, admin_token_list
from freqcap.api.fast_path import handle_decide, is_decide
from freqcap.api.policy_sync import load_initial_policy, run_sync
from freqcap.api.routes import invalid_request, router, unexpected_error
from freqcap.config import Settings
from freqcap.domain.policy.engine import Candidate
from freqcap.domain.policy.guardrails import feature_windows
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)


class DecisionAPI(FastAPI):
    """The FastAPI app, with `POST /v1/decide` answered by the msgspec fast path before Starlette's stack
    (`fast_path`); every other request, and a decide body the fast path leaves to pydantic, goes through FastAPI."""

    async def __call__(self, scope, receive, send) -> None:
        if is_decide(scope):
            await handle_decide(self.state.serving, scope, receive, send, super().__call__)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    policy_path: str | Path | None,
    reader: FeatureReader | None = None,
    repo_dir: str | Path | None = None,
    admin_token: AdminTokens = None,
    dev: bool = False,
    budget_ms: float = 10.0,
    lookup_workers: int = 8,
    admission_ms: float = 5.0,
    max_in_flight: int = 32,
    decision_log: DecisionLog | None = None,
    policy_store: PolicyStore | None = None,
) -> FastAPI:
    """The decision API. Without `reader`, the lifespan opens the Feast store once (runtime repo `repo_dir`,
    default the features job's) and reads through it. `admin_token` (one token, or several: every one is accepted,
    as during a rotation) guards `POST /v1/admin/policy`; none is refused unless `dev=True` (then the admin endpoint
    is open), and so is one shorter than `MIN_ADMIN_TOKEN_CHARS`. `decision_log` (optional) receives a
    sample of the decisions; its flusher runs for the app's lifetime. `policy_store` (default: the one
    `serving.policy_store` selects, if any) keeps the live policy: a push is saved there, the store's policy wins
    over `policy_path` at start, and a background task re-reads it every `serving.policy_refresh` seconds.

    Overload: a Redis reader runs on the event loop with at most `max_in_flight` lookups at once; other readers run
    on `lookup_workers` threads, one lookup each. A request whose lookup cannot start within `admission_ms` of its
    arrival (stamped by serving's HTTP protocol, `server`; without a stamp, of its handler's start) is answered at
    once, fail-open with reason `overload`: nothing waits in a queue, and `budget_ms` measures the store. So is
    every request while the event loop runs timers later than `admission_ms`, sustained (the CPU is saturated:
    answering cheaply is how the backlog drains).

    A policy file that is missing or invalid at start (or `policy_path=None`) with no policy in the store does not
    stop the service: it starts not ready (`/readyz` 503), answers decisions fail-open with reason `no_policy`, and
    accepts a policy on the admin endpoint.
    """
    tokens = admin_token_list(admin_token)
    if not tokens and not dev:
        raise ValueError("serving.admin_token is required for the policy admin endpoint (or --dev)")
    if budget_ms <= 0:
        raise ValueError("budget_ms must be positive")
    if admission_ms <= 0 or max_in_flight <= 0:
        raise ValueError("admission_ms and max_in_flight must be positive")
    state = ServingState(
        budget_seconds=budget_ms / 1000.0,
        workers=lookup_workers,
        windows=feature_windows(settings.features),
        admin_tokens=tokens,
        decision_log=decision_log,
        store=policy_store if policy_store is not None else policy_store_from_settings(settings),
        admission_seconds=admission_ms / 1000.0,
        max_in_flight=max_in_flight,
    )
    refresh = settings.serving.policy_refresh

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # A fresh pool per lifespan: the previous one was shut down when its lifespan ended (a second start, e.g.
        # a second TestClient or a test runner restarting the app, would otherwise fail every lookup open).
        state.pool = state.new_pool()
        # The serving edge's key (privacy.keys, or the data directory's key file): loaded here, not at import.
        state.pseudonymizer = load_pseudonymizer(settings)
        await load_initial_policy(state, policy_path)
        state.reader = reader if reader is not None else await _open_reader(settings, repo_dir, state.budget)
        # Redis (one node or a cluster) is read on the event loop; other readers on the lookup threads.
        state.async_reader = async_reader_for(state.reader, max_connections=state.max_in_flight)
        state.start_admission()
        await _warm_up(state)
        # Everything loaded so far (Feast, pandas, pyarrow, the registry: ~170 k objects) lives as long as the
        # process: take it out of the collector's view. A full collection over it took ~110 ms here, a stall of
        # every request in flight (the p99 of the decide path under load, and lookups failing open `timeout`).
        gc.collect()
        gc.freeze()
        if decision_log is not None:
            decision_log.start()
        sync = asyncio.create_task(run_sync(state, refresh)) if state.store is not None else None
        lag = asyncio.create_task(state.watch_loop())
        try:
            yield
        finally:
            lag.cancel()
            gc.unfreeze()
            if sync is not None:
                sync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sync
            state.pool.shutdown(wait=False, cancel_futures=True)
            if state.async_reader is not None:
                state.async_reader.close()
            if reader is None and hasattr(state.reader, "close"):
                state.reader.close()
            if decision_log is not None:
                decision_log.close()

    app = DecisionAPI(title="freqcap decision API", lifespan=lifespan)
    app.state.serving = state
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, unexpected_error)
    app.include_router(router)
    return app


async def _open_reader(settings: Settings, repo_dir: str | Path | None, budget_seconds: float) -> FeatureReader:
    """Open the Feast store (off the event loop) and the reader that serving's settings ask for."""
    loop = asyncio.get_running_loop()
    repo = Path(repo_dir) if repo_dir is not None else DataLayout.of(settings).feast_repo
    store = await loop.run_in_executor(None, open_store, settings, repo)
    if settings.serving.reader == "feast":
        return FeastReader(store, settings.features)
    # Direct reads of Feast's online store (Redis: one round trip with a socket timeout, so a frozen Redis frees
    # lookup threads; Redis Cluster: one round trip per master, all at once; SQLite: one SELECT); FeastReader for
    # any other store.
    timeout = max(DEFAULT_SOCKET_TIMEOUT, 10 * budget_seconds)
    return await loop.run_in_executor(None, functools.partial(make_reader, store, settings, socket_timeout=timeout))


async def _warm_up(state: ServingState) -> None:
    """Two throwaway lookups (registry, connections, code paths) so the first real request does not pay for them."""
    loop = asyncio.get_running_loop()
    warm = Candidate("warmup-ad", "warmup-campaign", "warmup-advertiser")
    for _ in range(2):
        try:
            if state.async_reader is not None:
                await asyncio.wait_for(state.async_reader.read("warmup-user", [warm]), 1.0)
            await loop.run_in_executor(state.pool, state.reader.read, "warmup-user", [warm])
        except Exception as exc:  # a store down at start: serve anyway, failing open
            log.warning("warm-up lookup failed: %s", exc)
