"""The live-policy store (freqcap.adapters.policy_store) with a real file system and a real Redis, and serving's
sync with it (freqcap.api.policy_sync) in a real app: round trips, atomic replacement, corrupt or inconsistent
entries ignored (logged once, counted) while serving keeps its last good policy, an unreachable store never
failing a decision, and monitoring reading the same live policy.

The oracles are independent of the code under test: the file's bytes parsed with `json`, the Redis hash read with
a plain redis-py client, and what the HTTP API answers.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime

import pytest
import redis
from fastapi.testclient import TestClient

from freqcap.adapters.feast.reader import UserState
from freqcap.adapters.policy_store import (
    FilePolicyStore,
    PolicyStoreUnavailable,
    RedisPolicyStore,
    StoredPolicyInvalid,
    policy_from_stored,
    policy_store_from_settings,
)
from freqcap.api.app import create_app
from freqcap.config import load_settings
from tests.integration.serving_support import free_port

REFRESH = 0.1


class NoFeatures:
    """Reader of a user nobody has seen: these tests exercise the policy, never the features."""

    def read(self, user_id, candidates):
        return UserState("unknown", "impression_only", {})


def doc(version: str, ad_cap: int = 4, window: str = "7d") -> dict:
    return {
        "version": version,
        "created_at": "2026-05-01T00:00:00Z",
        "defaults": [
            {"level": "ad", "caps": [{"window": window, "max": ad_cap}]},
            {"level": "campaign", "caps": [{"window": "28d", "max": 8}]},
        ],
    }


def settings_for(tmp_path, store: str, **extra: str):
    env = {
        "FREQCAP__DATA_DIR": str(tmp_path / "data"),
        "FREQCAP__SERVING__POLICY_STORE": store,
        "FREQCAP__SERVING__POLICY_REFRESH": str(REFRESH),
        "FREQCAP__SERVING__DECISION_LOG_SAMPLE_RATE": "0",
        **extra,
    }
    return load_settings(environ=env)


def metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def redis_key(redis_connection_string):
    """A key of this test's own on the shared Redis, deleted afterwards (never a flush)."""
    host, port = redis_connection_string.split(":")
    client = redis.Redis(host=host, port=int(port))
    key = f"freqcap-test:{uuid.uuid4().hex}:policy"
    yield client, key
    client.delete(key)


# ------------------------------------------------------------------------------------------------ the file store


def test_file_store_round_trip_and_revisions(tmp_path):
    path = tmp_path / "serving" / "live_policy.json"
    store = FilePolicyStore(path)
    assert store.revision() is None and store.load() is None
    r1 = store.save(doc("p1"))
    on_disk = json.loads(path.read_text())  # the oracle: the file itself
    assert on_disk["version"] == "p1" and on_disk["document"] == doc("p1")
    datetime.fromisoformat(on_disk["pushed_at"])
    stored = store.load()
    assert stored.document == doc("p1") and stored.version == "p1" and stored.revision == r1 == store.revision()
    assert policy_from_stored(stored).version == "p1"
    r2 = store.save(doc("p2"))
    assert r2 != r1 and store.revision() == r2 and store.load().version == "p2"
    assert [p.name for p in path.parent.iterdir()] == ["live_policy.json"], "a temporary file was left behind"
    with pytest.raises(ValueError):
        store.save({"defaults": []})  # no version: refused before anything is written
    assert store.load().version == "p2"


def test_file_store_writes_atomically(tmp_path):
    """Readers polling the file while it is replaced 300 times only ever see a whole entry."""
    path = tmp_path / "live_policy.json"
    store = FilePolicyStore(path)
    big = [doc(f"v{i}", ad_cap=1 + i % 50) | {"notes": "x" * 200_000} for i in range(300)]
    store.save(big[0])
    torn, seen, done = [], set(), threading.Event()

    def read():
        while not done.is_set():
            raw = path.read_bytes()
            try:
                entry = json.loads(raw)
            except ValueError:
                torn.append(len(raw))
                continue
            assert entry["document"]["version"] == entry["version"]
            seen.add(entry["version"])

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for d in big[1:]:
        store.save(d)
    done.set()
    for t in readers:
        t.join()
    assert torn == [], f"{len(torn)} reads saw a partial file"
    assert len(seen) > 1, "the readers never overlapped a write"
    assert json.loads(path.read_text())["version"] == "v299"


