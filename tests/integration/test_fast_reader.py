"""The fast online readers return exactly what FeastReader returns, and what the events say.

Real Feast stores (Redis, a local three-master Redis Cluster, and SQLite) materialized by Feast itself across two
snapshots (so pairs that went quiet read back through tombstones), compared for many random users and candidate sets, including unknown users and
entities, duplicates, mismatched hierarchies and entities known only at some levels; a frozen Redis makes a read
raise within the socket timeout instead of hanging.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.fast_reader import (
    ReaderUnavailable,
    RedisFeatureReader,
    SqliteFeatureReader,
    _hmget_parts,
    make_reader,
    pack_hmget,
)
from freqcap.adapters.feast.online_format import ValueDecoder as _Decoder
from freqcap.adapters.feast.online_format import string_key_builder as _string_key_builder
from freqcap.adapters.feast.reader import FeastReader
from freqcap.adapters.feast.store import open_store
from freqcap.api.app import create_app
from freqcap.domain.policy.engine import Candidate, EntityState
from tests.bruteforce import WINDOW_SECONDS, calendar_counts, tier_features
from tests.integration.test_feast_online import T1, T2, _run_snapshot, _settings, random_events
from tests.integration.test_serving import TOKEN, _free_port, write_policy
from tests.privacy import pseudonym_of

ADS = [f"ad{i}" for i in range(12)]
CAMP_OF = {a: f"c{int(a[2:]) // 3}" for a in ADS}
ADV_OF = {c: f"v{int(c[1:]) // 2}" for c in set(CAMP_OF.values())}
AUDIENCES = {f"u{i}": ("returning", "cold", "high_intent")[i % 3] for i in range(12)}  # u12..u14: none
USERS = [f"u{i}" for i in range(15)] + ["u20", "u21", "nobody", "ünï", ""]


def _world(tmp_path):
    """Events that leave pairs quiet between T1 and T2, and users.parquet for most users."""
    events_dir = tmp_path / "events"
    old = random_events(1, 250, T1 - timedelta(days=12), T1 - timedelta(days=8, seconds=1))
    recent = random_events(2, 300, T1 - timedelta(days=1), T1 + timedelta(hours=1), users=range(7))
    late = random_events(3, 200, T2 - timedelta(days=3), T2 + timedelta(hours=2), users=range(7))
    # u20, u21: impressions and clicks, never a conversion (the `engaged` signal tier), still active at T2.
    clicky = random_events(4, 80, T1 - timedelta(days=2), T1, users=range(20, 22))
    clicky = clicky.filter(pc.not_equal(clicky["event_type"], "conversion"))
    parts = [old, recent, late, clicky]
    for i, part in enumerate(parts):
        write_events(part, events_dir / f"part-{i}.parquet")
    pq.write_table(
        pa.table({"user_id": list(AUDIENCES), "audience": list(AUDIENCES.values())}), tmp_path / "users.parquet"
    )
    return events_dir, [row for part in parts for row in part.to_pylist()]


def _random_candidates(rng: random.Random) -> list[Candidate]:
    """Known ads, duplicates, an unknown ad in a known campaign, a wholly unknown chain, a mismatched hierarchy."""
    out = []
    for _ in range(rng.choice([0, 1, 2, 5, 12, 30, 60])):
        roll = rng.random()
        if roll < 0.8:
            a = rng.choice(ADS)
            out.append(Candidate(a, CAMP_OF[a], ADV_OF[CAMP_OF[a]]))
        elif roll < 0.87:
            c = rng.choice(sorted(ADV_OF))
            out.append(Candidate(f"ad-new-{rng.randint(0, 3)}", c, ADV_OF[c]))
        elif roll < 0.94:
            out.append(Candidate(f"zz{rng.randint(0, 3)}", f"cz{rng.randint(0, 1)}", "vz"))
        else:  # a known ad under another campaign's advertiser: each level is read on its own
            a = rng.choice(ADS)
            out.append(Candidate(a, rng.choice(sorted(ADV_OF)), rng.choice(["v0", "v1", "vz"])))
    return out


def _expected_state(settings, events, as_of, user, level, entity, t=None):
    tier = settings.features.tier(level)
    assert set(tier.windows) <= set(WINDOW_SECONDS) and tier.longest_window == "28d"  # what the brute force knows
    feats = tier_features(events, as_of, level, tier.half_life_seconds).get((user, entity)) or {}
    counts = {WINDOW_SECONDS[label]: int(feats.get(f"imp_{label}", 0)) for label in tier.windows}
    clicks = {WINDOW_SECONDS[label]: int(feats.get(f"clk_{label}", 0)) for label in tier.windows}
    convs = {WINDOW_SECONDS[label]: int(feats.get(f"conv_{label}", 0)) for label in tier.windows}
    # Calendar counts at the request time t from the batch alone: impressions in (start of t's period, min(t, T)].
    zone = settings.features.calendar_time_zone
    cal = calendar_counts(events, t or as_of, level, zone, upto=as_of).get((user, entity), {})
    counts.update({(p, zone): cal.get(p, 0) for p in ("day", "week", "month")})
    return EntityState(
        counts,
        feats.get("last_imp_ts"),
        int(feats.get("conv_28d", 0)),
        clicks=int(feats.get("clk_28d", 0)),
        click_counts=clicks,
        conversion_counts=convs,
    )


def _expected_tier(events, as_of, user):
    mine = [f for (u, _), f in tier_features(events, as_of, "advertiser", 1.0).items() if u == user]
    if any(f.get("conv_28d", 0) for f in mine):
        return "converter"
    if any(f.get("clk_28d", 0) for f in mine):
        return "engaged"
    return "impression_only"


def _compare(settings, fast, feast, events, as_of, seed, rounds=60):
    """fast == FeastReader for random requests, and both equal the brute force; returns coverage counters."""
    rng = random.Random(seed)
    seen = {"nonzero": 0, "zero": 0, "converter": 0, "engaged": 0, "audience": 0}
    ever_active = {e["user_id"] for e in events if e["event_ts"] <= as_of}
    pseudonym = pseudonym_of(settings)  # the store knows users by pseudonym; the brute force by raw id
    for i in range(rounds):
        user = USERS[i % len(USERS)] if i < len(USERS) else rng.choice(USERS)
        cands = _random_candidates(rng)
        # Request times in the batch's day, and (every third request) in a later day, week or month.
        t = as_of + rng.choice([timedelta(minutes=30), timedelta(hours=20), timedelta(days=6), timedelta(days=25)])
        got = fast.read(pseudonym(user), cands, at=t)
        want = feast.read(pseudonym(user), cands, at=t)
        assert got == want, (user, cands)
        # Every distinct entity of every level, nothing else.
        assert set(got.states) == {(lvl, c.entity(lvl)) for c in cands for lvl in ("advertiser", "campaign", "ad")}
        assert got.signal_tier == _expected_tier(events, as_of, user), user
        audience = AUDIENCES.get(user, "unknown") if user in ever_active else "unknown"
        assert got.audience == audience, user
        for (level, entity), st in got.states.items():
            assert st == _expected_state(settings, events, as_of, user, level, entity, t), (user, level, entity)
            seen["calendar"] = seen.get("calendar", 0) + any(st.counts[(p, "UTC")] for p in ("day", "week", "month"))
            seen["nonzero" if any(st.counts.values()) else "zero"] += 1
        seen[got.signal_tier] = seen.get(got.signal_tier, 0) + 1
        seen["audience"] += got.audience != "unknown"
    return seen


def _roundtrip(tmp_path, settings, reader_type):
    events_dir, events = _world(tmp_path)
    repo = tmp_path / "feast"
    store = open_store(settings, repo)
    try:
        # Built before anything is registered: reads refuse (fail-open upstream) until the views exist.
        fast = make_reader(store, settings)
        assert type(fast) is reader_type
        with pytest.raises(Exception):  # noqa: B017 - Feast's FeatureViewNotFoundException or ReaderUnavailable
            fast.read("u1", [Candidate("ad1", "c0", "v0")])
        feast = FeastReader(store, settings.features)
        _run_snapshot(settings, tmp_path, events_dir, T1, store, repo)
        assert fast.fast_keys, "the specialized key builder must agree with Feast's serializer"
        seen1 = _compare(settings, fast, feast, events, T1, seed=11)
        _run_snapshot(settings, tmp_path, events_dir, T2, store, repo)
        seen2 = _compare(settings, fast, feast, events, T2, seed=12)
        # The fixture exercises what it claims: real counts, zeros (tombstones, unknowns), every signal tier.
        for seen in (seen1, seen2):
            assert seen["nonzero"] > 50 and seen["zero"] > 50, seen
            assert seen["converter"] and seen["engaged"] and seen["impression_only"] and seen["audience"], seen
            assert seen.get("calendar", 0) > 10, seen  # non-zero calendar counts were compared
        # A view's ttl is not enforced online by Feast 0.67: these snapshots are far older than it.
        ttl = store.get_feature_view("user_ad").ttl
        assert datetime.now(UTC) - T2 > ttl
        return store, fast, feast, events
    except Exception:
        if settings.feast.online.is_redis:
            store.teardown()
        raise


def _with_windows(settings, windows: dict[str, tuple[str, ...]]):
    tiers = tuple(t.model_copy(update={"windows": windows.get(t.level, t.windows)}) for t in settings.features.tiers)
    return settings.model_copy(update={"features": settings.features.model_copy(update={"tiers": tiers})})


# Tiers with different windows (so different columns, in different positions, per view).
UNEVEN = {"campaign": ("24h", "7d", "28d"), "ad": ("1h", "7d", "28d")}


def test_sqlite_fast_reader_equals_feast_and_brute_force(tmp_path):
    settings = _settings(tmp_path, "sqlite")
    _roundtrip(tmp_path, settings, SqliteFeatureReader)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_fast_readers_with_different_windows_per_tier(tmp_path, kind, request):
    redis_url = request.getfixturevalue("redis_connection_string") if kind == "redis" else None
    settings = _with_windows(_settings(tmp_path, kind, redis_url), UNEVEN)
    reader_type = RedisFeatureReader if kind == "redis" else SqliteFeatureReader
    store, fast, _, _ = _roundtrip(tmp_path, settings, reader_type)
    try:
        state = fast.read(pseudonym_of(settings)("u1"), [Candidate("ad1", "c0", "v0")])
        rolling = [
            [k for k in state.states[(lvl, e)].counts if isinstance(k, int)]
            for lvl, e in (("campaign", "c0"), ("ad", "ad1"))
        ]
        assert [sorted(keys) for keys in rolling] == [
            [86400, 604800, 2419200],
            [3600, 604800, 2419200],
        ]
    finally:
        fast.close()
        if kind == "redis":
            store.teardown()


@pytest.mark.redis
def test_redis_fast_reader_equals_feast_and_brute_force(tmp_path, redis_connection_string):
    settings = _settings(tmp_path, "redis", redis_connection_string)
    store, fast, feast, _ = _roundtrip(tmp_path, settings, RedisFeatureReader)
    p = pseudonym_of(settings)  # the store keys users by pseudonym
    try:
        from feast.infra.online_stores.helpers import _mmh3, _redis_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        # Keys and fields are Feast's: computed independently here with Feast's own helpers.
        cands = [Candidate("ad4", "c1", "v0"), Candidate("ad4", "c1", "v0"), Candidate("ad5", "c1", "v0")]
        sent = fast.keys_and_fields(p("u1"), cands)
        version = store.config.entity_key_serialization_version

        def key(**kv):
            ek = EntityKey(join_keys=list(kv), entity_values=[Value(string_val=v) for v in kv.values()])
            return _redis_key(store.config.project, ek, entity_key_serialization_version=version)

        assert [k for k, _ in sent] == [
            key(user_id=p("u1")),
            key(user_id=p("u1"), advertiser_id="v0"),
            key(user_id=p("u1"), campaign_id="c1"),
            key(user_id=p("u1"), ad_id="ad4"),
            key(user_id=p("u1"), ad_id="ad5"),
        ]
        assert list(sent[0][1]) == [_mmh3("user:audience"), _mmh3("user:signal_tier")]
        labels = ["1h", "24h", "7d", "28d"]
        windows = [f"imp_{w}" for w in labels] + ["last_imp_ts"] + [f"{k}_{w}" for k in ("conv", "clk") for w in labels]
        windows += [c for p in ("day", "week", "month") for c in (f"imp_{p}", f"{p}_start")]
        assert list(sent[3][1]) == [_mmh3(f"user_ad:{c}") for c in windows]
        assert fast.client.exists(sent[3][0]), "the pair key must exist in Redis as Feast wrote it"

        # A hash that expired (key_ttl_seconds) or was deleted reads as missing, as through Feast.
        rng = random.Random(5)
        cands = [Candidate(a, CAMP_OF[a], ADV_OF[CAMP_OF[a]]) for a in ADS]
        before = fast.read(p("u2"), cands)
        assert any(st.counts[604800] for st in before.states.values())
        for k, _ in fast.keys_and_fields(p("u2"), rng.sample(cands, 6)):
            fast.client.delete(k)
        after = fast.read(p("u2"), cands)
        assert after == feast.read(p("u2"), cands)
        assert after != before and after.audience == "unknown"

        # A reply that is an error (a key of the wrong type) raises, and the connection is closed rather than
        # returned to the pool with unread replies: the next read answers correctly.
        import redis

        from freqcap.adapters.feast.fast_reader import CLIENT_NAME

        host, port = redis_connection_string.split(":")
        observer = redis.Redis(host=host, port=int(port))

        def own_addresses() -> set[str]:
            """host:port of this process's TCP sockets: other processes' readers may share this Redis."""
            return {f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process().net_connections("tcp") if c.laddr}

        def named_connections(expected: int):
            """The reader's connections, once the server shows `expected` of them (or after 3 s)."""
            deadline = time.monotonic() + 3
            while True:
                mine = own_addresses()
                found = [c for c in observer.client_list() if c["name"] == CLIENT_NAME and c["addr"] in mine]
                if len(found) == expected or time.monotonic() > deadline:
                    return found
                time.sleep(0.02)

        cands = [Candidate(a, CAMP_OF[a], ADV_OF[CAMP_OF[a]]) for a in ADS]
        wrong = fast.keys_and_fields(p("u4"), cands)[1][0]  # the (u4, advertiser) key
        fast.client.delete(wrong)
        fast.client.set(wrong, b"not a hash")
        fast.client.connection_pool.disconnect()  # only the reader's next read opens a connection
        assert named_connections(0) == []
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            fast.read(p("u4"), cands)
        assert named_connections(0) == [], "a connection with unread replies must be closed, not pooled"
        fast.client.delete(wrong)
        assert fast.read(p("u4"), cands) == feast.read(p("u4"), cands)
        assert len(named_connections(1)) == 1

        # Plugged into the decision API, the answers equal those over FeastReader.
        policy = write_policy(tmp_path)
        bodies = [
            {
                "user_id": u,
                "context": {"format": "feed", "ts": T2.isoformat()},
                "candidates": [
                    {"ad_id": a, "campaign_id": CAMP_OF[a], "advertiser_id": ADV_OF[CAMP_OF[a]]} for a in ADS
                ],
            }
            for u in ("u0", "u1", "u3", "u9", "nobody")  # raw ids: serving maps them
        ]
        answers = []
        for reader in (fast, feast):
            app = create_app(
                settings, policy_path=policy, reader=reader, admin_token=TOKEN, budget_ms=5000, admission_ms=1000
            )
            with TestClient(app) as client:
                answers.append([client.post("/v1/decide", json=b).json() for b in bodies])
        assert all(not a["degraded"] for a in answers[0]), answers[0]
        assert answers[0] == answers[1]
        assert any(d["penalty"] < 1 for a in answers[0] for d in a["decisions"]), "some cap must bind"
    finally:
        fast.close()
        store.teardown()
    assert not list(fast.client.scan_iter(match=b"*" + settings.feast.project.encode())), "keys left behind"


