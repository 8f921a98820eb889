"""The bulk materialization path against real online stores (embedded SQLite, the Redis at 127.0.0.1:6379, and a
local three-master Redis Cluster: rows split by slot, one connection per master).

What is checked, per store:
* values written by `bulk_materialize` read back through Feast's own `get_online_features` equal an independent
  brute-force computation (tier views: ints, floats, timestamps) and the source snapshot (user view: strings), across
  two snapshots so that pairs which went quiet read back as zero;
* the bytes stored are identical to what Feast's own `materialize` stores for the same snapshot, including edge
  values (varint boundaries, negative and extreme ints, NaN/inf/-0.0/subnormal doubles, nulls, pre-1970 and
  fractional timestamps, empty/unicode/long strings and keys);
* incremental runs rewrite exactly the changed rows (counted), keep the rest, refresh Redis TTLs of unchanged keys
  and rewrite unchanged keys that vanished; a rerun writes nothing; an untrusted or missing state means a full
  rewrite; an older snapshot is refused;
* Redis keys carry the configured TTL and expire; SQLite entities absent for longer than the TTL are deleted;
* the runtime layout guard stops a wrong encoding before anything is written;
* SQLite's two write strategies (upsert in place, rebuild the table in one transaction) leave byte-identical tables
  (the tests above run with both), the rebuilt schema is Feast's own, and a rebuild that fails midway leaves the
  old table as it was.
"""

from __future__ import annotations

import math
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.duckdb.features import build_features
from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast import bulk
from freqcap.adapters.feast.bulk import (
    LayoutMismatchError,
    StaleSnapshotError,
    bulk_materialize,
    clear_online_state,
    online_state,
)
from freqcap.adapters.feast.redis_dump import RDB_TYPE_HASH_LISTPACK
from freqcap.adapters.feast.snapshots import publish_snapshot, snapshot_path
from freqcap.adapters.feast.store import apply_definitions, open_store
from freqcap.config import load_settings
from freqcap.domain.features import USER_TABLE, tier_tables
from freqcap.layout import offline_root
from tests.integration.test_feast_online import T1, T2, _check_online_equals_brute_force, _pairs, random_events

KINDS = [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis_cluster", marks=pytest.mark.redis_cluster),
]


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def _settings(tmp_path: Path, kind: str, redis: str | None, **extra: str):
    env = {
        "FREQCAP__DATA_DIR": str(tmp_path),
        "FREQCAP__FEAST__ONLINE__KIND": kind,
        "FREQCAP__FEAST__PROJECT": f"tb{uuid.uuid4().hex[:10]}",
        **extra,
    }
    if redis:
        env["FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING"] = redis
    return load_settings(environ=env)


class Online:
    """A fresh Feast repo (unique project) on one online store, with raw access for assertions; cleans up."""

    def __init__(self, tmp_path: Path, kind: str, redis: str | None, name: str = "feast", **extra: str):
        self.kind = kind
        self.settings = _settings(tmp_path, kind, redis, **extra)
        self.repo = tmp_path / name
        self.store = open_store(self.settings, self.repo)
        offline_root(self.repo).mkdir(parents=True, exist_ok=True)
        apply_definitions(self.store, self.settings, self.repo)
        self.project = self.store.project

    @property
    def redis(self):
        return self.store._get_provider().online_store._get_client(self.store.config.online_store)

    def redis_keys(self) -> list[bytes]:
        return sorted(self.redis.scan_iter(match=b"*" + self.project.encode(), count=1000))

    def sqlite_rows(self, view: str) -> list[tuple]:
        con = sqlite3.connect(self.repo / "online.db")
        try:
            return con.execute(
                f'SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM "{self.project}_{view}" '
                "ORDER BY entity_key, feature_name"
            ).fetchall()
        finally:
            con.close()

    def place(self, view: str, table: pa.Table, as_of: datetime) -> Path:
        """Put a snapshot where publish_snapshot would (the view's offline source reads it too)."""
        path = snapshot_path(offline_root(self.repo), view, as_of)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return path

    def read(self, view: str, rows: list[dict], ts: bool = False) -> dict:
        refs = [f"{view}:{f.name}" for f in self.store.get_feature_view(view).features]
        return self.store.get_online_features(features=refs, entity_rows=rows).to_dict(include_event_timestamps=ts)

    def close(self) -> None:
        if self.kind != "sqlite":
            client = self.redis
            keys = self.redis_keys()
            keys += list(client.scan_iter(match=bulk.STATE_KEY_PREFIX + self.project.encode() + b":*"))
            for start in range(0, len(keys), 1000):
                client.unlink(*keys[start : start + 1000])


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


def _redis_for(kind: str, request) -> str | None:
    """The connection string of the store `kind` names: the shared Redis, the session's local cluster, or None."""
    if kind == "redis":
        return request.getfixturevalue("redis_connection_string")
    if kind == "redis_cluster":
        return request.getfixturevalue("redis_cluster").connection_string
    return None


@pytest.fixture
def redis_url(kind, request) -> str | None:
    return _redis_for(kind, request)


@pytest.fixture(params=["upsert", "rebuild"])
def strategy(request, kind) -> str:
    """SQLite's write strategy (`sqlite_strategy`); Redis has one way to write, run once."""
    if kind != "sqlite" and request.param == "rebuild":
        pytest.skip("Redis has no rebuild strategy")
    return request.param


@pytest.fixture
def online(tmp_path, kind, redis_url):
    o = Online(tmp_path, kind, redis_url)
    yield o
    o.close()


def _tier(settings, level: str = "ad"):
    return next(t for t in tier_tables(settings.features) if t.level == level)


