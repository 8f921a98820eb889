"""The decision API: `POST /v1/decide` over the Feast online store and the hot-reloadable policy, failing open.

Fail-open is a contract: a feature lookup that errs or exceeds its time budget answers 200 with every candidate
eligible at penalty 1.0, `degraded: true` and a reason, and is counted in `/metrics`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from freqcap.adapters.decision_log import DecisionLog, decision_rows, is_hit
from freqcap.adapters.feast.reader import FeastReader, FeatureReader
from freqcap.config import Settings
from freqcap.domain.policy import Policy, PolicyValidationError, load_policy, parse_policy
from freqcap.domain.policy.engine import LEVELS, Candidate, decide
from freqcap.domain.policy.guardrails import feature_windows, window_errors
from freqcap.domain.policy.schema import policy_document
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecideContext(_Strict):
    format: str = Field(min_length=1)
    ts: datetime


class CandidateIn(_Strict):
    ad_id: str = Field(min_length=1)
    campaign_id: str = Field(min_length=1)
    advertiser_id: str = Field(min_length=1)


class DecideRequest(_Strict):
    user_id: str = Field(min_length=1)
    context: DecideContext
    candidates: list[CandidateIn] = Field(min_length=1, max_length=500)


LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    """Counters rendered by hand in the Prometheus text format (no client library on the hot path)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.fail_open: Counter[str] = Counter()
        self.latency_sum = 0.0
        self.latency_buckets = [0] * len(LATENCY_BUCKETS)
        self.policy_reloads: Counter[str] = Counter()
        self.decisions = 0
        self.cap_hits: Counter[str] = Counter()
        self.stream_stale = 0

    def count_stream_stale(self) -> None:
        with self._lock:
            self.stream_stale += 1

    def observe(self, seconds: float, reason: str | None, decisions: Sequence[Any] = ()) -> None:
        hits = Counter(d.binding.level for d in decisions if is_hit(d))
        with self._lock:
            self.requests += 1
            self.latency_sum += seconds
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.latency_buckets[i] += 1
            if reason is not None:
                self.fail_open[reason.split(":")[0]] += 1
            self.decisions += len(decisions)
            self.cap_hits.update(hits)

    def render(self, policy_version: str | None, decision_log: DecisionLog | None = None) -> str:
        with self._lock:
            lines = [
                "# HELP freqcap_decide_requests_total Decision requests answered.",
                "# TYPE freqcap_decide_requests_total counter",
                f"freqcap_decide_requests_total {self.requests}",
                "# HELP freqcap_decide_fail_open_total Decision requests answered fail-open, by reason.",
                "# TYPE freqcap_decide_fail_open_total counter",
            ]
            for reason in sorted(set(self.fail_open) | {"timeout", "store_error", "internal_error", "no_policy"}):
                lines.append(f'freqcap_decide_fail_open_total{{reason="{reason}"}} {self.fail_open[reason]}')
            lines += [
                "# HELP freqcap_decide_latency_seconds Time to answer a decision request (server side).",
                "# TYPE freqcap_decide_latency_seconds histogram",
            ]
            for bound, count in zip(LATENCY_BUCKETS, self.latency_buckets, strict=True):
                lines.append(f'freqcap_decide_latency_seconds_bucket{{le="{bound}"}} {count}')
            lines += [
                f'freqcap_decide_latency_seconds_bucket{{le="+Inf"}} {self.requests}',
                f"freqcap_decide_latency_seconds_sum {self.latency_sum:.6f}",
                f"freqcap_decide_latency_seconds_count {self.requests}",
                "# HELP freqcap_decisions_total Candidate decisions made (not counting fail-open answers).",
                "# TYPE freqcap_decisions_total counter",
                f"freqcap_decisions_total {self.decisions}",
                "# HELP freqcap_cap_hits_total Candidate decisions whose binding constraint was reached, by level.",
                "# TYPE freqcap_cap_hits_total counter",
            ]
            for level in LEVELS:
                lines.append(f'freqcap_cap_hits_total{{level="{level}"}} {self.cap_hits[level]}')
            lines += [
                "# HELP freqcap_decide_stream_stale_total Requests decided from batch alone: the stream was stale.",
                "# TYPE freqcap_decide_stream_stale_total counter",
                f"freqcap_decide_stream_stale_total {self.stream_stale}",
            ]
            lines += [
                "# HELP freqcap_policy_reloads_total Policy reload attempts, by result.",
                "# TYPE freqcap_policy_reloads_total counter",
            ]
            for result in ("ok", "invalid"):
                lines.append(f'freqcap_policy_reloads_total{{result="{result}"}} {self.policy_reloads[result]}')
            if policy_version is not None:
                lines += [
                    "# HELP freqcap_policy_info The policy version being served.",
                    "# TYPE freqcap_policy_info gauge",
                    f'freqcap_policy_info{{version="{_escape(policy_version)}"}} 1',
                ]
        if decision_log is not None:
            lines += [
                "# HELP freqcap_decision_log_rows_total Decision log rows, by outcome.",
                "# TYPE freqcap_decision_log_rows_total counter",
                f'freqcap_decision_log_rows_total{{outcome="written"}} {decision_log.written}',
                f'freqcap_decision_log_rows_total{{outcome="dropped"}} {decision_log.dropped}',
            ]
        return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ServingState:
    """What the handlers share. `policy` is replaced by a single reference assignment (atomic hot reload)."""

    def __init__(self, budget_seconds: float, workers: int):
        self.policy: Policy | None = None
        self.reader: FeatureReader | None = None
        self.budget = budget_seconds
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="freqcap-lookup")
        self.metrics = Metrics()


