"""Keeping every serving process on the live policy: the policy at start, and a background sync with the store.

At start, a policy in the store wins over the policy file (the store holds the last one pushed; the file is what
the process was deployed with). Then, every `serving.policy_refresh` seconds, each process reads the store's
revision (a `stat` or one HMGET) and, only when it changed, loads the entry and validates it exactly like a push
(schema, the entry's version, the feature windows). A push to any process therefore reaches every process within
`policy_refresh` plus one store read and one validation (milliseconds on a healthy store; a store read is bounded
by its 1 s socket timeout).

Nothing here can break serving: an unreachable store or a corrupt entry is logged (once per outage or entry),
counted in `freqcap_policy_sync_errors_total`, and the process keeps the last good policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from freqcap.adapters.policy_store import (
    PolicyStoreUnavailable,
    StoredPolicy,
    StoredPolicyInvalid,
    policy_from_stored,
)
from freqcap.api.dependencies import ServingState
from freqcap.api.metrics import LivePolicy
from freqcap.domain.policy import Policy, PolicyValidationError, load_policy

log = logging.getLogger(__name__)


def live_policy(state: ServingState) -> LivePolicy:
    """Where the served policy came from, for /metrics."""
    return LivePolicy(
        source=state.policy_source,
        store=state.store.kind if state.store is not None else "none",
        loaded_at=state.policy_loaded_at,
        pushed_at=state.policy_pushed_at,
        store_read_at=state.store_read_at,
    )


def _load_valid(state: ServingState) -> tuple[StoredPolicy, Policy] | None:
    """The store's entry and its policy, validated like a push (blocking: run it off the event loop)."""
    stored = state.store.load()
    if stored is None:
        return None
    policy = policy_from_stored(stored)
    try:
        state.reject_unknown_windows(policy)
    except PolicyValidationError as exc:
        raise StoredPolicyInvalid(f"stored policy {stored.version} is invalid: {exc}") from exc
    return stored, policy


def _store_failed(state: ServingState, kind: str, exc: Exception) -> None:
    state.metrics.policy_sync_errors[kind] += 1
    if kind == "invalid":
        log.error("ignoring the stored policy, keeping %s: %s", state.policy_version, exc)
    elif state.store_error is None:  # once per outage, not every refresh
        log.warning("policy store unreachable, keeping policy %s: %s", state.policy_version, exc)
    if kind == "unavailable":
        state.store_error = str(exc)


async def sync_once(state: ServingState) -> bool:
    """One look at the store: load and swap in its policy when its revision changed. True when swapped."""
    if state.store is None:
        return False
    loop = asyncio.get_running_loop()
    known = state.store_revision
    try:
        revision = await loop.run_in_executor(None, state.store.revision)
        if revision is None or revision == known:
            loaded = None
        else:
            loaded = await loop.run_in_executor(None, _load_valid, state)
    except PolicyStoreUnavailable as exc:
        _store_failed(state, "unavailable", exc)
        return False
    except StoredPolicyInvalid as exc:
        if state.store_revision == known:
            state.store_revision = revision  # refused once: not reloaded (nor logged) until the entry changes
        _store_failed(state, "invalid", exc)
        return False
    state.store_read_at = time.time()
    if state.store_error is not None:
        log.warning("policy store reachable again")
        state.store_error = None
    if loaded is None:
        return False
    if state.store_revision != known:  # a push to this process saved a newer entry meanwhile: that one wins
        return False
    stored, policy = loaded
    state.store_revision = stored.revision
    old = state.swap_policy(policy, "store", stored.pushed_at)
    state.metrics.policy_reloads["synced"] += 1
    log.info("policy %s -> %s from the %s store (pushed %s)", old, policy.version, state.store.kind, stored.pushed_at)
    return True


async def load_initial_policy(state: ServingState, policy_path: str | Path | None) -> None:
    """The store's policy if it holds a valid one, else the policy file's; neither: start not ready (logged)."""
    if await sync_once(state):
        if policy_path is not None:
            log.warning(
                "serving policy %s from the %s store (the last pushed); the policy file %s is not used",
                state.policy_version,
                state.store.kind,
                policy_path,
            )
        return
    if state.store is not None:
        log.info("the %s policy store holds no usable policy: using the policy file", state.store.kind)
    if (policy := _policy_file(policy_path, state)) is not None:
        state.swap_policy(policy, "file")


def _policy_file(policy_path: str | Path | None, state: ServingState) -> Policy | None:
    """The policy file's policy if it loads and fits the feature windows; else None (logged): serve fail-open."""
    if policy_path is None:
        log.warning("started without a policy; answering fail-open until one is pushed")
        return None
    try:
        loaded = load_policy(policy_path)
        state.reject_unknown_windows(loaded)
    except (OSError, PolicyValidationError) as exc:
        log.error("no policy loaded at start (%s); answering fail-open until one is pushed", exc)
        return None
    log.info("serving policy %s from %s", loaded.version, policy_path)
    return loaded


async def run_sync(state: ServingState, refresh_seconds: float) -> None:
    """Sync with the store every `refresh_seconds` until cancelled (the app's lifespan ends)."""
    loop = asyncio.get_running_loop()
    # A fixed rate, not a fixed pause after each look: the time a look takes does not stretch the period (and so
    # the propagation bound); a process that fell behind (a slow store) starts afresh rather than catching up.
    next_at = loop.time()
    while True:
        next_at = max(next_at + refresh_seconds, loop.time())
        await asyncio.sleep(next_at - loop.time())
        try:
            await sync_once(state)
        except Exception as exc:  # a bug here must not stop the sync, let alone serving
            log.exception("policy sync failed")
            _store_failed(state, "unavailable", exc)