def test_file_store_refuses_corrupt_and_inconsistent_entries(tmp_path):
    path = tmp_path / "live_policy.json"
    store = FilePolicyStore(path)
    path.write_text('{"version": "p1", "document": {"vers')  # a torn write by something else
    with pytest.raises(StoredPolicyInvalid):
        store.load()
    path.write_text(json.dumps({"version": "p9", "pushed_at": None, "document": doc("p1")}))
    with pytest.raises(StoredPolicyInvalid, match="p9"):
        policy_from_stored(store.load())  # the entry says p9, the document is p1
    bad = doc("p3")
    bad["defaults"][0]["caps"][0]["max"] = 0
    path.write_text(json.dumps({"version": "p3", "document": bad}))
    with pytest.raises(StoredPolicyInvalid, match=r"defaults\.0\.caps\.0\.max"):
        policy_from_stored(store.load())


# ----------------------------------------------------------------------------------------------- the Redis store


@pytest.mark.redis
def test_redis_store_round_trip(redis_key):
    client, key = redis_key
    store = RedisPolicyStore(client, key)
    assert store.revision() is None and store.load() is None
    r1 = store.save(doc("p1"))
    raw = client.hgetall(key)  # the oracle: the hash itself
    assert set(raw) == {b"version", b"document", b"pushed_at"}
    assert raw[b"version"] == b"p1" and json.loads(raw[b"document"]) == doc("p1")
    datetime.fromisoformat(raw[b"pushed_at"].decode())
    stored = store.load()
    assert (stored.document, stored.version, stored.revision) == (doc("p1"), "p1", r1)
    assert store.revision() == r1
    r2 = store.save(doc("p2"))
    assert r2 != r1 and store.load().version == "p2"


@pytest.mark.redis
def test_redis_store_refuses_corrupt_and_mismatched_entries(redis_key):
    client, key = redis_key
    store = RedisPolicyStore(client, key)
    client.hset(key, mapping={"version": "p1", "document": "{not json", "pushed_at": "2026-01-01T00:00:00+00:00"})
    with pytest.raises(StoredPolicyInvalid):
        store.load()
    client.hset(key, mapping={"version": "p9", "document": json.dumps(doc("p1"))})
    with pytest.raises(StoredPolicyInvalid, match="p9"):
        policy_from_stored(store.load())
    client.hdel(key, "document")
    with pytest.raises(StoredPolicyInvalid):
        store.load()


def test_redis_store_unreachable_is_typed():
    store = RedisPolicyStore(redis.Redis(port=free_port(), socket_timeout=0.5, socket_connect_timeout=0.5), "k")
    with pytest.raises(PolicyStoreUnavailable):
        store.revision()
    with pytest.raises(PolicyStoreUnavailable):
        store.save(doc("p1"))


@pytest.mark.redis_cluster
def test_redis_store_on_the_online_store_cluster(tmp_path, redis_cluster):
    """`policy_store: redis` with the online store on a Redis Cluster: the hash lives on the cluster (whichever
    master serves its slot); an unreachable cluster is the same typed error, and opening the store does no I/O."""
    key = f"freqcap-test:{uuid.uuid4().hex}:policy"
    settings = settings_for(
        tmp_path,
        "redis",
        FREQCAP__FEAST__ONLINE__KIND="redis_cluster",
        FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING=redis_cluster.connection_string,
        FREQCAP__SERVING__POLICY_REDIS_KEY=key,
    )
    store = policy_store_from_settings(settings)
    assert store.revision() is None
    r1 = store.save(doc("p1"))
    oracle = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    try:
        assert json.loads(oracle.hget(key, "document")) == doc("p1")
        assert store.load().version == "p1" and store.revision() == r1
    finally:
        oracle.delete(key)
        oracle.close()
    nowhere = settings_for(
        tmp_path,
        "redis",
        FREQCAP__FEAST__ONLINE__KIND="redis_cluster",
        FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING=f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}",
    )
    unreachable = policy_store_from_settings(nowhere)  # no I/O yet
    with pytest.raises(PolicyStoreUnavailable):
        unreachable.revision()