def _ad_table(settings, rows: list[dict], as_of: datetime) -> pa.Table:
    """A user_ad snapshot from dicts (missing counts are 0)."""
    tier = _tier(settings)
    cols: dict[str, pa.Array] = {
        "user_id": pa.array([r["user_id"] for r in rows], pa.string()),
        "ad_id": pa.array([r["ad_id"] for r in rows], pa.string()),
    }
    for c in (*tier.count_columns, *tier.calendar_columns):
        cols[c] = pa.array([r.get(c, 0) for r in rows], pa.int64())
    cols["imp_decayed"] = pa.array([r.get("imp_decayed", 0.0) for r in rows], pa.float64())
    cols["last_imp_ts"] = pa.array([r.get("last_imp_ts") for r in rows], pa.timestamp("us", tz="UTC"))
    cols["event_timestamp"] = pa.array([as_of] * len(rows), pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


def _synthetic_rows(n: int, seed: int = 5) -> list[dict]:
    rng = np.random.default_rng(seed)
    base = datetime(2026, 10, 1, tzinfo=UTC)
    return [
        {
            "user_id": f"u{i // 4}",
            "ad_id": f"ad{i % 4}",
            "imp_1h": int(rng.integers(0, 3)),
            "imp_24h": int(rng.integers(0, 30)),
            "imp_28d": int(rng.integers(0, 300)),
            "clk_7d": int(rng.integers(0, 2)),
            "imp_decayed": float(rng.random() * 10),
            "last_imp_ts": None if i % 9 == 0 else base + timedelta(seconds=int(rng.integers(0, 10**6))),
        }
        for i in range(n)
    ]


def _as_expected(row: dict, feature: str):
    value = row.get(feature, 0 if feature != "last_imp_ts" else None)
    if feature == "last_imp_ts" and value is not None:
        return int(value.timestamp())
    return value


def _check_ad_rows(online: Online, rows: list[dict], ts: datetime | dict | None = None) -> None:
    """get_online_features returns exactly these rows' values (and, if given, event timestamps)."""
    tier = _tier(online.settings)
    got = online.read("user_ad", [{"user_id": r["user_id"], "ad_id": r["ad_id"]} for r in rows], ts=True)
    for i, r in enumerate(rows):
        for f in tier.feature_columns:
            have = got[f][i]
            if f == "last_imp_ts" and have is not None:
                have = int(have.timestamp())
            assert have == _as_expected(r, f), (r["user_id"], r["ad_id"], f, have, _as_expected(r, f))
        if ts is not None:
            want = int((ts[(r["user_id"], r["ad_id"])] if isinstance(ts, dict) else ts).timestamp())
            for f in tier.feature_columns:  # Feast reports the stored event timestamp per feature (seconds)
                assert got[f"{f}__ts"][i] == want, (r["user_id"], r["ad_id"], f, got[f"{f}__ts"][i], want)


# ---------------------------------------------------------------------------------------------------------------
# Values: bulk-written data read back by Feast equals the brute force and the source
# ---------------------------------------------------------------------------------------------------------------


def _check_user_view(online: Online, snapshot: Path) -> None:
    """Every row of the user snapshot (tombstones included) reads back identically: strings and counts."""
    source = pq.read_table(snapshot).to_pylist()
    got = online.read(USER_TABLE, [{"user_id": r["user_id"]} for r in source])
    for i, r in enumerate(source):
        for f in ("audience", "signal_tier", "imp_24h", "imp_7d", "clk_28d", "conv_28d"):
            assert got[f][i] == r[f], (r["user_id"], f, got[f][i], r[f])


def test_bulk_roundtrip_matches_brute_force(tmp_path, online, strategy):
    events_dir = tmp_path / "events"
    old = random_events(1, 250, T1 - timedelta(days=12), T1 - timedelta(days=8, seconds=1))
    recent = random_events(2, 120, T1 - timedelta(days=1), T1 + timedelta(hours=1), users=range(7))
    late = random_events(3, 150, T2 - timedelta(days=3), T2 + timedelta(hours=2), users=range(7))
    parts = [old, recent, late]
    for i, part in enumerate(parts):
        write_events(part, events_dir / f"part-{i}.parquet")
    audiences = ["returning", "cold", "hígh_intent ✓", "", "returning"]
    pq.write_table(
        pa.table({"user_id": [f"u{i}" for i in range(15)], "audience": [audiences[i % 5] for i in range(15)]}),
        tmp_path / "users.parquet",
    )
    events = [row for part in parts for row in part.to_pylist()]
    settings, store = online.settings, online.store

    def run(as_of):
        build = build_features(events_dir, as_of, tmp_path / f"features-{as_of:%Y%m%d}", settings.features)
        snaps = publish_snapshot(build, offline_root(online.repo))
        apply_definitions(store, settings, online.repo)
        report = bulk_materialize(store, settings, snaps, as_of, sqlite_strategy=strategy)
        assert report.rows_read == sum(pq.read_metadata(p).num_rows for p in snaps.values())
        assert {v.strategy for v in report.views} == {"upsert" if online.kind != "sqlite" else strategy}
        return build, snaps, report

    b1, snaps1, r1 = run(T1)
    assert {v.mode for v in r1.views} == {"full"} and r1.rows_written == r1.rows_read
    if online.kind != "sqlite":  # an empty store: every key is new, so every row is one RESTORE
        assert [v.rows_restored for v in r1.views] == [v.rows_written for v in r1.views]
    pairs1 = _pairs(b1)
    _check_online_equals_brute_force(settings, store, events, T1, pairs1)
    _check_user_view(online, snaps1[USER_TABLE])

    b2, snaps2, r2 = run(T2)
    assert {v.mode for v in r2.views} == {"incremental"}
    if online.kind != "sqlite":  # RESTORE only creates: exactly the keys that were not in the first snapshot
        new_keys = {}
        for v in r2.views:
            keys = [c for c in pq.read_schema(snaps2[v.view]).names if c.endswith("_id")]
            old = {tuple(r.values()) for r in pq.read_table(snaps1[v.view], columns=keys).to_pylist()}
            new = {tuple(r.values()) for r in pq.read_table(snaps2[v.view], columns=keys).to_pylist()}
            new_keys[v.view] = len(new - old)
        assert {v.view: v.rows_restored for v in r2.views} == new_keys and sum(new_keys.values()) > 0
    pairs2 = _pairs(b2)
    quiet = {lvl: pairs1[lvl] - pairs2[lvl] for lvl in pairs1}
    assert all(quiet.values()), "the fixture must have pairs that went quiet between T1 and T2"
    both = {lvl: pairs1[lvl] | pairs2[lvl] for lvl in pairs1}
    # Quiet pairs got their tombstone: the brute force as of T2 says zero for them, and so must the store.
    _check_online_equals_brute_force(settings, store, events, T2, both)
    _check_user_view(online, snaps2[USER_TABLE])
    state = online_state(store, settings, list(snaps2))
    assert {s.as_of for s in state.values()} == {T2.isoformat()}


# ---------------------------------------------------------------------------------------------------------------
# Layout: byte-identical to what Feast's own materialize stores
# ---------------------------------------------------------------------------------------------------------------

_EDGE_INTS = [0, 1, 127, 128, 16383, 16384, 2**31, 2**53 + 1, 2**63 - 1, -1, -(2**63), 300]
_EDGE_DOUBLES = [0.0, -0.0, 5e-324, 1.5, 1e300, math.inf, -math.inf, math.nan, None, 0.1, 2.0 / 3.0, 123456.789]
_EDGE_TS = [
    None,
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    datetime(2026, 10, 9, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2200, 1, 1, tzinfo=UTC),
    datetime(1901, 12, 14, tzinfo=UTC),
]
_EDGE_STRINGS = ["", "é✓ü", None, "x" * 300, "returning", "cold"]


def _edge_tables(settings, as_of: datetime) -> dict[str, pa.Table]:
    tier = _tier(settings)
    n = 60
    rows = []
    for i in range(n):
        row = {
            "user_id": ["u1", "usér-2", "u" * 300, "", "u5"][i % 5] + f"-{i // 5}",
            "ad_id": f"ad{i}" if i % 7 else "ád✓" * (i + 1),
            "imp_decayed": _EDGE_DOUBLES[i % len(_EDGE_DOUBLES)],
            "last_imp_ts": _EDGE_TS[i % len(_EDGE_TS)],
        }
        for j, c in enumerate((*tier.count_columns, *tier.calendar_columns)):
            row[c] = _EDGE_INTS[(i + j) % len(_EDGE_INTS)]
        rows.append(row)
    ad = _ad_table(settings, rows, as_of)
    user = pa.table(
        {
            "user_id": pa.array([f"user-{i}" if i % 4 else f"üser-{i}" for i in range(n)]),
            "audience": pa.array([_EDGE_STRINGS[i % len(_EDGE_STRINGS)] for i in range(n)], pa.string()),
            "signal_tier": pa.array([["impression_only", "engaged", "converter"][i % 3] for i in range(n)]),
            "imp_24h": pa.array([_EDGE_INTS[i % len(_EDGE_INTS)] for i in range(n)], pa.int64()),
            "imp_7d": pa.array([i for i in range(n)], pa.int64()),
            "clk_28d": pa.array([0] * n, pa.int64()),
            "conv_28d": pa.array([_EDGE_INTS[(i * 5) % len(_EDGE_INTS)] for i in range(n)], pa.int64()),
            "event_timestamp": pa.array([as_of] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    return {"user_ad": ad, USER_TABLE: user}


def _stored(online: Online, views: list[str]) -> dict:
    """Everything the online store holds for this project, with the project name taken out of Redis keys."""
    if online.kind == "sqlite":
        return {v: online.sqlite_rows(v) for v in views}
    client = online.redis
    suffix = online.project.encode()
    out = {}
    for key in online.redis_keys():
        ttl = client.ttl(key)
        assert 0 < ttl <= online.store.config.online_store.key_ttl_seconds, (key, ttl)
        out[key[: -len(suffix)]] = client.hgetall(key)
    return out


def test_bulk_layout_is_byte_identical_to_feast_materialize(tmp_path, kind, redis_url, strategy):
    as_of = T1
    feast_side = Online(tmp_path, kind, redis_url, name="feast-standard")
    bulk_side = Online(tmp_path, kind, redis_url, name="feast-bulk")
    try:
        tables = _edge_tables(feast_side.settings, as_of)
        snaps = {}
        for view, table in tables.items():
            feast_side.place(view, table, as_of)
            snaps[view] = bulk_side.place(view, table, as_of)
        feast_side.store.materialize(
            as_of - timedelta(seconds=1), as_of + timedelta(seconds=1), feature_views=list(tables)
        )
        # Small batches, so that batch boundaries and the per-batch sample checks are exercised too.
        report = bulk_materialize(
            bulk_side.store, bulk_side.settings, snaps, as_of, batch_rows=7, sqlite_strategy=strategy
        )
        assert report.rows_written == sum(t.num_rows for t in tables.values())
        want, got = _stored(feast_side, list(tables)), _stored(bulk_side, list(tables))
        assert len(got) == len(want) > 0
        if kind == "sqlite":
            for view in tables:
                assert (
                    len(got[view])
                    == len(want[view])
                    == tables[view].num_rows * (len(tables[view].column_names) - 1 - (2 if view == "user_ad" else 1))
                )
        assert got == want
        if kind != "sqlite":
            # Rows whose values are all short strings went in as RESTOREd hashes, the rest (300-character strings)
            # with HSET; either way the server's own serialization of every key equals Feast's, byte for byte.
            restored = {v.view: v.rows_restored for v in report.views}
            assert 0 < restored["user_ad"] == tables["user_ad"].num_rows
            assert 0 < restored[USER_TABLE] < tables[USER_TABLE].num_rows
            suffix = feast_side.project.encode()
            for key in feast_side.redis_keys():
                twin = key[: -len(suffix)] + bulk_side.project.encode()
                dumped, reference = bulk_side.redis.dump(twin), feast_side.redis.dump(key)
                if kind == "redis_cluster" and reference[0] != RDB_TYPE_HASH_LISTPACK:
                    # A hashtable-encoded hash dumps in its dict's order, which depends on the server's random hash
                    # seed: twins on two masters differ there. Same encoding (the fields were compared above).
                    assert bulk_side.redis.object("encoding", twin) == feast_side.redis.object("encoding", key)
                    continue
                assert dumped == reference, key
        # And Feast reads both back identically.
        rows = [{"user_id": r["user_id"], "ad_id": r["ad_id"]} for r in tables["user_ad"].to_pylist()]
        a, b = feast_side.read("user_ad", rows, ts=True), bulk_side.read("user_ad", rows, ts=True)
        assert a.keys() == b.keys()
        for col in a:
            assert [("nan" if isinstance(x, float) and math.isnan(x) else x) for x in a[col]] == [
                ("nan" if isinstance(x, float) and math.isnan(x) else x) for x in b[col]
            ], col
    finally:
        feast_side.close()
        bulk_side.close()


# ---------------------------------------------------------------------------------------------------------------
# Incremental runs
# ---------------------------------------------------------------------------------------------------------------


def test_incremental_run_rewrites_only_changed_rows(online, strategy):
    settings, store = online.settings, online.store
    t1, t2 = T1, T1 + timedelta(hours=1)
    rows1 = _synthetic_rows(300)
    s1 = online.place("user_ad", _ad_table(settings, rows1, t1), t1)
    r1 = bulk_materialize(store, settings, {"user_ad": s1}, t1)
    assert (r1.views[0].mode, r1.rows_written, r1.rows_skipped) == ("full", 300, 0)
    _check_ad_rows(online, rows1, ts=t1)

    rows2 = [dict(r) for r in rows1[:290]]  # the last 10 pairs are not in the new snapshot: left as they are
    for r in rows2[:30]:
        r["imp_1h"] += 1
    for r in rows2[30:40]:
        r["last_imp_ts"] = datetime(2026, 10, 9, 12, tzinfo=UTC)
    for r in rows2[40:45]:
        r["imp_decayed"] = float(np.nextafter(r["imp_decayed"], np.inf))  # one ulp: compared exactly
    for r in rows2[45:50]:  # tombstones: the pair went quiet
        r.update({k: 0 for k in _tier(settings).count_columns}, imp_decayed=0.0, last_imp_ts=None)
        r.update({k: 0 for k in _tier(settings).calendar_columns if k.startswith("imp_")})
    rows2 += [{"user_id": f"new{i}", "ad_id": "ad0", "imp_28d": i + 1} for i in range(20)]
    changed = {(r["user_id"], r["ad_id"]) for r in rows2[:50] + rows2[-20:]}
    s2 = online.place("user_ad", _ad_table(settings, rows2, t2), t2)

    untouched = rows2[100]
    vanished = rows2[101]
    if online.kind != "sqlite":
        # An unchanged key with a nearly spent TTL gets it refreshed; one that vanished is rewritten.
        key = _redis_key_of(online, untouched)
        online.redis.expire(key, 100)
        online.redis.delete(_redis_key_of(online, vanished))

    r2 = bulk_materialize(store, settings, {"user_ad": s2}, t2, sqlite_strategy=strategy)
    v = r2.views[0]
    assert v.mode == "incremental", v.reason
    assert v.rows_read == 310
    repaired = 1 if online.kind != "sqlite" else 0
    assert (v.rows_written, v.rows_unchanged, v.rows_repaired) == (70 + repaired, 240 - repaired, repaired)
    assert (v.strategy, v.write_share) == (
        "upsert" if online.kind != "sqlite" else strategy,
        round((70 + repaired) / 310, 4),
    )
    # Changed rows carry the new snapshot time; unchanged ones keep the time their values were written.
    stamps = {(r["user_id"], r["ad_id"]): t1 for r in rows2}
    stamps.update({k: t2 for k in changed})
    if online.kind != "sqlite":
        stamps[(vanished["user_id"], vanished["ad_id"])] = t2
    _check_ad_rows(online, rows2, ts=stamps)
    _check_ad_rows(online, rows1[290:], ts=t1)  # not in the new snapshot: untouched
    if online.kind != "sqlite":
        ttl = online.redis.ttl(_redis_key_of(online, untouched))
        assert ttl > store.config.online_store.key_ttl_seconds - 60

    # A rerun of the same snapshot writes nothing.
    r3 = bulk_materialize(store, settings, {"user_ad": s2}, t2, sqlite_strategy=strategy)
    assert (r3.views[0].mode, r3.rows_written, r3.rows_skipped) == ("incremental", 0, 310)
    _check_ad_rows(online, rows2, ts=stamps)


def _redis_key_of(online: Online, row: dict) -> bytes:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(
        join_keys=["user_id", "ad_id"], entity_values=[Value(string_val=row["user_id"]), Value(string_val=row["ad_id"])]
    )
    return _redis_key(online.project, key, entity_key_serialization_version=3)


def test_untrusted_or_missing_state_means_full_rewrite(online, monkeypatch):
    settings, store = online.settings, online.store
    rows = _synthetic_rows(120)
    s1 = online.place("user_ad", _ad_table(settings, rows, T1), T1)
    bulk_materialize(store, settings, {"user_ad": s1}, T1)

    # The store lost its data (flushed Redis, recreated table) but the state survived: detected, full rewrite.
    if online.kind != "sqlite":
        online.redis.unlink(*online.redis_keys())
    else:
        con = sqlite3.connect(online.repo / "online.db")
        con.execute(f'DELETE FROM "{online.project}_user_ad"')
        con.commit()
        con.close()
    r = bulk_materialize(store, settings, {"user_ad": s1}, T1)
    assert (r.views[0].mode, r.rows_written) == ("full", 120), r.views[0].reason
    _check_ad_rows(online, rows, ts=T1)

    # A run that fails midway leaves no state behind: the next one rewrites everything.
    calls = {"n": 0}
    target_cls = bulk.RedisTarget if online.kind != "sqlite" else bulk.SqliteTarget
    original = target_cls.write

    def failing_write(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return original(self, batch)

    monkeypatch.setattr(target_cls, "write", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        bulk_materialize(store, settings, {"user_ad": s1}, T1, batch_rows=50, incremental=False)
    monkeypatch.undo()
    assert online_state(store, settings, ["user_ad"]) == {"user_ad": None}
    r = bulk_materialize(store, settings, {"user_ad": s1}, T1)
    assert (r.views[0].mode, r.views[0].reason, r.rows_written) == ("full", "no recorded state", 120)

    clear_online_state(store, settings, ["user_ad"])
    assert bulk_materialize(store, settings, {"user_ad": s1}, T1).views[0].mode == "full"
    assert bulk_materialize(store, settings, {"user_ad": s1}, T1, incremental=False).rows_written == 120


@pytest.mark.redis
def test_redis_keys_that_vanished_are_rewritten_without_a_full_rewrite(tmp_path, redis_connection_string):
    online = Online(tmp_path, "redis", redis_connection_string)
    try:
        settings, store = online.settings, online.store
        rows = _synthetic_rows(120)
        s1 = online.place("user_ad", _ad_table(settings, rows, T1), T1)
        bulk_materialize(store, settings, {"user_ad": s1}, T1)
        # Half the keys expire or are evicted (every other one, so the state check's sample meets both kinds).
        gone = rows[::2]
        online.redis.unlink(*[_redis_key_of(online, r) for r in gone])
        r = bulk_materialize(store, settings, {"user_ad": s1}, T1)
        v = r.views[0]
        assert v.mode == "incremental", v.reason
        assert (v.rows_written, v.rows_repaired, v.rows_unchanged) == (len(gone), len(gone), 120 - len(gone))
        _check_ad_rows(online, rows, ts=T1)
    finally:
        online.close()


def test_older_snapshot_is_refused(online):
    settings, store = online.settings, online.store
    rows = _synthetic_rows(10)
    newer = online.place("user_ad", _ad_table(settings, rows, T2), T2)
    older = online.place("user_ad", _ad_table(settings, rows, T1), T1)
    bulk_materialize(store, settings, {"user_ad": newer}, T2)
    with pytest.raises(StaleSnapshotError):
        bulk_materialize(store, settings, {"user_ad": older}, T1)
    _check_ad_rows(online, rows, ts=T2)


# ---------------------------------------------------------------------------------------------------------------
# Expiry: Redis TTL, SQLite cleanup
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_keys_carry_the_configured_ttl_and_expire(tmp_path, redis_connection_string):
    online = Online(tmp_path, "redis", redis_connection_string, FREQCAP__FEAST__ONLINE_KEY_TTL="2s")
    try:
        rows = _synthetic_rows(40)
        snap = online.place("user_ad", _ad_table(online.settings, rows, T1), T1)
        assert online.store.config.online_store.key_ttl_seconds == 2
        bulk_materialize(online.store, online.settings, {"user_ad": snap}, T1)
        keys = online.redis_keys()
        assert len(keys) == 40
        assert all(0 < online.redis.pttl(k) <= 2000 for k in keys)
        _check_ad_rows(online, rows, ts=T1)
        time.sleep(2.5)
        assert online.redis_keys() == []
        got = online.read("user_ad", [{"user_id": r["user_id"], "ad_id": r["ad_id"]} for r in rows])
        assert set(got["imp_28d"]) == {None}
    finally:
        online.close()


@pytest.mark.redis
def test_default_redis_ttl_on_every_key(tmp_path, redis_connection_string):
    online = Online(tmp_path, "redis", redis_connection_string)
    try:
        rows = _synthetic_rows(40)
        snap = online.place("user_ad", _ad_table(online.settings, rows, T1), T1)
        bulk_materialize(online.store, online.settings, {"user_ad": snap}, T1)
        ttl = online.store.config.online_store.key_ttl_seconds
        assert ttl == int(timedelta(days=29).total_seconds())
        assert all(ttl - 60 < online.redis.ttl(k) <= ttl for k in online.redis_keys())
    finally:
        online.close()


# ---------------------------------------------------------------------------------------------------------------
# Redis RESTORE: only new keys, never another view's fields, HSET when the server's hashes are not listpacks
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.redis
def test_restore_never_clobbers_fields_other_views_keep_in_the_same_hash(tmp_path, redis_connection_string):
    online = Online(tmp_path, "redis", redis_connection_string)
    try:
        rows = _synthetic_rows(40)
        snap = online.place("user_ad", _ad_table(online.settings, rows, T1), T1)
        # Three keys already hold another view's field (as a stream view or a second batch view would).
        shared = rows[:3]
        for r in shared:
            online.redis.hset(_redis_key_of(online, r), b"other_view_field", b"keep me")
        report = bulk_materialize(online.store, online.settings, {"user_ad": snap}, T1)
        (view,) = report.views
        assert view.rows_written == 40 and view.rows_restored == 40 - len(shared)
        for r in shared:
            assert online.redis.hget(_redis_key_of(online, r), b"other_view_field") == b"keep me"
        _check_ad_rows(online, rows, ts=T1)
    finally:
        online.close()


@pytest.mark.redis
def test_restore_falls_back_to_hset_when_the_server_would_not_keep_a_listpack(tmp_path, redis_connection_string):
    online = Online(tmp_path, "redis", redis_connection_string)
    client = online.redis
    before = client.config_get("hash-max-listpack-entries")["hash-max-listpack-entries"]
    try:
        # 15 fields per hash (timestamp + 14 features) > 8: this server stores such hashes as hashtables, so a
        # listpack payload would not be what HSET makes. A real server setting, restored afterwards.
        client.config_set("hash-max-listpack-entries", 8)
        rows = _synthetic_rows(30)
        snap = online.place("user_ad", _ad_table(online.settings, rows, T1), T1)
        report = bulk_materialize(online.store, online.settings, {"user_ad": snap}, T1)
        assert report.views[0].rows_written == 30 and report.views[0].rows_restored == 0
        assert all(client.object("encoding", k) == b"hashtable" for k in online.redis_keys())
        _check_ad_rows(online, rows, ts=T1)
    finally:
        client.config_set("hash-max-listpack-entries", before)
        online.close()


@pytest.mark.redis
def test_restored_keys_equal_hset_written_keys_byte_for_byte(tmp_path, redis_connection_string):
    restored_side = Online(tmp_path, "redis", redis_connection_string, name="restore")
    hset_side = Online(tmp_path, "redis", redis_connection_string, name="hset")
    try:
        tables = _edge_tables(restored_side.settings, T1)
        snaps = {v: restored_side.place(v, t, T1) for v, t in tables.items()}
        r1 = bulk_materialize(restored_side.store, restored_side.settings, snaps, T1, batch_rows=11)
        snaps = {v: hset_side.place(v, t, T1) for v, t in tables.items()}
        r2 = bulk_materialize(hset_side.store, hset_side.settings, snaps, T1, batch_rows=11, redis_restore=False)
        # Every view goes through RESTORE (only the rows with 300-character strings fall back to HSET).
        assert all(v.rows_restored > 0 for v in r1.views) and sum(v.rows_restored for v in r2.views) == 0
        a, b = restored_side.redis_keys(), hset_side.redis_keys()
        strip = lambda keys, project: [k[: -len(project)] for k in keys]  # noqa: E731
        assert strip(a, restored_side.project.encode()) == strip(b, hset_side.project.encode())
        for ka, kb in zip(a, b, strict=True):
            assert restored_side.redis.dump(ka) == hset_side.redis.dump(kb), ka
            assert abs(restored_side.redis.pttl(ka) - hset_side.redis.pttl(kb)) < 60_000
    finally:
        restored_side.close()
        hset_side.close()


@pytest.mark.parametrize("strategy", ["upsert", "rebuild"])
def test_sqlite_cleanup_deletes_pairs_quiet_for_longer_than_the_ttl(tmp_path, strategy):
    online = Online(tmp_path, "sqlite", None)  # online_key_ttl = 29d
    settings, store = online.settings, online.store
    t3 = T2 + timedelta(days=30)
    a = [{"user_id": f"a{i}", "ad_id": "ad1", "imp_28d": 1} for i in range(5)]  # active at T1 only
    b = [{"user_id": f"b{i}", "ad_id": "ad1", "clk_28d": 2} for i in range(5)]  # active throughout
    stones = [{"user_id": r["user_id"], "ad_id": r["ad_id"]} for r in a]  # tombstones of a at T2
    s1 = online.place("user_ad", _ad_table(settings, a + b, T1), T1)
    s2 = online.place("user_ad", _ad_table(settings, b + stones, T2), T2)
    s3 = online.place("user_ad", _ad_table(settings, b, t3), t3)
    assert bulk_materialize(store, settings, {"user_ad": s1}, T1, sqlite_strategy=strategy).views[0].rows_deleted == 0
    r2 = bulk_materialize(store, settings, {"user_ad": s2}, T2, sqlite_strategy=strategy)
    assert r2.views[0].strategy == strategy
    assert (r2.rows_written, r2.rows_skipped, r2.views[0].rows_deleted) == (5, 5, 0)
    _check_ad_rows(online, stones, ts=T2)  # quiet pairs read as zero
    r3 = bulk_materialize(store, settings, {"user_ad": s3}, t3, sqlite_strategy=strategy)
    # a's tombstones were written at T2 < t3 - 29d: gone. b is unchanged since T1 (older than the TTL too) but
    # still in the snapshot: kept.
    assert (r3.rows_written, r3.rows_skipped, r3.views[0].rows_deleted) == (0, 5, 5)
    got = online.read("user_ad", [{"user_id": r["user_id"], "ad_id": r["ad_id"]} for r in a])
    assert set(got["imp_28d"]) == {None}
    _check_ad_rows(online, b, ts=T1)
    assert len(online.sqlite_rows("user_ad")) == 5 * len(_tier(settings).feature_columns)


# ---------------------------------------------------------------------------------------------------------------
# The runtime layout guard
# ---------------------------------------------------------------------------------------------------------------


def test_layout_guard_stops_a_wrong_encoding_before_writing(online, monkeypatch):
    settings, store = online.settings, online.store
    rows = _synthetic_rows(50)
    snap = online.place("user_ad", _ad_table(settings, rows, T1), T1)
    original = bulk.Encoders._timestamps

    def milliseconds(self, arr):  # a plausible bug: unix_timestamp_val in ms instead of s
        col = original(self, arr)
        ms = pa.array(
            [None if v is None else int(v.timestamp() * 1000) for v in arr.to_pylist()], pa.timestamp("s", tz="UTC")
        )
        return original(self, ms) if col.values is not None else col

    monkeypatch.setattr(bulk.Encoders, "_timestamps", milliseconds)
    with pytest.raises(LayoutMismatchError, match="last_imp_ts"):
        bulk_materialize(store, settings, {"user_ad": snap}, T1)
    if online.kind != "sqlite":
        assert online.redis_keys() == []
    else:
        assert online.sqlite_rows("user_ad") == []


# ---------------------------------------------------------------------------------------------------------------
# Concurrency: a serving process keeps reading while the bulk path writes
# ---------------------------------------------------------------------------------------------------------------


def test_reads_keep_working_during_a_bulk_write(online, strategy):
    import threading

    settings, store = online.settings, online.store
    first = [{"user_id": "reader", "ad_id": "ad1", "imp_28d": 1}]
    s1 = online.place("user_ad", _ad_table(settings, first, T1), T1)
    bulk_materialize(store, settings, {"user_ad": s1}, T1)
    big = first[:1] + _synthetic_rows(40_000)
    big[0] = {**big[0], "imp_28d": 2}
    s2 = online.place("user_ad", _ad_table(settings, big, T2), T2)
    reader = open_store(settings, online.repo)  # like a serving process
    refs = [f"user_ad:{f.name}" for f in reader.get_feature_view("user_ad").features]
    errors: list[Exception] = []
    seen: set = set()
    reads = 0
    reports: list = []
    thread = threading.Thread(
        target=lambda: reports.append(bulk_materialize(store, settings, {"user_ad": s2}, T2, sqlite_strategy=strategy)),
        daemon=True,
    )
    thread.start()
    while thread.is_alive():
        try:
            got = reader.get_online_features(features=refs, entity_rows=[{"user_id": "reader", "ad_id": "ad1"}])
            seen.add(got.to_dict()["imp_28d"][0])
            reads += 1
        except Exception as exc:  # every failure is recorded, not hidden
            errors.append(exc)
        time.sleep(0.01)
    thread.join()
    assert reads > 5, "the bulk write finished before the reader could overlap with it"
    assert errors == []
    assert seen <= {1, 2}  # old or new value, never anything else
    _check_ad_rows(online, big[:50], ts=T2)
    # SQLite rebuild: readers saw the old table until the commit, then the new one.
    assert reports[0].views[0].strategy == ("upsert" if online.kind != "sqlite" else strategy)


@pytest.mark.parametrize("kind", KINDS)
def test_serving_only_layout_stores_what_decide_reads_and_nothing_else(tmp_path, kind, request):
    """feast.online_features: serving — the fast reader still equals brute force; unread features read as None."""
    from freqcap.adapters.feast.fast_reader import make_reader
    from freqcap.domain.policy.engine import Candidate

    online = Online(tmp_path, kind, _redis_for(kind, request), FREQCAP__FEAST__ONLINE_FEATURES="serving")
    try:
        events_dir = tmp_path / "events"
        part = random_events(2, 300, T1 - timedelta(days=9), T1, users=range(6))
        write_events(part, events_dir / "part-0.parquet")
        events = part.to_pylist()
        settings, store = online.settings, online.store
        build = build_features(events_dir, T1, tmp_path / "features", settings.features)
        snaps = publish_snapshot(build, offline_root(online.repo))
        bulk_materialize(store, settings, snaps, T1)
        kept = bulk.serving_features(settings)
        reader = make_reader(store, settings)
        ads = [f"ad{i}" for i in range(12)]
        cands = [Candidate(a, f"c{int(a[2:]) // 3}", f"v{int(a[2:]) // 6}") for a in ads]
        from tests.bruteforce import WINDOW_SECONDS, tier_features

        for user in (f"u{i}" for i in range(6)):
            state = reader.read(user, cands)
            for (level, entity), got in state.states.items():
                want = tier_features(events, T1, level, settings.features.tier(level).half_life_seconds)
                row = want.get((user, entity), {})
                for label, seconds in WINDOW_SECONDS.items():
                    assert got.counts[seconds] == int(row.get(f"imp_{label}", 0)), (user, level, entity, label)
                assert got.conversions == int(row.get("conv_28d", 0))
        table = _tier(settings, "ad")
        out = online.read(table.name, [{"user_id": "u1", "ad_id": a} for a in ads])
        for feature in table.feature_columns:
            if feature in kept[table.name]:
                continue
            assert all(v is None for v in out[feature]), feature  # never written online
        assert any(out["imp_28d"]), "kept features are there"
        if kind != "sqlite":  # a (user, ad) hash holds exactly the kept features of user_ad plus its _ts field
            key = next(k for k in online.redis_keys() if b"ad_id" in k)
            fields = online.redis.hkeys(key)
            assert sum(not f.startswith(b"_ts:") for f in fields) == len(kept[table.name]) < len(table.feature_columns)
            assert sum(f.startswith(b"_ts:") for f in fields) == 1
    finally:
        online.close()


# ---------------------------------------------------------------------------------------------------------------
# SQLite: the rebuild strategy
# ---------------------------------------------------------------------------------------------------------------


def _schema(online: Online, view: str) -> list[tuple]:
    """The view table's and its indexes' sqlite_master rows, with this project's name taken out."""
    table = f"{online.project}_{view}"
    con = sqlite3.connect(online.repo / "online.db")
    try:
        rows = con.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY type, name", (table,)
        ).fetchall()
        leftovers = con.execute("SELECT name FROM sqlite_master WHERE name LIKE '%freqcap_old%'").fetchall()
    finally:
        con.close()
    assert leftovers == []
    return [tuple(None if v is None else v.replace(online.project, "<project>") for v in r) for r in rows]


def test_sqlite_rebuild_equals_upsert_with_most_rows_changed(tmp_path):
    """Both strategies, same three runs (full; incremental with most rows changed, keys gone and new; a plan that
    keeps fewer features): identical tables, and values/event timestamps equal to what the rows say."""
    sides = {s: Online(tmp_path, "sqlite", None, name=f"feast-{s}") for s in ("upsert", "rebuild")}
    feast_schema = _schema(sides["upsert"], "user_ad")  # as Feast's apply created it, before any write
    assert feast_schema and all(r[3] for r in feast_schema if r[0] == "table")
    t1, t2, t3 = T1, T1 + timedelta(hours=1), T1 + timedelta(hours=2)
    rows1 = _synthetic_rows(400)
    rows2 = [dict(r) for r in rows1[:360]]  # the last 40 pairs are absent from the second snapshot
    for r in rows2[:300]:  # 300 of 360 change (83 %); 60 keep their values (and their stored event_ts)
        r["imp_24h"] += 1
        r["imp_decayed"] = r["imp_decayed"] / 2
    rows2 += [{"user_id": f"new{i}", "ad_id": "ad1", "imp_28d": i + 1} for i in range(25)]
    stamps = {(r["user_id"], r["ad_id"]): t2 for r in rows2}
    stamps.update({(r["user_id"], r["ad_id"]): t1 for r in rows2[300:360]})
    reports = {}
    for name, online in sides.items():
        settings, store = online.settings, online.store
        s1 = online.place("user_ad", _ad_table(settings, rows1, t1), t1)
        s2 = online.place("user_ad", _ad_table(settings, rows2, t2), t2)
        r1 = bulk_materialize(store, settings, {"user_ad": s1}, t1, sqlite_strategy=name, batch_rows=64)
        r2 = bulk_materialize(store, settings, {"user_ad": s2}, t2, sqlite_strategy=name, batch_rows=64)
        reports[name] = (r1.views[0], r2.views[0])
        assert (r2.views[0].mode, r2.views[0].strategy) == ("incremental", name)
        assert (r2.rows_written, r2.rows_skipped) == (325, 60)
        _check_ad_rows(online, rows2, ts=stamps)  # changed: t2; unchanged: their old t1
        _check_ad_rows(online, rows1[360:], ts=t1)  # absent from the snapshot: kept as they were
    want = sides["upsert"].sqlite_rows("user_ad")
    assert len(want) == (400 + 25) * len(_tier(sides["upsert"].settings).feature_columns)
    assert sides["rebuild"].sqlite_rows("user_ad") == want
    assert _schema(sides["rebuild"], "user_ad") == feast_schema == _schema(sides["upsert"], "user_ad")

    # `online_features: serving` keeps fewer features: rows of the others stay as they are (neither strategy
    # deletes them), the kept ones are rewritten (new plan -> full write).
    rows3 = [dict(r, imp_28d=r.get("imp_28d", 0) + 7) for r in rows2]
    for name, online in sides.items():
        settings = load_settings(
            environ={
                "FREQCAP__DATA_DIR": str(tmp_path),
                "FREQCAP__FEAST__ONLINE__KIND": "sqlite",
                "FREQCAP__FEAST__PROJECT": online.project,
                "FREQCAP__FEAST__ONLINE_FEATURES": "serving",
            }
        )
        s3 = online.place("user_ad", _ad_table(settings, rows3, t3), t3)
        r3 = bulk_materialize(online.store, settings, {"user_ad": s3}, t3, sqlite_strategy=name, batch_rows=64)
        assert (r3.views[0].mode, r3.views[0].strategy) == ("full", name)
    kept = bulk.serving_features(sides["upsert"].settings)["user_ad"]
    assert "imp_28d" in kept and "imp_decayed" not in kept
    want = sides["upsert"].sqlite_rows("user_ad")
    assert sides["rebuild"].sqlite_rows("user_ad") == want
    got = sides["rebuild"].read("user_ad", [{"user_id": r["user_id"], "ad_id": r["ad_id"]} for r in rows3])
    assert got["imp_28d"] == [r["imp_28d"] for r in rows3]  # rewritten
    assert got["imp_decayed"] == [r.get("imp_decayed", 0.0) for r in rows2]  # not in the plan: as written at t2
    assert _schema(sides["rebuild"], "user_ad") == feast_schema


def test_sqlite_rebuild_failing_midway_leaves_the_old_table(online, monkeypatch):
    if online.kind != "sqlite":
        pytest.skip("SQLite only")
    settings, store = online.settings, online.store
    rows1 = _synthetic_rows(300)
    s1 = online.place("user_ad", _ad_table(settings, rows1, T1), T1)
    bulk_materialize(store, settings, {"user_ad": s1}, T1, sqlite_strategy="upsert")
    before_rows, before_schema = online.sqlite_rows("user_ad"), _schema(online, "user_ad")
    rows2 = [dict(r, imp_1h=r["imp_1h"] + 1) for r in _synthetic_rows(300, seed=9)]
    s2 = online.place("user_ad", _ad_table(settings, rows2, T2), T2)

    original = bulk.Encoders._timestamps
    calls = {"n": 0}

    def milliseconds_from_the_third_batch(self, arr):  # a real encoding bug, caught by the layout guard
        calls["n"] += 1
        if calls["n"] < 3:
            return original(self, arr)
        ms = pa.array(
            [None if v is None else int(v.timestamp() * 1000) for v in arr.to_pylist()], pa.timestamp("s", tz="UTC")
        )
        return original(self, ms)

    monkeypatch.setattr(bulk.Encoders, "_timestamps", milliseconds_from_the_third_batch)
    logged: list = []
    monkeypatch.setattr(bulk.SqliteTarget, "_execute_rebuild", _recording(bulk.SqliteTarget._execute_rebuild, logged))
    with pytest.raises(LayoutMismatchError, match="last_imp_ts"):
        bulk_materialize(store, settings, {"user_ad": s2}, T2, batch_rows=50, sqlite_strategy="rebuild")
    assert len(logged) == 2, "two batches went into the new table before the failure"
    monkeypatch.undo()
    assert online.sqlite_rows("user_ad") == before_rows
    assert _schema(online, "user_ad") == before_schema
    _check_ad_rows(online, rows1, ts=T1)  # Feast reads the old table as it was
    # "auto" with a rebuild share: a full write counts as everything changed -> rebuild; a small change -> upsert.
    r = bulk_materialize(store, settings, {"user_ad": s2}, T2, rebuild_share=0.5)
    assert (r.views[0].mode, r.views[0].strategy, r.rows_written) == ("full", "rebuild", 300)
    _check_ad_rows(online, rows2, ts=T2)
    rows3 = [dict(r, imp_24h=r["imp_24h"] + 1) if i % 10 == 0 else r for i, r in enumerate(rows2)]
    s3 = online.place("user_ad", _ad_table(settings, rows3, T2 + timedelta(hours=1)), T2 + timedelta(hours=1))
    r = bulk_materialize(store, settings, {"user_ad": s3}, T2 + timedelta(hours=1), rebuild_share=0.5)
    assert (r.views[0].mode, r.views[0].strategy, r.views[0].write_share) == ("incremental", "upsert", 0.1)
    # The default "auto" never rebuilds (REBUILD_SHARE is None: measured slower on tables in key order).
    assert (
        bulk_materialize(store, settings, {"user_ad": s3}, T2 + timedelta(hours=1), incremental=False).views[0].strategy
        == "upsert"
    )


def _recording(fn, calls: list):
    def wrapper(self, item):
        calls.append(len(item[0]))
        return fn(self, item)

    return wrapper
