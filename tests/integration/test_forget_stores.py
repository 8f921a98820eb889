"""Forgetting users in the Redis stores: Feast's online store on one Redis and on a Redis Cluster, and the stream's
entries, dead letters, pair state, unpushed list and dedup marks. Real Redis; every key is this test's own (a unique
Feast project and stream prefix) and deleted afterwards. Keys are made with Feast's own `_redis_key`, not freqcap's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from freqcap.adapters.feast.forget import forget_online
from freqcap.adapters.stream.forget import forget_stream
from freqcap.adapters.stream.produce import produce
from freqcap.adapters.stream.state import _pack_keys, _unpack_keys, pack_pending, pair_state_key, unpack_pending
from freqcap.config import load_settings
from freqcap.domain.stream.buckets import PairCounts
from freqcap.domain.stream.messages import event_fields
from freqcap.domain.stream.partitions import dead_letter_name, state_base, stream_name
from tests.integration.stream_support import cleanup_redis, stream_settings

pytestmark = pytest.mark.redis
FORMS = {"u1", "u.k1.AAAAAAAAAAAAAAAAAAAAAA"}
# (values, forgotten?) — with traps: ids sharing bytes with a forgotten one, an ad named like the user.
ENTITIES = [
    ({"user_id": "u1", "ad_id": "a1"}, True),
    ({"user_id": "u1", "advertiser_id": "v1"}, True),
    ({"user_id": "u1"}, True),
    ({"user_id": "u.k1.AAAAAAAAAAAAAAAAAAAAAA", "campaign_id": "c1"}, True),
    ({"user_id": "u10", "ad_id": "a1"}, False),
    ({"user_id": "xu1", "ad_id": "a1"}, False),
    ({"user_id": "u2", "ad_id": "u1"}, False),
    ({"user_id": "u2"}, False),
]


def _key(project: str, values: dict[str, str]) -> bytes:
    names = sorted(values)
    entity = EntityKey(join_keys=names, entity_values=[Value(string_val=values[n]) for n in names])
    return _redis_key(project, entity, entity_key_serialization_version=3)


def _online_settings(tmp_path, kind: str, connection: str):
    project = f"t{uuid.uuid4().hex[:10]}"
    env = {
        "FREQCAP__DATA_DIR": str(tmp_path),
        "FREQCAP__FEAST__ONLINE__KIND": kind,
        "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": connection,
        "FREQCAP__FEAST__PROJECT": project,
    }
    return load_settings(environ=env), project


def _check_online(tmp_path, kind, connection, client):
    settings, project = _online_settings(tmp_path, kind, connection)
    written = {}
    for values, forgotten in ENTITIES:
        for proj in (project, "x" + project):  # a project whose name ends with this one's: never touched
            key = _key(proj, values)
            client.hset(key, mapping={b"_ts:user_ad": b"1", b"f": b"2"})
            written[key] = forgotten and proj == project
    try:
        result = forget_online(settings, tmp_path / "feast", FORMS)
        assert result.removed == sum(written.values())
        for key, forgotten in written.items():
            assert client.exists(key) == (0 if forgotten else 1), key
        assert forget_online(settings, tmp_path / "feast", FORMS).removed == 0  # idempotent
    finally:
        for key in written:
            client.delete(key)


def test_redis_online_store(tmp_path, redis_connection_string):
    host, port = redis_connection_string.split(":")
    _check_online(tmp_path, "redis", redis_connection_string, redis.Redis(host=host, port=int(port)))


@pytest.mark.redis_cluster
def test_redis_cluster_online_store(tmp_path, redis_cluster):
    first = redis_cluster.connection_string.split(",")[0].split(":")
    client = redis.RedisCluster(host=first[0], port=int(first[1]))
    try:
        _check_online(tmp_path, "redis_cluster", redis_cluster.connection_string, client)
    finally:
        client.close()


@pytest.mark.parametrize("partitions", [1, 3])
def test_stream_entries_state_and_dedup_marks(tmp_path, redis_connection_string, partitions):
    settings, _ = stream_settings(tmp_path, redis_connection_string, partitions=str(partitions))
    host, port = redis_connection_string.split(":")
    _check_stream(settings, redis.Redis(host=host, port=int(port)), partitions)


@pytest.mark.redis_cluster
def test_stream_on_a_redis_cluster(tmp_path, redis_cluster):
    settings, _ = stream_settings(
        tmp_path, redis_cluster.connection_string, "redis_cluster", partitions="3", redis_kind="redis_cluster"
    )
    from freqcap.adapters.stream.status import stream_redis_client

    client = stream_redis_client(settings.stream, socket_timeout=10.0)  # what the forget job uses
    try:
        _check_stream(settings, client, 3)
    finally:
        client.close()


def _check_stream(settings, client, partitions: int) -> None:
    cfg = settings.stream
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    users = ["u1", "u10", "u.k1.AAAAAAAAAAAAAAAAAAAAAA", "u2", "xu1"]
    rows = [
        {"event_id": f"e{i}", "event_type": "impression", "event_ts": t0 + timedelta(seconds=i),
         "user_id": users[i % len(users)], "advertiser_id": "v1", "campaign_id": "c1", "ad_id": "a1", "format": "feed"}
        for i in range(40)
    ]  # fmt: skip
    forgotten_events = {r["event_id"] for r in rows if r["user_id"] in FORMS}
    try:
        produce(client, cfg.stream_key, [event_fields(r) for r in rows], partitions=partitions)
        streams = [stream_name(cfg.stream_key, p, partitions) for p in range(partitions)]
        for name in streams:  # a consumer group with every entry read and pending (a worker mid-batch)
            client.xgroup_create(name, cfg.group, id="0", mkstream=True)
            client.xreadgroup(cfg.group, "c1", {name: ">"}, count=1000)
        dead = dead_letter_name(cfg.dead_letter_key, 0, partitions)
        client.xadd(dead, {**event_fields(rows[0]), "_reason": "late"})  # u1
        client.xadd(dead, {**event_fields(rows[3]), "_reason": "late"})  # u2
        base = state_base(cfg.state_prefix, 0)
        pairs = [(level, u, "x1") for level in ("ad", "campaign") for u in users]
        names = [pair_state_key(base, k).encode() for k in pairs]
        for name in names:
            client.set(name, b"state")
        client.set(f"{base}:unpushed", _pack_keys(names))
        # The pending log (online rows as the state): users whose ids hold ':' and each other's prefix too.
        logged = [(level, u, e) for level in ("ad", "advertiser") for u in [*users, "u1:x", "u"] for e in ("x1", "e:2")]
        states = {k: PairCounts({"i": {60 * (i + 1): i + 1}, "c": {}, "v": {}}, i) for i, k in enumerate(logged)}
        client.set(f"{base}:pending", pack_pending(base, states.items()))
        client.hset(f"{base}:seen:1", mapping={r["event_id"]: 1 for r in rows[:20]})
        client.hset(f"{base}:seen:2", mapping={r["event_id"]: 1 for r in rows[20:]})
        other_file_event = "from-the-files"  # an event of the user known only from the event files
        client.hset(f"{base}:seen:2", other_file_event, 1)

        result = forget_stream(client, cfg, FORMS, event_ids=[other_file_event])

        left = [
            fields for name in streams for _, fields in client.xrange(name)
        ]  # fmt: skip
        assert sorted(f[b"event_id"].decode() for f in left) == sorted(
            r["event_id"] for r in rows if r["user_id"] not in FORMS
        )
        assert result.stream_entries == len(forgotten_events)
        for name in streams:  # nothing of theirs stays pending in the group
            pending = client.xpending_range(name, cfg.group, "-", "+", 1000)
            assert {p["message_id"] for p in pending} == {i for i, _ in client.xrange(name)}
        assert [f[b"user_id"] for _, f in client.xrange(dead)] == [b"u2"]
        assert result.dead_letters == 1
        expected_states = [n for n, k in zip(names, pairs, strict=True) if k[1] not in FORMS]
        assert sorted(client.scan_iter(match=f"{base}:s:*")) == sorted(expected_states)
        assert _unpack_keys(client.get(f"{base}:unpushed")) == expected_states
        left_pending = unpack_pending(client.get(f"{base}:pending"), base)
        assert left_pending == {
            k: (v.buckets, v.last_imp_us) for k, v in states.items() if k[1] not in FORMS
        }  # brute force over the records written
        assert result.pair_states == len(names) - len(expected_states) + sum(k[1] in FORMS for k in states)
        seen = set(client.hkeys(f"{base}:seen:1")) | set(client.hkeys(f"{base}:seen:2"))
        assert {s.decode() for s in seen} == {r["event_id"] for r in rows} - forgotten_events
        assert result.dedup_marks == len(forgotten_events) + 1

        again = forget_stream(client, cfg, FORMS, event_ids=[other_file_event])
        assert (again.stream_entries, again.dead_letters, again.pair_states, again.dedup_marks) == (0, 0, 0, 0)
    finally:
        cleanup_redis(client, settings)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_stream_redis_is_an_error_only_when_streaming_is_on(tmp_path, redis_connection_string):
    from freqcap.jobs.forget import forget_users

    base = {
        "FREQCAP__DATA_DIR": str(tmp_path / "data"),
        "FREQCAP__FEAST__PROJECT": f"t{uuid.uuid4().hex[:10]}",
        "FREQCAP__FEAST__ONLINE__KIND": "redis",
        "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": redis_connection_string,
        "FREQCAP__STREAM__REDIS_URL": f"127.0.0.1:{_closed_port()}",
    }
    record = forget_users(["u1"], load_settings(environ=base), verify=False)
    assert record["stream_visited"] is False and "did not answer" in record["stream_note"]
    with pytest.raises(redis.ConnectionError):
        forget_users(["u1"], load_settings(environ={**base, "FREQCAP__STREAM__ENABLED": "true"}), verify=False)
    with pytest.raises(redis.ConnectionError):
        forget_users(["u1"], load_settings(environ=base), stream=True, verify=False)