# -------------------------------------------------------------------------------------- serving with a store


def _app(settings, policy_path=None):
    return create_app(settings, policy_path=policy_path, reader=NoFeatures(), dev=True)


def _version(client) -> str | None:
    resp = client.get("/v1/policy")
    return resp.json()["version"] if resp.status_code == 200 else None


def test_serving_syncs_from_the_file_store_and_ignores_a_corrupt_entry(tmp_path, caplog):
    settings = settings_for(tmp_path, "file")
    path = tmp_path / "data" / "serving" / "live_policy.json"
    writer = FilePolicyStore(path)  # another replica, in effect
    writer.save(doc("p1"))
    policy_file = tmp_path / "file.json"
    policy_file.write_text(json.dumps(doc("from-file")))
    with TestClient(_app(settings, policy_file)) as client:
        assert _version(client) == "p1", "the store's policy wins over the policy file at start"
        writer.save(doc("p2"))
        assert wait_for(lambda: _version(client) == "p2")
        path.write_text("{corrupt")
        time.sleep(10 * REFRESH)
        assert _version(client) == "p2"
        assert client.post("/v1/decide", json=_body()).json()["policy_version"] == "p2"
        metrics = client.get("/metrics").text
        assert metric(metrics, 'freqcap_policy_sync_errors_total{kind="invalid"}') == 1, "logged and counted once"
        assert 'freqcap_policy_info{version="p2",source="store",store="file"} 1' in metrics
        writer.save(doc("p3", window="3d"))  # a window the features do not have: refused like a push would be
        time.sleep(10 * REFRESH)
        assert _version(client) == "p2"
        writer.save(doc("p4"))
        assert wait_for(lambda: _version(client) == "p4")
        metrics = client.get("/metrics").text
        assert metric(metrics, 'freqcap_policy_sync_errors_total{kind="invalid"}') == 2
        assert metric(metrics, 'freqcap_policy_reloads_total{result="synced"}') == 3  # p1 at start, p2, p4
    assert sum("ignoring the stored policy" in r.getMessage() for r in caplog.records) == 2


def test_a_push_is_saved_to_the_store_and_survives_a_restart(tmp_path):
    settings = settings_for(tmp_path, "file")
    with TestClient(_app(settings)) as client:
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/admin/policy", json=doc("pushed-1")).status_code == 200
        assert _version(client) == "pushed-1"
        time.sleep(5 * REFRESH)
        metrics = client.get("/metrics").text
        assert metric(metrics, 'freqcap_policy_reloads_total{result="synced"}') == 0, "its own save is not reloaded"
    on_disk = json.loads((tmp_path / "data" / "serving" / "live_policy.json").read_text())
    assert on_disk["version"] == "pushed-1" and on_disk["document"]["version"] == "pushed-1"
    with TestClient(_app(settings)) as client:
        assert _version(client) == "pushed-1" and client.get("/readyz").status_code == 200


