"""OpenAPI-driven fuzzing of the decision API (schemathesis) over a real SQLite Feast store.

Every operation of the app's own OpenAPI schema is fuzzed, with schema-valid and schema-violating inputs
(schemathesis' positive and negative generation, its coverage phase of boundary values and undeclared methods):
`POST /v1/decide`, `GET /v1/policy`, `/healthz`, `/readyz`, `/metrics` and `POST /v1/admin/policy`.

The assertion for every response: never a 5xx, and every 4xx carries a non-empty `detail`. On top of that:
- a decide body the app's own request model accepts (sent as JSON) answers 200, not degraded, one decision per
  candidate in order; an undeclared method answers 405; the GETs answer 200;
- the admin endpoint is called twice per case: as generated (no or a random bearer token: 401) and with the real
  token (200 for a valid policy, else 422, the live policy unchanged). A policy that was accepted must be one
  serving can use: a decision under it answers 200 and is not degraded. Then the baseline policy is put back.
Hand-made cases follow: hostile bodies (deep nesting, huge numbers, NaN, bad UTF-8) and well-formed policies
serving cannot use (durations out of range, non-positive, or not a feature window): 4xx with a message.

The app's schema declares no body and no auth for the admin endpoint (it reads the raw request); the test adds
both to the schema it fuzzes from (`_admin_operation`), so that the fuzzer sends policy-shaped documents.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from pydantic import ValidationError
from schemathesis.python import asgi

from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.store import open_store
from freqcap.api.app import create_app
from freqcap.api.schemas import DecideRequest
from freqcap.config import load_settings
from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.schema import Policy
from tests.integration.test_feast_online import T1, _run_snapshot, _settings, random_events
from tests.integration.test_serving import TOKEN, body, policy_doc, write_policy

# Fuzzing examples per operation and generation mode; the coverage phase adds its own boundary cases.
MAX_EXAMPLES = 30
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Served:
    app: FastAPI
    http: TestClient  # owns the lifespan; a 5xx comes back as a response (hand-made requests)
    fuzz: asgi.ASGIClient  # what schemathesis sends through; an app exception propagates with a curl reproducer
    accepted: list[str] = field(default_factory=list)  # versions of fuzzed policies the admin endpoint took
    seen: Counter = field(default_factory=Counter)  # (method path, status) of every fuzzed call


def _admin_operation(openapi: dict[str, Any]) -> dict[str, Any]:
    """The app's schema with a request body (the policy document, JSON or YAML text) and an optional bearer
    header declared for `POST /v1/admin/policy`."""
    doc = json.loads(json.dumps(openapi))
    policy_schema = Policy.model_json_schema(ref_template="#/components/schemas/{model}")
    doc["components"]["schemas"].update(policy_schema.pop("$defs", {}))
    doc["components"]["schemas"]["Policy"] = policy_schema
    op = doc["paths"]["/v1/admin/policy"]["post"]
    op["parameters"] = [{"name": "Authorization", "in": "header", "required": False, "schema": {"type": "string"}}]
    op["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Policy"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
    op["responses"]["401"] = {"description": "missing or wrong token"}
    op["responses"]["422"] = {"description": "invalid policy"}
    return doc


@contextmanager
def serve(tmp_path: Path) -> Iterator[Served]:
    """The decision API over a real SQLite Feast store with materialized features, its lifespan run once (by a
    TestClient); fuzzed requests reach it through `ASGIClient`, which does not touch the lifespan."""
    settings_ = _settings(tmp_path, "sqlite")
    events_dir = tmp_path / "events"
    write_events(random_events(7, 300, T1 - timedelta(days=3), T1), events_dir / "p.parquet")
    repo = tmp_path / "feast"
    _run_snapshot(settings_, tmp_path, events_dir, T1, open_store(settings_, repo), repo)
    # A generous budget: a schema-valid request must get a real (non-degraded) decision from SQLite.
    app = create_app(
        settings_,
        policy_path=write_policy(tmp_path),
        repo_dir=repo,
        admin_token=TOKEN,
        budget_ms=5000,
        admission_ms=1000,
    )
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Served(app, http, asgi.ASGIClient(app))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("fuzz")) as it:
        yield it


def _acceptable(response) -> None:
    """Never a 5xx; every 4xx carries a message in `detail`."""
    status = response.status_code
    assert status < 500, f"{status} server error: {response.text[:500]}"
    if 400 <= status < 500:
        try:
            payload = response.json()
        except ValueError:
            pytest.fail(f"{status} without a JSON body: {response.text[:200]!r}")
        assert isinstance(payload, dict) and payload.get("detail"), f"{status} without a detail: {payload!r}"


def _is_valid_decide_body(case) -> bool:
    """Would the app's own request model accept this body (sent as JSON)?"""
    sent_type = (case.headers or {}).get("Content-Type", case.media_type) or ""
    if case.media_type != "application/json" or "json" not in sent_type or not isinstance(case.body, dict):
        return False
    try:
        DecideRequest.model_validate_json(json.dumps(case.body))
    except (ValidationError, TypeError, ValueError):
        return False
    return True