@pytest.mark.redis_cluster
def test_redis_cluster_fast_readers_equal_feast_and_brute_force(tmp_path, redis_cluster):
    """On a Redis Cluster: the threaded and the event-loop reader equal FeastReader (Feast's own cluster client)
    and the brute force; one request's keys span every master; a moved slot fails the read that meets it
    (`MOVED`), refreshes the slot map, and the next read is right again."""
    import asyncio

    import redis

    from freqcap.adapters.feast.async_cluster import AsyncClusterReader, async_reader_for
    from freqcap.adapters.feast.fast_reader import RedisClusterFeatureReader
    from freqcap.adapters.redis_cluster import key_slot
    from tests.redis_cluster import keys_per_master, move_slot, owner_port

    settings = _settings(tmp_path, "redis_cluster", redis_cluster.connection_string)
    store, fast, feast, _ = _roundtrip(tmp_path, settings, RedisClusterFeatureReader)
    aio = async_reader_for(fast, max_connections=4)
    try:
        assert type(aio) is AsyncClusterReader
        project = settings.feast.project.encode()
        spread = keys_per_master(redis_cluster, b"*" + project)
        assert len(spread) == 3 and min(spread.values()) > 50, spread  # the rows really are on every master
        cands = [Candidate(a, CAMP_OF[a], ADV_OF[CAMP_OF[a]]) for a in ADS]
        slots = [key_slot(k) for k, _ in fast.keys_and_fields("u1", cands)]
        assert len(fast.topology.current.group(slots)) == 3, "one request's keys span every master"

        async def read(user: str, picked: list[Candidate]):
            return await asyncio.wait_for(aio.read(user, picked), 5)  # a hang fails the test, not the run

        async def async_equals_sync(seed: int, rounds: int) -> None:
            rng = random.Random(seed)
            for i in range(rounds):
                user = pseudonym_of(settings)(USERS[i % len(USERS)])  # the stored key
                picked = _random_candidates(rng)
                assert await read(user, picked) == feast.read(user, picked), (user, picked)

        # A slot moves to another master (with its keys): the reader's map is stale until a read meets it.
        def move_a_slot_of(user: str) -> None:
            key = fast.keys_and_fields(user, cands)[-1][0]
            slot = key_slot(key)
            source = owner_port(redis_cluster, slot)
            move_slot(redis_cluster, slot, next(p for p in redis_cluster.ports if p != source))

        async def on_the_event_loop() -> None:  # one loop for the whole test: connections belong to their loop
            await async_equals_sync(21, 40)
            move_a_slot_of("u3")
            before = fast.topology.refreshes
            with pytest.raises(redis.exceptions.MovedError):
                await read("u3", cands)
            deadline = time.monotonic() + 5
            while fast.topology.refreshes == before and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # the event-loop reader re-reads the map on a thread
            assert await read("u3", cands) == feast.read("u3", cands)
            await async_equals_sync(22, 20)
            aio.close()  # on its loop

        asyncio.run(on_the_event_loop())

        move_a_slot_of("u2")
        time.sleep(fast.topology.min_refresh_interval)  # the last refresh may be recent: let the next one be due
        refreshes = fast.topology.refreshes
        with pytest.raises(redis.exceptions.MovedError):
            fast.read("u2", cands)
        assert fast.topology.refreshes == refreshes + 1, "a MOVED reply re-reads the slot map"
        assert fast.read("u2", cands) == feast.read("u2", cands)
    finally:
        fast.close()
        store.teardown()