def test_a_curve_shaped_policy_is_served_by_its_table_and_survives_a_restart(tmp_path):
    """A cap's multiplier table (the curve-shaped penalty) through the admin push, `/v1/decide` and the store."""
    settings = settings_for(tmp_path, "file")
    shaped = doc("curve-1")
    shaped["defaults"][0]["caps"][0]["multipliers"] = [0.6, 0.3]  # a user never shown the ad: count 0 → 0.6
    with TestClient(_app(settings)) as client:
        bad = doc("curve-bad")
        bad["defaults"][0]["caps"][0]["multipliers"] = [0.3, 0.6]
        resp = client.post("/v1/admin/policy", json=bad)
        assert resp.status_code == 422 and "defaults.0.caps.0.multipliers" in resp.text, resp.text
        assert client.post("/v1/admin/policy", json=shaped).status_code == 200
        got = client.post("/v1/decide", json=_body()).json()["decisions"][0]
        assert got["penalty"] == 0.6 and got["eligible"] is True  # the generic shape would give 1 at 0 of 4
    with TestClient(_app(settings)) as client:
        policy = client.get("/v1/policy").json()
        assert policy["version"] == "curve-1"
        assert policy["policy"]["defaults"][0]["caps"][0]["multipliers"] == [0.6, 0.3]
        assert client.post("/v1/decide", json=_body()).json()["decisions"][0]["penalty"] == 0.6


def test_an_unreachable_store_never_fails_serving(tmp_path):
    settings = settings_for(tmp_path, "redis", FREQCAP__SERVING__POLICY_REDIS_URL=f"127.0.0.1:{free_port()}")
    policy_file = tmp_path / "file.json"
    policy_file.write_text(json.dumps(doc("from-file")))
    with TestClient(_app(settings, policy_file)) as client:
        assert _version(client) == "from-file" and client.get("/readyz").status_code == 200
        resp = client.post("/v1/decide", json=_body())
        assert resp.status_code == 200 and resp.json()["degraded"] is False
        # A push cannot reach the other replicas: refused (publish retries), the policy stays.
        resp = client.post("/v1/admin/policy", json=doc("p2"))
        assert resp.status_code == 503 and resp.json()["policy_version"] == "from-file"
        assert _version(client) == "from-file"
        time.sleep(5 * REFRESH)
        metrics = client.get("/metrics").text
        assert metric(metrics, 'freqcap_policy_sync_errors_total{kind="unavailable"}') >= 3
        assert 'source="file",store="redis"' in metrics


@pytest.mark.redis
def test_serving_ignores_a_redis_entry_whose_version_does_not_match(tmp_path, redis_key, redis_connection_string):
    client_r, key = redis_key
    settings = settings_for(
        tmp_path,
        "redis",
        FREQCAP__SERVING__POLICY_REDIS_URL=redis_connection_string,
        FREQCAP__SERVING__POLICY_REDIS_KEY=key,
    )
    with TestClient(_app(settings)) as client:
        assert client.post("/v1/admin/policy", json=doc("p1")).status_code == 200
        assert client_r.hget(key, "version") == b"p1"
        client_r.hset(key, mapping={"version": "p2", "document": json.dumps(doc("p1", ad_cap=9)), "pushed_at": "x"})
        time.sleep(10 * REFRESH)
        assert _version(client) == "p1"
        assert client.get("/v1/policy").json()["policy"]["defaults"][0]["caps"][0]["max"] == 4
        metrics = client.get("/metrics").text
        assert metric(metrics, 'freqcap_policy_sync_errors_total{kind="invalid"}') == 1


def test_monitoring_reads_the_live_policy_from_the_store(tmp_path):
    from freqcap.jobs.monitoring.common import live_policy

    settings = settings_for(tmp_path, "file")
    assert live_policy(settings)[0] is None
    policy_store_from_settings(settings).save(doc("live-7"))
    policy, source = live_policy(settings)
    assert policy.version == "live-7" and "file policy store" in source
    (tmp_path / "data" / "serving" / "live_policy.json").write_text("{corrupt")
    assert live_policy(settings)[0] is None  # nothing else configured: no policy, not a crash


def _body() -> dict:
    cands = [{"ad_id": "a1", "campaign_id": "c1", "advertiser_id": "v1"}]
    return {"user_id": "u1", "context": {"format": "feed", "ts": "2026-06-01T00:00:00Z"}, "candidates": cands}