def _fuzz_admin(case, served: Served) -> None:
    app = served.app
    baseline = app.state.serving.policy
    anonymous = case.call(app=app, session=served.fuzz)
    served.seen[(f"{case.method} {case.path} (no token)", anonymous.status_code)] += 1
    _acceptable(anonymous)
    if anonymous.status_code != 405 and TOKEN not in str(case.headers.get("Authorization") if case.headers else ""):
        assert anonymous.status_code == 401, anonymous.text
    authed = case.call(app=app, session=served.fuzz, headers=AUTH)
    served.seen[(f"{case.method} {case.path} (token)", authed.status_code)] += 1
    _acceptable(authed)
    if authed.status_code == 405:
        return
    assert authed.status_code in (200, 422), authed.text
    if authed.status_code == 422:
        assert app.state.serving.policy is baseline, "a rejected policy must leave the live one in place"
        return
    served.accepted.append(app.state.serving.policy.version)
    try:
        # The fuzzed policy is live: serving can evaluate it (a policy it cannot evaluate must have been refused).
        resp = served.http.post("/v1/decide", json=body())
        _acceptable(resp)
        assert resp.status_code == 200, resp.text
        got = resp.json()
        reason = (got["degraded_reason"] or "not degraded").split(":")[0]
        served.seen[(f"POST /v1/decide under a fuzzed policy ({reason})", resp.status_code)] += 1
        assert got["policy_version"] == app.state.serving.policy.version
        assert got["degraded"] is False, (got["degraded_reason"], authed.request.body)
    finally:
        app.state.serving.policy = baseline


def _static_schema():
    """The schema to fuzz from, loaded at import (schemathesis parametrizes at collection). The OpenAPI document
    depends on the code only, so an app that is never started provides it; cases go to the `served` app.
    (`schemathesis.pytest.from_fixture` would load it lazily, but 4.32.5's lazy path breaks on pytest 9.)"""
    blueprint = create_app(load_settings(), policy_path="(never loaded)", admin_token=TOKEN)
    loaded = schemathesis.openapi.from_dict(_admin_operation(blueprint.openapi()))
    loaded.config.generation.update(modes=["positive", "negative"], max_examples=MAX_EXAMPLES)
    return loaded


schema = _static_schema()


@schema.parametrize()
@settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_never_5xx(case, served):
    check_case(case, served)


def check_case(case, served: Served) -> None:
    if case.path == "/v1/admin/policy":
        _fuzz_admin(case, served)
        return
    response = case.call(app=served.app, session=served.fuzz)
    served.seen[(f"{case.method} {case.path}", response.status_code)] += 1
    _acceptable(response)
    if case.method.upper() != case.operation.method.upper():
        assert response.status_code == 405, response.text  # the coverage phase tries undeclared methods
    elif case.path == "/v1/decide" and _is_valid_decide_body(case):
        assert response.status_code == 200, response.text
        got = response.json()
        assert got["degraded"] is False, got["degraded_reason"]
        assert [d["ad_id"] for d in got["decisions"]] == [c["ad_id"] for c in case.body["candidates"]]
    elif case.path != "/v1/decide":
        assert response.status_code == 200, response.text  # the GETs take no input


