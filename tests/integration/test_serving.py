"""The decision API over a real Feast store: decisions from materialized counts, fail-open on a stalled store,
4xx for malformed bodies, and atomic policy hot reload under load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from fastapi.testclient import TestClient

from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.reader import UserState
from freqcap.adapters.feast.store import open_store
from freqcap.api.app import create_app
from freqcap.config import load_settings
from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.engine import Candidate, EntityState, decide
from tests.bruteforce import WINDOW_SECONDS, calendar_counts, tier_features
from tests.integration.test_feast_online import T1, _run_snapshot, _settings, random_events
from tests.privacy import pseudonym_of

TOKEN = "s3cret-serving-admin-token-for-tests"
ADS = [f"ad{i}" for i in range(12)]
CAMP_OF = {a: f"c{int(a[2:]) // 3}" for a in ADS}
ADV_OF = {c: f"v{int(c[1:]) // 2}" for c in set(CAMP_OF.values())}


def policy_doc(version: str = "p1") -> dict:
    return {
        "version": version,
        "created_at": "2026-10-01T00:00:00Z",
        "penalty": {"onset": 1.0, "at_cap": 0.5, "floor": 0.05},
        "defaults": [
            {"level": "advertiser", "caps": [{"window": "28d", "max": 12}]},
            {"level": "campaign", "caps": [{"window": "24h", "max": 6}, {"window": "7d", "max": 9}]},
            {"level": "ad", "caps": [{"window": "1h", "max": 1}, {"window": "7d", "max": 2}], "min_gap": "30m"},
        ],
        "rules": [
            {
                "match": {"signal_tier": "converter"},
                "level": "ad",
                "caps": [{"window": "28d", "max": 3}],
                "mode": "hard",
                "stop_after_conversion": True,
            }
        ],
    }


def write_policy(tmp_path, version: str = "p1"):
    path = tmp_path / f"policy-{version}.yaml"
    path.write_text(yaml.safe_dump(policy_doc(version)))
    return path


def candidates(ads=ADS) -> list[dict]:
    return [{"ad_id": a, "campaign_id": CAMP_OF[a], "advertiser_id": ADV_OF[CAMP_OF[a]]} for a in ads]


def body(user: str = "u1", ads=ADS) -> dict:
    return {"user_id": user, "context": {"format": "feed", "ts": T1.isoformat()}, "candidates": candidates(ads)}


def _binding(d):
    b = d.binding
    return None if b is None else {"level": b.level, "window": b.window, "cap": b.cap, "count": b.count}


def _brute_force_state(settings, events, user):
    """audience, signal tier and per-entity state of `user` at T1, computed loop by loop from the events."""
    states = {}
    for level in ("advertiser", "campaign", "ad"):
        feats = tier_features(events, T1, level, settings.features.tier(level).half_life_seconds)
        for (u, entity), f in feats.items():
            if u != user:
                continue
            counts = {sec: int(f.get(f"imp_{label}", 0)) for label, sec in WINDOW_SECONDS.items()}
            states[(level, entity)] = EntityState(counts, f.get("last_imp_ts"), int(f.get("conv_28d", 0)))
    mine = [f for (u, _), f in tier_features(events, T1, "advertiser", 1.0).items() if u == user]
    if any(f.get("conv_28d", 0) for f in mine):
        tier = "converter"
    elif any(f.get("clk_28d", 0) for f in mine):
        tier = "engaged"
    else:
        tier = "impression_only"
    return "unknown", tier, states


@pytest.mark.parametrize(
    "kind",
    [
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis_cluster", marks=pytest.mark.redis_cluster),
    ],
)
def test_decisions_use_materialized_counts(tmp_path, kind, request):
    redis = None
    if kind == "redis":
        redis = request.getfixturevalue("redis_connection_string")
    elif kind == "redis_cluster":
        redis = request.getfixturevalue("redis_cluster").connection_string
    settings = _settings(tmp_path, kind, redis)
    events_dir = tmp_path / "events"
    old = random_events(1, 250, T1 - timedelta(days=12), T1 - timedelta(days=8, seconds=1))
    recent = random_events(2, 400, T1 - timedelta(days=1), T1 + timedelta(hours=1), users=range(7))
    for i, part in enumerate([old, recent]):
        write_events(part, events_dir / f"part-{i}.parquet")
    events = [row for part in (old, recent) for row in part.to_pylist()]
    repo = tmp_path / "feast"
    writer = open_store(settings, repo)
    _run_snapshot(settings, tmp_path, events_dir, T1, writer, repo)
    if kind != "sqlite":
        request.addfinalizer(writer.teardown)  # this test's keys out of the shared Redis / cluster
    pseudonym = pseudonym_of(settings)
    policy_path = write_policy(tmp_path)
    policy = parse_policy(policy_path.read_text())
    # Generous budgets: this test is about the numbers, not the timing (a loaded box must not shed it as overload).
    app = create_app(
        settings, policy_path=policy_path, repo_dir=repo, admin_token=TOKEN, budget_ms=5000, admission_ms=1000
    )
    bound = tiers = 0
    seen_tiers, binding_levels = set(), set()
    reader = None
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        # The readers serving picks for the store: on Redis (one node or a cluster) the lookups run on the event loop.
        serving = app.state.serving
        assert (type(serving.reader).__name__, type(serving.async_reader).__name__) == {
            "sqlite": ("SqliteFeatureReader", "NoneType"),
            "redis": ("RedisFeatureReader", "AsyncRedisReader"),
            "redis_cluster": ("RedisClusterFeatureReader", "AsyncClusterReader"),
        }[kind]
        for user in [f"u{i}" for i in range(15)] + ["nobody"]:
            resp = client.post("/v1/decide", json=body(user))
            assert resp.status_code == 200, resp.text
            got = resp.json()
            assert got["degraded"] is False and got["policy_version"] == "p1", got["degraded_reason"]
            audience, tier, states = _brute_force_state(settings, events, user)
            seen_tiers.add(tier)
            cands = [Candidate(**c) for c in candidates()]
            want = decide(policy, audience, tier, cands, states, T1)
            assert [d["ad_id"] for d in got["decisions"]] == ADS
            for have, exp in zip(got["decisions"], want, strict=True):
                assert have["eligible"] == exp.eligible, (user, have, exp)
                assert have["penalty"] == pytest.approx(exp.penalty), (user, have, exp)
                assert have["distance_to_cap"] == exp.distance_to_cap, (user, have, exp)
                assert have["binding"] == _binding(exp), (user, have, exp)
                bound += have["penalty"] < 1.0
                if have["binding"]:
                    binding_levels.add((have["binding"]["level"], have["binding"]["window"]))
            # The state the reader built equals the brute-force state, window by window (missing pairs = zeros).
            reader = app.state.serving.reader
            read = reader.read(pseudonym(user), cands, at=T1)  # the store knows the user by pseudonym
            assert (read.audience, read.signal_tier) == (audience, tier), user
            for (level, entity), st in read.states.items():
                exp = states.get((level, entity), EntityState({s: 0 for s in WINDOW_SECONDS.values()}))
                # calendar windows (UTC) at T1: impressions since the start of T1's day, week, month
                cal = calendar_counts(events, T1, level).get((user, entity), {})
                want_counts = {**exp.counts, **{(p, "UTC"): cal.get(p, 0) for p in ("day", "week", "month")}}
                assert st.counts == want_counts, (user, level, entity, st, exp)
                assert st.last_imp_ts == exp.last_imp_ts and st.conversions == exp.conversions, (user, level, entity)
        metrics = client.get("/metrics").text
    tiers = len(seen_tiers)
    assert len(binding_levels) >= 3, f"the fixture must make different caps bind: {binding_levels}"
    assert bound > 10, "the fixture must make some caps bind"
    assert tiers >= 2, f"the fixture must exercise more than one signal tier: {seen_tiers}"
    assert "freqcap_decide_requests_total 16" in metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.redis
def test_fail_open_when_the_store_stalls(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server binary not found (required under CI)")
        pytest.skip("redis-server binary not found")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stopped = False
    try:
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, socket_connect_timeout=0.2).ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        settings = _settings(tmp_path, "redis", f"127.0.0.1:{port}")
        events_dir = tmp_path / "events"
        write_events(random_events(5, 300, T1 - timedelta(days=3), T1), events_dir / "part-0.parquet")
        repo = tmp_path / "feast"
        _run_snapshot(settings, tmp_path, events_dir, T1, open_store(settings, repo), repo)
        budget_ms = 10.0
        app = create_app(settings, policy_path=write_policy(tmp_path), repo_dir=repo, admin_token=TOKEN)
        with TestClient(app) as client:
            try:
                # The live store answers within the budget (the first reads warm Feast's registry cache).
                warm = [client.post("/v1/decide", json=body()) for _ in range(10)]
                assert all(r.status_code == 200 for r in warm)
                assert any(r.json()["degraded"] is False for r in warm), [r.json()["degraded_reason"] for r in warm]
                os.kill(proc.pid, signal.SIGSTOP)
                stopped = True
                for _ in range(20):
                    started = time.perf_counter()
                    resp = client.post("/v1/decide", json=body())
                    elapsed = time.perf_counter() - started
                    assert resp.status_code == 200
                    got = resp.json()
                    assert got["degraded"] is True and got["degraded_reason"] == "timeout"
                    assert all(d["eligible"] and d["penalty"] == 1.0 for d in got["decisions"])
                    assert elapsed < (budget_ms + 50) / 1000, elapsed
                metrics = client.get("/metrics").text
                line = next(
                    x for x in metrics.splitlines() if x.startswith('freqcap_decide_fail_open_total{reason="timeout"}')
                )
                assert int(line.split()[-1]) >= 20, line
            finally:
                if stopped:
                    os.kill(proc.pid, signal.SIGCONT)
    finally:
        if stopped:
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)


class FakeReader:
    """In-memory reader: the API's own behaviour, without a store."""

    def __init__(self, fail: Exception | None = None, garbage: bool = False):
        self.fail = fail
        self.garbage = garbage

    def read(self, user_id, cands):
        if self.fail is not None:
            raise self.fail
        if self.garbage:
            return UserState("unknown", "impression_only", {("ad", "ad0"): EntityState(counts={})})
        return UserState("unknown", "impression_only", {("ad", "ad0"): EntityState({3600: 5, 604800: 5})})


