"""Selecting the Redis Cluster online store from settings, and the slot routing the cluster reader and writer use.

Slots are checked against Redis' own published examples and against redis-py's independent implementation; the
rendered feature_store.yaml is loaded by Feast's own `RepoConfig`.
"""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError
from redis.crc import key_slot as redis_py_key_slot

from freqcap.adapters.feast.store import repo_config_dict
from freqcap.adapters.redis_cluster import NO_NODE, SlotUnassigned, key_slot, parse_cluster_slots
from freqcap.config import load_settings


def _settings(tmp_path, kind: str, connection: str):
    return load_settings(
        environ={
            "FREQCAP__DATA_DIR": str(tmp_path),
            "FREQCAP__FEAST__ONLINE__KIND": kind,
            "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": connection,
        }
    )


def test_redis_cluster_renders_feasts_redis_cluster_store(tmp_path):
    from feast.infra.online_stores.redis import RedisType
    from feast.repo_config import RepoConfig

    settings = _settings(tmp_path, "redis_cluster", "10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002,password=s3cret")
    assert settings.feast.online.is_redis
    rendered = repo_config_dict(settings, tmp_path)
    assert rendered["online_store"]["redis_type"] == "redis_cluster"
    assert rendered["online_store"]["connection_string"] == "10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002,password=s3cret"
    config = RepoConfig(repo_path=tmp_path, **rendered)
    assert config.online_store.redis_type == RedisType.redis_cluster
    single = repo_config_dict(_settings(tmp_path, "redis", "127.0.0.1:6379"), tmp_path)["online_store"]
    assert "redis_type" not in single  # Feast's default: one server (the file is as before for single node)


@pytest.mark.parametrize(
    ("kind", "connection", "message"),
    [
        ("redis_cluster", "", "valid string"),  # an empty environment variable reads as null
        ("redis_cluster", "password=x", "names no host:port"),
        ("redis_cluster", "h1:7000,h2", "'h2' in 'h1:7000,h2' is not host:port"),
        ("redis_cluster", "h1:7000,h2:99999", "'h2:99999'"),
        ("redis_cluster", "h1:seven", "'h1:seven'"),
        ("redis_cluster", ":7000", "':7000'"),
        ("redis_cluster", "redis://h1:7000", "not a URL"),
        ("redis", "h1:7000,h2:7001", "set kind: redis_cluster"),
    ],
)
def test_bad_connection_strings_are_refused_naming_the_field(tmp_path, kind, connection, message):
    with pytest.raises(ValidationError) as info:
        _settings(tmp_path, kind, connection)
    text = str(info.value)
    assert "feast.online.redis_connection_string" in text, text
    assert message in text, text


def test_sqlite_ignores_the_redis_connection_string(tmp_path):
    assert _settings(tmp_path, "sqlite", "not used").feast.online.kind == "sqlite"


def test_key_slot_is_redis_cluster_s():
    # Examples from the Redis Cluster specification: hash tags route related keys to one slot.
    assert key_slot(b"123456789") == 12739  # CRC16/XMODEM check value 0x31C3 mod 16384
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers") == key_slot(b"user1000")
    assert key_slot(b"foo{}{bar}") == redis_py_key_slot(b"foo{}{bar}")  # an empty tag: the whole key
    assert key_slot(b"foo{{bar}}zap") == key_slot(b"{bar")
    rng = random.Random(3)
    for _ in range(2000):  # binary keys like Feast's serialized entity keys (may contain '{' and '}')
        key = bytes(rng.choice(b"{}ab\x00\xff") for _ in range(rng.randint(0, 24)))
        assert key_slot(key) == redis_py_key_slot(key), key


def test_slot_map_from_cluster_slots_reply():
    reply = [
        [0, 5460, [b"10.0.0.1", 7000, b"id1", []], [b"10.0.0.4", 7003, b"id4", []]],
        [5461, 10922, [b"", 7001, b"id2", []]],  # empty host: the node that was asked
        [10923, 16000, [b"10.0.0.1", 7000, b"id1", []]],  # a master may serve several ranges
    ]
    slot_map = parse_cluster_slots(reply, ("10.0.0.9", 7009))
    assert slot_map.nodes == (("10.0.0.1", 7000), ("10.0.0.9", 7001))
    assert [slot_map.node_of(s) for s in (0, 5460, 5461, 10922, 10923, 16000)] == [0, 0, 1, 1, 0, 0]
    assert slot_map.owner[16001] == NO_NODE
    with pytest.raises(SlotUnassigned, match="slot 16383"):
        slot_map.node_of(16383)
    assert slot_map.group([5, 6000, 7, 12000]) == {0: [0, 2, 3], 1: [1]}
    with pytest.raises(SlotUnassigned):
        slot_map.group([5, 16100])