HOSTILE = {
    "empty": b"",
    "null": b"null",
    "array": b"[]",
    "string": b'"a string"',
    "truncated": b"{",
    "bad-utf8": b"\xff\xfe",
    "deep-array": b"[" * 100_000,
    "deep-object": b'{"a":' * 50_000,
    "huge-int": b"1" * 10_000,
    "nan": b"NaN",
    "nan-field": b'{"user_id": "u", "context": {"format": "feed", "ts": "2026-10-10T00:00Z"}, "candidates": NaN}',
    "inf-field": b'{"user_id": Infinity, "context": {"format": "feed", "ts": "2026-10-10T00:00Z"}, "candidates": []}',
}


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_bodies_get_4xx(served, payload):
    """Hand-made bodies a generator rarely reaches (deep nesting, huge numbers, NaN, bad UTF-8), on both POST
    endpoints, the admin one with and without the token; the live policy stays."""
    for path, auth in (("/v1/decide", {}), ("/v1/admin/policy", {}), ("/v1/admin/policy", AUTH)):
        resp = served.http.post(path, content=payload, headers={"content-type": "application/json", **auth})
        _acceptable(resp)
        assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text[:200])
    assert served.http.get("/v1/policy").json()["version"] == parse_policy(policy_doc()).version


def _with(path: str, value) -> dict:
    """The baseline policy document with one field replaced, e.g. `defaults.2.caps.0.window`."""
    doc = policy_doc("edited")
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = value
    return doc


BAD_POLICIES = {
    "window-overflow": ("defaults.2.caps.0.window", "1e300s"),
    "window-infinite": ("defaults.2.caps.0.window", "infh"),
    "min-gap-overflow": ("defaults.2.min_gap", "1e300s"),
    "window-negative": ("defaults.2.caps.0.window", "-1h"),
    "window-zero": ("defaults.2.caps.0.window", "0s"),
    "window-not-a-feature-window": ("defaults.2.caps.0.window", "5m"),
    "time-zone-unknown": ("time_zone", "Mars/Olympus"),
}


def test_admin_rejects_a_calendar_cap_in_a_zone_the_features_do_not_count(served):
    """The features count this week in UTC (`features.calendar_time_zone`): a week in Tokyo has no count, so the
    policy is refused naming the cap's window, and the old policy stays."""
    before = served.app.state.serving.policy
    doc = _with("defaults.2.caps.0.window", "week")
    try:
        resp = served.http.post("/v1/admin/policy", json={**doc, "time_zone": "Asia/Tokyo"}, headers=AUTH)
        assert resp.status_code == 422, resp.text
        assert "defaults.2.caps.0.window: 'week' in Asia/Tokyo" in resp.json()["detail"], resp.json()["detail"]
        assert served.app.state.serving.policy is before
        resp = served.http.post("/v1/admin/policy", json=doc, headers=AUTH)  # the same cap in UTC is served
        assert resp.status_code == 200, resp.text
    finally:
        served.app.state.serving.policy = before


@pytest.mark.parametrize(("field_path", "value"), BAD_POLICIES.values(), ids=BAD_POLICIES.keys())
def test_admin_rejects_policies_serving_cannot_use(served, field_path, value):
    """Well-formed documents with a duration out of range, non-positive, or on a window the features do not count:
    422 naming the field (never a 5xx, never accepted only to fail every decision open), the old policy stays."""
    before = served.app.state.serving.policy
    try:
        resp = served.http.post("/v1/admin/policy", json=_with(field_path, value), headers=AUTH)
        _acceptable(resp)
        assert resp.status_code == 422, resp.text
        assert field_path in resp.json()["detail"], resp.json()["detail"]
        assert served.app.state.serving.policy is before
    finally:
        served.app.state.serving.policy = before
    got = served.http.post("/v1/decide", json=body()).json()
    assert got["degraded"] is False and got["policy_version"] == before.version, got


def test_the_fuzz_run_reached_the_interesting_paths(served):
    """Guards the fuzzer's reach, so that a schema change cannot quietly turn it into a no-op: decide got both
    accepted and rejected bodies, the admin endpoint refused calls without the token, and some fuzzed policy
    documents passed validation and went live (and were put back)."""
    if not served.seen:
        pytest.skip("runs after test_fuzzed_requests_never_5xx in the same session")
    print("\nfuzzed calls (operation, status): count")
    for (op, status), n in sorted(served.seen.items()):
        print(f"  {op} {status}: {n}")
    assert served.seen[("POST /v1/decide", 200)] >= 10 and served.seen[("POST /v1/decide", 422)] >= 10
    assert served.seen[("POST /v1/admin/policy (no token)", 401)] >= 10
    assert served.seen[("POST /v1/admin/policy (token)", 422)] >= 10
    assert served.accepted, "no fuzzed policy document was ever accepted by the admin endpoint"