def _client(tmp_path, **kw) -> TestClient:
    """The app over an in-memory reader. Generous budgets: these tests are about answers, not timing, and a
    loaded CI box must not turn a decision into a `timeout` or `overload` (the timing tests set their own)."""
    kw = {"budget_ms": 5000.0, "admission_ms": 1000.0, **kw}
    return TestClient(create_app(load_settings(), policy_path=write_policy(tmp_path), admin_token=TOKEN, **kw))


@pytest.mark.parametrize(
    "payload",
    [
        {**body(), "user_id": ""},  # no id is said by leaving it out (the anonymous decision), not by ""
        {**body(), "candidates": []},
        {**body(), "candidates": candidates(ADS * 42)[:501]},
        {**body(), "user_id": ["u1"]},
        {**body(), "context": {"format": "feed", "ts": "yesterday"}},
        {**body(), "candidates": [{"ad_id": "a", "campaign_id": "c"}]},
        {**body(), "candidates": "ad1"},
        {**body(), "unexpected": 1},
        "not json",
    ],
)
def test_malformed_bodies_get_4xx(tmp_path, payload):
    with _client(tmp_path, reader=FakeReader()) as client:
        if isinstance(payload, str):
            resp = client.post("/v1/decide", content=payload, headers={"content-type": "application/json"})
        else:
            resp = client.post("/v1/decide", json=payload)
        assert 400 <= resp.status_code < 500, resp.text
        assert resp.json()["detail"]