class _NotReady(Exception):
    """No policy (or no reader) yet: answer fail-open with this reason."""


def _fail_open(version: str | None, ad_ids: Sequence[str], reason: str) -> dict[str, Any]:
    return {
        "policy_version": version,
        "degraded": True,
        "degraded_reason": reason,
        "decisions": [
            {"ad_id": a, "eligible": True, "penalty": 1.0, "distance_to_cap": None, "binding": None, "reason": reason}
            for a in ad_ids
        ],
    }


def _decision_json(d) -> dict[str, Any]:
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


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def create_app(
    settings: Settings,
    *,
    policy_path: str | Path | None,
    reader: FeatureReader | None = None,
    repo_dir: str | Path | None = None,
    admin_token: str | None = None,
    dev: bool = False,
    budget_ms: float = 10.0,
    lookup_workers: int = 8,
    decision_log: DecisionLog | None = None,
) -> FastAPI:
    """The decision API. Without `reader`, the lifespan opens the Feast store once (runtime repo `repo_dir`,
    default the features job's) and reads through it. `admin_token` guards `POST /v1/admin/policy`; an empty
    token is refused unless `dev=True` (then the admin endpoint is open). `decision_log` (optional) receives a
    sample of the decisions; its flusher runs for the app's lifetime.

    A policy file that is missing or invalid at start (or `policy_path=None`) does not stop the service: it starts
    not ready (`/readyz` 503), answers decisions fail-open with reason `no_policy`, and accepts a policy on the admin
    endpoint.
    """
    if not admin_token and not dev:
        raise ValueError("an admin token is required for the policy admin endpoint (or dev=True)")
    if budget_ms <= 0:
        raise ValueError("budget_ms must be positive")
    state = ServingState(budget_ms / 1000.0, lookup_workers)
    windows = feature_windows(settings.features)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # A fresh pool per lifespan: the previous one was shut down when its lifespan ended (a second start, e.g.
        # a second TestClient or a test runner restarting the app, would otherwise fail every lookup open).
        state.pool = ThreadPoolExecutor(max_workers=lookup_workers, thread_name_prefix="freqcap-lookup")
        if policy_path is None:
            log.warning("started without a policy; answering fail-open until one is pushed")
        else:
            try:
                loaded = load_policy(policy_path)
                if errors := window_errors(loaded, windows):
                    raise PolicyValidationError(errors)
                state.policy = loaded
                log.info("serving policy %s", state.policy.version)
            except (OSError, PolicyValidationError) as exc:
                log.error("no policy loaded at start (%s); answering fail-open until one is pushed", exc)
        loop = asyncio.get_running_loop()
        if reader is not None:
            state.reader = reader
        else:
            from freqcap.adapters.feast.store import open_store

            repo = Path(repo_dir) if repo_dir is not None else DataLayout.of(settings).feast_repo
            store = await loop.run_in_executor(None, open_store, settings, repo)
            if settings.serving.reader == "feast":
                state.reader = FeastReader(store, settings.features)
            else:
                # Direct reads of Feast's online store (Redis: one round trip with a socket timeout, so a frozen
                # Redis frees lookup threads; SQLite: one SELECT); FeastReader for any other store.
                from freqcap.adapters.feast.fast_reader import DEFAULT_SOCKET_TIMEOUT, make_reader

                timeout = max(DEFAULT_SOCKET_TIMEOUT, 10 * state.budget)
                state.reader = await loop.run_in_executor(
                    None, functools.partial(make_reader, store, settings, socket_timeout=timeout)
                )
        # Warm up (registry, connections, code paths) so the first real request does not pay for it.
        warm = Candidate("warmup-ad", "warmup-campaign", "warmup-advertiser")
        for _ in range(2):
            try:
                await loop.run_in_executor(state.pool, state.reader.read, "warmup-user", [warm])
            except Exception as exc:  # a store down at start: serve anyway, failing open
                log.warning("warm-up lookup failed: %s", exc)
        if decision_log is not None:
            decision_log.start()
        try:
            yield
        finally:
            state.pool.shutdown(wait=False, cancel_futures=True)
            if reader is None and hasattr(state.reader, "close"):
                state.reader.close()
            if decision_log is not None:
                decision_log.close()

    app = FastAPI(title="freqcap decision API", lifespan=lifespan)
    app.state.serving = state

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError):
        # FastAPI's own handler echoes each error's `input` and fails (500) on NaN/Infinity: keep the message only.
        errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # Never a 500 on the decide path: whatever broke, the ad server gets "no penalty".
        log.exception("unexpected error on %s", request.url.path)
        body = getattr(request.state, "decide_request", None)
        if request.url.path == "/v1/decide" and body is not None:
            reason = f"internal_error: {type(exc).__name__}"
            state.metrics.observe(0.0, reason)
            version = state.policy.version if state.policy else None
            _log_request(body, version, None, None, None, reason)
            return JSONResponse(_fail_open(version, [c.ad_id for c in body.candidates], reason))
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.post("/v1/decide")
    async def decide_endpoint(body: DecideRequest, request: Request):
        request.state.decide_request = body
        started = time.perf_counter()
        policy = state.policy  # one read of the reference: the whole request uses one policy version
        ad_ids = [c.ad_id for c in body.candidates]
        version = policy.version if policy else None
        reason: str | None = None
        decisions: list[Any] = []
        user = None
        try:
            if policy is None or state.reader is None:
                raise _NotReady("no_policy" if policy is None else "not_ready")
            cands = [Candidate(c.ad_id, c.campaign_id, c.advertiser_id) for c in body.candidates]
            loop = asyncio.get_running_loop()
            if getattr(state.reader, "reads_stream", False):
                read = functools.partial(state.reader.read, body.user_id, cands, _utc(body.context.ts))
            else:
                read = functools.partial(state.reader.read, body.user_id, cands)
            lookup = loop.run_in_executor(state.pool, read)
            try:
                user = await asyncio.wait_for(lookup, timeout=state.budget)
            except TimeoutError:
                reason = "timeout"
            except Exception as exc:  # the store failed: fail open, and say why
                reason = f"store_error: {type(exc).__name__}"
            if reason is None:
                decisions = decide(policy, user.audience, user.signal_tier, cands, user.states, _utc(body.context.ts))
                # Batch alone because the stream is stale: real decisions, flagged (not a fail-open).
                stale = getattr(user, "stream_stale", False)
                out = {
                    "policy_version": version,
                    "degraded": stale,
                    "degraded_reason": "stream_stale" if stale else None,
                    "decisions": [_decision_json(d) for d in decisions],
                }
        except _NotReady as exc:
            reason = str(exc)
        except Exception as exc:
            log.exception("decide failed")
            reason = f"internal_error: {type(exc).__name__}"
        if reason is not None:
            out = _fail_open(version, ad_ids, reason)
            decisions = []
        state.metrics.observe(time.perf_counter() - started, reason, decisions)
        if reason is None:
            stale = getattr(user, "stream_stale", False)
            if stale:
                state.metrics.count_stream_stale()
            _log_request(body, version, user.audience, user.signal_tier, decisions, "stream_stale" if stale else None)
        else:
            _log_request(body, version, None, None, None, reason)
        return JSONResponse(out)  # plain values already: skip jsonable_encoder (~2x faster for 100 candidates)

    def _log_request(body, version, audience, signal_tier, decisions, reason) -> None:
        if decision_log is None or not decision_log.sample():
            return
        try:
            rows = decision_rows(
                ts=body.context.ts,
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

    @app.get("/v1/policy")
    async def get_policy():
        policy = state.policy
        if policy is None:
            return JSONResponse({"detail": "no policy loaded"}, status_code=503)
        return {"version": policy.version, "policy": policy_document(policy)}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        ready = state.policy is not None and state.reader is not None
        body = {"ready": ready, "policy_version": state.policy.version if state.policy else None}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics():
        version = state.policy.version if state.policy else None
        body = state.metrics.render(version, decision_log)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    @app.post("/v1/admin/policy")
    async def reload_policy(request: Request):
        if admin_token:
            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), admin_token.encode()):
                return JSONResponse({"detail": "invalid or missing bearer token"}, status_code=401)
        raw = (await request.body()).decode("utf-8", errors="replace")
        document: Any = raw
        try:
            parsed = json.loads(raw)
            if isinstance(parsed, dict | str):
                document = parsed
        except (ValueError, RecursionError):
            pass  # YAML text (or unreadable: parse_policy says so)
        try:
            new = parse_policy(document)
            if errors := window_errors(new, windows):
                raise PolicyValidationError(errors)
        except PolicyValidationError as exc:
            state.metrics.policy_reloads["invalid"] += 1
            keep = state.policy.version if state.policy else None
            return JSONResponse({"detail": str(exc), "errors": exc.errors, "policy_version": keep}, status_code=422)
        old = state.policy.version if state.policy else None
        state.policy = new  # the atomic swap
        state.metrics.policy_reloads["ok"] += 1
        log.info("policy swapped %s -> %s", old, new.version)
        return {"policy_version": new.version, "previous_version": old}

    return app
