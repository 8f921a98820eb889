"""The decision API: `POST /v1/decide` over the Feast online store and the hot-reloadable policy, failing open.

Fail-open is a contract: a feature lookup that errs or exceeds its time budget answers 200 with every candidate
eligible at penalty 1.0, `degraded: true` and a reason, and is counted in `/metrics`.
"""

from __future__ import annotations

import asyncio
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
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from freqcap.config import Settings
from freqcap.policy import Policy, PolicyValidationError, load_policy, parse_policy
from freqcap.policy.engine import Candidate, decide
from freqcap.policy.schema import policy_document
from freqcap.serving.reader import FeastReader, FeatureReader

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


class Metrics:
    """Counters rendered by hand in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.fail_open: Counter[str] = Counter()
        self.latency_sum = 0.0
        self.latency_count = 0
        self.policy_reloads: Counter[str] = Counter()

    def observe(self, seconds: float, reason: str | None) -> None:
        with self._lock:
            self.requests += 1
            self.latency_sum += seconds
            self.latency_count += 1
            if reason is not None:
                self.fail_open[reason.split(":")[0]] += 1

    def render(self, policy_version: str | None) -> str:
        with self._lock:
            lines = [
                "# HELP freqcap_decide_requests_total Decision requests answered.",
                "# TYPE freqcap_decide_requests_total counter",
                f"freqcap_decide_requests_total {self.requests}",
                "# HELP freqcap_decide_fail_open_total Decision requests answered fail-open, by reason.",
                "# TYPE freqcap_decide_fail_open_total counter",
            ]
            for reason in sorted(set(self.fail_open) | {"timeout", "store_error", "internal_error"}):
                lines.append(f'freqcap_decide_fail_open_total{{reason="{reason}"}} {self.fail_open[reason]}')
            lines += [
                "# HELP freqcap_decide_latency_seconds Time to answer a decision request.",
                "# TYPE freqcap_decide_latency_seconds summary",
                f"freqcap_decide_latency_seconds_sum {self.latency_sum:.6f}",
                f"freqcap_decide_latency_seconds_count {self.latency_count}",
                "# HELP freqcap_policy_reloads_total Policy reload attempts, by result.",
                "# TYPE freqcap_policy_reloads_total counter",
            ]
            for result in ("ok", "invalid"):
                lines.append(f'freqcap_policy_reloads_total{{result="{result}"}} {self.policy_reloads[result]}')
            if policy_version is not None:
                lines += [
                    "# TYPE freqcap_policy_info gauge",
                    f'freqcap_policy_info{{version="{_escape(policy_version)}"}} 1',
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


def _fail_open(version: str | None, ad_ids: Sequence[str], reason: str) -> dict[str, Any]:
    return {
        "policy_version": version,
        "degraded": True,
        "degraded_reason": reason,
        "decisions": [
            {"ad_id": a, "eligible": True, "penalty": 1.0, "distance_to_cap": None, "binding": None} for a in ad_ids
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
    }


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def create_app(
    settings: Settings,
    *,
    policy_path: str | Path,
    reader: FeatureReader | None = None,
    repo_dir: str | Path | None = None,
    admin_token: str | None = None,
    dev: bool = False,
    budget_ms: float = 10.0,
    lookup_workers: int = 8,
) -> FastAPI:
    """The decision API. Without `reader`, the lifespan opens the Feast store once (runtime repo `repo_dir`,
    default the features job's) and reads through it. `admin_token` guards `POST /v1/admin/policy`; an empty
    token is refused unless `dev=True` (then the admin endpoint is open)."""
    if not admin_token and not dev:
        raise ValueError("an admin token is required for the policy admin endpoint (or dev=True)")
    if budget_ms <= 0:
        raise ValueError("budget_ms must be positive")
    state = ServingState(budget_ms / 1000.0, lookup_workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.policy = load_policy(policy_path)
        if reader is not None:
            state.reader = reader
        else:
            from freqcap.feast_io.store import open_store
            from freqcap.jobs.features import feast_repo_dir

            repo = Path(repo_dir) if repo_dir is not None else feast_repo_dir(settings)
            store = await asyncio.get_running_loop().run_in_executor(None, open_store, settings, repo)
            state.reader = FeastReader(store, settings.features)
        log.info("serving policy %s", state.policy.version)
        try:
            yield
        finally:
            state.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="freqcap decision API", lifespan=lifespan)
    app.state.serving = state

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # Never a 500 on the decide path: whatever broke, the ad server gets "no penalty".
        log.exception("unexpected error on %s", request.url.path)
        body = getattr(request.state, "decide_request", None)
        if request.url.path == "/v1/decide" and body is not None:
            reason = f"internal_error: {type(exc).__name__}"
            state.metrics.observe(0.0, reason)
            version = state.policy.version if state.policy else None
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
        try:
            if policy is None or state.reader is None:
                raise RuntimeError("not ready")
            cands = [Candidate(c.ad_id, c.campaign_id, c.advertiser_id) for c in body.candidates]
            loop = asyncio.get_running_loop()
            lookup = loop.run_in_executor(state.pool, state.reader.read, body.user_id, cands)
            try:
                user = await asyncio.wait_for(lookup, timeout=state.budget)
            except TimeoutError:
                reason = "timeout"
            except Exception as exc:  # the store failed: fail open, and say why
                reason = f"store_error: {type(exc).__name__}"
            if reason is None:
                decisions = decide(policy, user.audience, user.signal_tier, cands, user.states, _utc(body.context.ts))
                out = {
                    "policy_version": version,
                    "degraded": False,
                    "degraded_reason": None,
                    "decisions": [_decision_json(d) for d in decisions],
                }
        except Exception as exc:
            log.exception("decide failed")
            reason = f"internal_error: {type(exc).__name__}"
        if reason is not None:
            out = _fail_open(version, ad_ids, reason)
        state.metrics.observe(time.perf_counter() - started, reason)
        return out

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
        return PlainTextResponse(state.metrics.render(version), media_type="text/plain; version=0.0.4")

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
        except ValueError:
            pass  # YAML text
        try:
            new = parse_policy(document)
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