def test_an_empty_user_id_gets_a_422_naming_the_field(tmp_path):
    """An absent or null `user_id` is an id-less request (test_serving_anonymous.py); an empty one is refused."""
    with _client(tmp_path, reader=FakeReader()) as client:
        for payload in ({**body(), "user_id": ""}, {**body(), "user_id": 7}):
            resp = client.post("/v1/decide", json=payload)
            assert resp.status_code == 422, resp.text
            errors = resp.json()["detail"]
            assert {tuple(e["loc"][:2]) for e in errors} == {("body", "user_id")}, errors
            assert errors[0]["type"] in ("string_too_short", "string_type") and errors[0]["msg"], errors


def test_the_decide_operation_in_the_openapi_schema(tmp_path):
    """The request schema of `POST /v1/decide` is the pydantic model's: `context` and `candidates` required;
    `user_id` optional (changed deliberately: id-less requests get the anonymous decision), a non-empty string or
    null; `context.ts` optional (changed deliberately: it was required), `context.format` required."""
    doc = create_app(load_settings(), policy_path=None, admin_token=TOKEN).openapi()
    op = doc["paths"]["/v1/decide"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/DecideRequest"}
    schemas = doc["components"]["schemas"]
    assert schemas["DecideRequest"]["required"] == ["context", "candidates"]
    user_id = schemas["DecideRequest"]["properties"]["user_id"]
    assert user_id["anyOf"] == [{"type": "string", "minLength": 1}, {"type": "null"}]
    assert schemas["DecideRequest"]["additionalProperties"] is False
    context = schemas["DecideContext"]
    assert context["required"] == ["format"]
    assert context["properties"]["ts"]["anyOf"] == [{"type": "string", "format": "date-time"}, {"type": "null"}]
    assert set(op["responses"]) == {"200", "422"}


class RecentImpressionReader:
    """ad0 was shown 10 minutes ago (by the wall clock): under the policy's 30m `min_gap` it binds only when the
    request time is the server's clock, not two hours later."""

    def read(self, user_id, cands):
        shown = datetime.now(UTC) - timedelta(minutes=10)
        return UserState("unknown", "impression_only", {("ad", "ad0"): EntityState({3600: 0, 604800: 0}, shown)})


def test_context_ts_is_optional_and_defaults_to_the_server_clock(tmp_path):
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    with _client(tmp_path, reader=RecentImpressionReader()) as client:
        answers = {}
        for name, context in (
            ("absent", {"format": "feed"}),
            ("null", {"format": "feed", "ts": None}),
            ("later", {"format": "feed", "ts": later}),
        ):
            resp = client.post("/v1/decide", json={**body(), "context": context})
            assert resp.status_code == 200, resp.text
            got = resp.json()
            assert got["degraded"] is False
            answers[name] = got["decisions"][0]
        for name in ("absent", "null"):
            assert answers[name]["binding"] == {"level": "ad", "window": "30m", "cap": None, "count": 1}, answers
            assert "min_gap" in answers[name]["reason"] and answers[name]["penalty"] < 1.0
        assert answers["later"]["binding"]["window"] == "1h", answers  # the recency gap has passed two hours later
        assert answers["later"]["penalty"] > answers["absent"]["penalty"], answers


def test_500_candidates_is_fine_and_errors_fail_open(tmp_path):
    with _client(tmp_path, reader=FakeReader()) as client:
        resp = client.post("/v1/decide", json={**body(), "candidates": candidates(ADS * 42)[:500]})
        assert resp.status_code == 200 and len(resp.json()["decisions"]) == 500
        first = resp.json()["decisions"][0]
        assert first["binding"] == {"level": "ad", "window": "1h", "cap": 1, "count": 5}
    with _client(tmp_path, reader=FakeReader(fail=ConnectionError("down"))) as client:
        got = client.post("/v1/decide", json=body()).json()
        assert got["degraded"] and got["degraded_reason"] == "store_error: ConnectionError"
        assert all(d["eligible"] and d["penalty"] == 1.0 for d in got["decisions"])
        assert 'freqcap_decide_fail_open_total{reason="store_error"} 1' in client.get("/metrics").text
    with _client(tmp_path, reader=FakeReader(garbage=True)) as client:  # the engine raises KeyError
        resp = client.post("/v1/decide", json=body())
        assert resp.status_code == 200
        assert resp.json()["degraded_reason"] == "internal_error: KeyError"


def test_bodies_the_fast_path_leaves_to_fastapi_answer_alike(tmp_path):
    """The hot path decodes with msgspec and hands what it does not take to FastAPI (pydantic): a numeric `ts`
    (a form only pydantic reads) gets the same decisions as the same instant in RFC 3339; a non-JSON content type
    gets FastAPI's 422; a body over the size limit a 413 with a message, before it is parsed."""
    with _client(tmp_path, reader=FakeReader()) as client:
        iso = client.post("/v1/decide", json=body())
        epoch = client.post("/v1/decide", json={**body(), "context": {"format": "feed", "ts": T1.timestamp()}})
        assert iso.status_code == epoch.status_code == 200, epoch.text
        assert iso.json() == epoch.json() and iso.json()["degraded"] is False
        raw = json.dumps(body())
        typed = client.post("/v1/decide", content=raw, headers={"content-type": "application/json; charset=utf-8"})
        assert typed.json() == iso.json()
        plain = client.post("/v1/decide", content=raw, headers={"content-type": "text/plain"})
        assert plain.status_code == 422 and plain.json()["detail"], plain.text
        huge = {**body(), "padding": "x" * (2 << 20)}
        resp = client.post("/v1/decide", json=huge)
        assert resp.status_code == 413 and "bytes" in resp.json()["detail"], resp.text[:200]


def test_a_crash_outside_the_decide_guard_still_fails_open(tmp_path):
    """FAKE, labelled: the counters raise once (a failure that cannot be produced for real); the ad server still
    gets 200, every candidate eligible, reason `internal_error`, and the request is counted."""
    with _client(tmp_path, reader=FakeReader()) as client:
        metrics = client.app.state.serving.metrics
        real, calls = metrics.observe, []

        def broken_once(*args, **kw):
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError("counter broke")
            return real(*args, **kw)

        metrics.observe = broken_once
        resp = client.post("/v1/decide", json=body())
        assert resp.status_code == 200, resp.text
        got = resp.json()
        assert got["degraded_reason"] == "internal_error: RuntimeError"
        assert [d["ad_id"] for d in got["decisions"]] == ADS and all(d["penalty"] == 1.0 for d in got["decisions"])
        assert 'freqcap_decide_fail_open_total{reason="internal_error"} 1' in client.get("/metrics").text


def test_admin_token_required_unless_dev(tmp_path):
    with pytest.raises(ValueError):
        create_app(load_settings(), policy_path=write_policy(tmp_path), reader=FakeReader())
    create_app(load_settings(), policy_path=write_policy(tmp_path), reader=FakeReader(), dev=True)


def test_policy_hot_reload(tmp_path):
    with _client(tmp_path, reader=FakeReader()) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/v1/policy").json()["version"] == "p1"
        # Bad token / no token: 401, nothing changes.
        assert (
            client.post("/v1/admin/policy", json=policy_doc("p2"), headers={"Authorization": "Bearer x"}).status_code
            == 401
        )
        assert client.post("/v1/admin/policy", json=policy_doc("p2")).status_code == 401
        # Valid JSON object: swapped.
        resp = client.post("/v1/admin/policy", json=policy_doc("p2"), headers=auth)
        assert resp.status_code == 200 and resp.json()["policy_version"] == "p2"
        assert client.get("/v1/policy").json()["version"] == "p2"
        # Valid YAML text: swapped.
        resp = client.post("/v1/admin/policy", content=yaml.safe_dump(policy_doc("p3")), headers=auth)
        assert resp.status_code == 200 and resp.json()["policy_version"] == "p3"
        # Invalid: 422 naming the field, the old policy stays.
        bad = policy_doc("p4")
        bad["defaults"][1]["caps"][0]["max"] = 0
        resp = client.post("/v1/admin/policy", json=bad, headers=auth)
        assert resp.status_code == 422
        assert "defaults.1.caps.0.max" in resp.json()["detail"]
        assert client.get("/v1/policy").json()["version"] == "p3"
        assert client.post("/v1/decide", json=body()).json()["policy_version"] == "p3"
        assert client.post("/v1/admin/policy", content="a: [", headers=auth).status_code == 422

        # Swaps while requests run: every request answers 200 with one of the swapped versions.
        statuses, versions = [], set()

        def load():
            for _ in range(200):
                r = client.post("/v1/decide", json=body(ads=ADS[:3]))
                statuses.append(r.status_code)
                versions.add(r.json().get("policy_version"))

        thread = threading.Thread(target=load)
        thread.start()
        i = 0
        while thread.is_alive():
            i += 1
            assert client.post("/v1/admin/policy", json=policy_doc(f"s{i}"), headers=auth).status_code == 200
        thread.join()
        assert len(statuses) == 200 and set(statuses) == {200}
        assert i > 1 and len(versions) > 1, (i, versions)
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200