def test_key_builder_checks_itself_against_feast():
    """The specialized key builder is used only when it reproduces Feast's bytes; otherwise Feast's own is."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    def feast_key(join_keys):
        def ref(values):
            ek = EntityKey(join_keys=list(join_keys), entity_values=[Value(string_val=v) for v in values])
            return serialize_entity_key(ek, entity_key_serialization_version=3) + b"proj"

        return ref

    for join_keys in (("user_id",), ("user_id", "ad_id"), ("user_id", "advertiser_id"), ("zeta", "alpha")):
        build, fast = _string_key_builder(join_keys, 3, b"proj", feast_key(join_keys))
        assert fast, join_keys
        for values in [("u9",) * len(join_keys), tuple(f"é{i}" * (i * 90) for i in range(len(join_keys)))]:
            assert build(*values) == feast_key(join_keys)(values)

    # A serializer that changed (here: one more byte) is detected and used instead of the specialization.
    def changed(values):
        return feast_key(("user_id", "ad_id"))(values) + b"!"

    build, fast = _string_key_builder(("user_id", "ad_id"), 3, b"proj", changed)
    assert not fast
    assert build("u1", "ad1") == changed(("u1", "ad1"))


def _outcome(fn, arg):
    try:
        return "ok", fn(arg)
    except Exception as exc:  # compared, not hidden
        return "error", type(exc)


def test_decoder_matches_feasts_conversion():
    """Counts, times and strings decode as `OnlineResponse.to_dict` + FeastReader would, for every value shape
    (also ones freqcap's views do not produce), with and without the memo."""
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import NULL_TIMESTAMP_INT_VALUE, feast_value_type_to_python_type

    from freqcap.adapters.feast.reader import _as_datetime

    values = [
        Value(),
        Value(int64_val=0),
        Value(int64_val=7),
        Value(int64_val=-3),
        Value(int64_val=2**62),
        Value(int32_val=5),
        Value(double_val=2.0),
        Value(bool_val=True),
        Value(unix_timestamp_val=0),
        Value(unix_timestamp_val=1_790_000_000),
        Value(unix_timestamp_val=int(NULL_TIMESTAMP_INT_VALUE)),
    ]
    raws = [None, b""] + [v.SerializeToString() for v in values]
    decoder = _Decoder()
    for _ in range(2):  # cold, then memoized
        for raw in raws:
            feast = feast_value_type_to_python_type(Value.FromString(raw)) if raw else None
            assert decoder.decode(raw) == feast, raw
            if not isinstance(feast, datetime):
                assert decoder.count(raw) == (int(feast) if feast is not None else 0), raw
            if not isinstance(feast, float | bool):  # same value, or the same error (2**62 s is no datetime)
                assert _outcome(decoder.timestamp, raw) == _outcome(_as_datetime, feast), raw
    assert decoder.decode(Value(string_val="cold").SerializeToString()) == "cold"


def test_hmget_packing_is_redis_py_s():
    """The reader writes HMGETs as RESP bytes itself; they are the bytes redis-py's own packer produces."""
    import redis

    conn = redis.Connection()  # packs only, never connects
    for key, fields in [
        (b"\x02\x00\x00\x00k", (b"\x01\x02\x03\x04", b"abcd")),
        (bytes(range(256)) * 3, tuple(bytes([i]) * 4 for i in range(6))),
        (b"", (b"_ts:user_ad",)),
    ]:
        assert pack_hmget(key, _hmget_parts(fields)) == b"".join(conn.pack_command("HMGET", key, *fields))


def test_make_reader_falls_back_to_feast_where_it_has_no_fast_path(tmp_path):
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    from freqcap.adapters.feast.fast_reader import RedisClusterFeatureReader

    settings = _settings(tmp_path, "sqlite")
    registry = SimpleNamespace(enable_online_feature_view_versioning=False)
    for online in (
        RedisOnlineStoreConfig(client="glide", connection_string="127.0.0.1:1"),
        RedisOnlineStoreConfig(redis_type="redis_sentinel", connection_string="127.0.0.1:1"),
        SimpleNamespace(type="dynamodb"),
    ):
        store = SimpleNamespace(config=SimpleNamespace(online_store=online, registry=registry))
        assert type(make_reader(store, settings)) is FeastReader, online
    # A Redis Cluster has its own fast reader, even when unreachable at start (reads fail until it answers).
    cluster = RedisOnlineStoreConfig(redis_type="redis_cluster", connection_string="127.0.0.1:1")
    store = SimpleNamespace(config=SimpleNamespace(online_store=cluster, registry=registry))
    assert type(make_reader(store, settings)) is RedisClusterFeatureReader
    store = open_store(settings, tmp_path / "feast")
    assert type(make_reader(store, settings)) is SqliteFeatureReader
    assert type(make_reader(store, settings, fast=False)) is FeastReader


@pytest.mark.redis
def test_frozen_redis_raises_within_the_socket_timeout(tmp_path):
    """Feast's client blocks for as long as Redis is paused; the fast reader's gives up after socket_timeout."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stopped = False
    try:
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
        store = open_store(settings, repo)
        _run_snapshot(settings, tmp_path, events_dir, T1, store, repo)
        timeout = 0.2
        reader = make_reader(store, settings, socket_timeout=timeout)
        assert isinstance(reader, RedisFeatureReader) and reader.socket_timeout == timeout
        cands = [Candidate(a, CAMP_OF[a], ADV_OF[CAMP_OF[a]]) for a in ADS]
        user = pseudonym_of(settings)("u1")  # as the store knows u1
        live = reader.read(user, cands)
        assert any(any(st.counts.values()) for st in live.states.values())

        os.kill(proc.pid, signal.SIGSTOP)
        stopped = True
        # Several threads at once, like the app's lookup pool; each must come back, with an error, promptly.
        outcomes: list[tuple[float, BaseException | None]] = []

        def one():
            started = time.perf_counter()
            try:
                reader.read(user, cands)
                outcomes.append((time.perf_counter() - started, None))
            except BaseException as exc:  # recorded and asserted below
                outcomes.append((time.perf_counter() - started, exc))

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert not any(t.is_alive() for t in threads), "a read stayed blocked on the frozen Redis"
        assert len(outcomes) == 4
        for elapsed, exc in outcomes:
            assert isinstance(exc, redis.exceptions.TimeoutError), exc
            assert elapsed < timeout + 0.3, elapsed  # one timeout, no retries with backoff

        os.kill(proc.pid, signal.SIGCONT)
        stopped = False
        assert reader.read(user, cands) == live, "reads recover once Redis answers again"
    finally:
        if stopped:
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)


def test_reader_unavailable_names_the_problem(tmp_path):
    """A registered view without a column the policy reads is refused, not silently read as zeros."""
    settings = _settings(tmp_path, "sqlite")
    events_dir, _ = _world(tmp_path)
    repo = tmp_path / "feast"
    store = open_store(settings, repo)
    _run_snapshot(settings, tmp_path, events_dir, T1, store, repo)
    # The config now asks for a 90d window that the registered views do not have.
    wider = settings.model_copy(
        update={
            "features": settings.features.model_copy(
                update={
                    "tiers": tuple(
                        t.model_copy(update={"windows": (*t.windows, "90d")}) for t in settings.features.tiers
                    )
                }
            )
        }
    )
    reader = SqliteFeatureReader(store, wider.features)
    with pytest.raises(ReaderUnavailable, match="imp_90d"):
        reader.read("u1", [Candidate("ad1", "c0", "v0")])
