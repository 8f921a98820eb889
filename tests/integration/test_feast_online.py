"""Features built, published and materialized, read back through Feast's own `get_online_features`.

Checked against the brute-force computation, with the SQLite, the Redis and the Redis Cluster online store
(Feast's `redis_type: redis_cluster`, on a local three-master cluster), across two snapshots
so that pairs which went quiet in between must read back as zero (tombstones).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.duckdb.features import build_features
from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.snapshots import publish_snapshot
from freqcap.adapters.feast.store import apply_definitions, materialize, open_store
from freqcap.config import load_settings
from freqcap.jobs.privacy import pseudonymous_events
from freqcap.layout import offline_root
from tests.bruteforce import full_row, tier_features
from tests.privacy import with_pseudonyms

T1 = datetime(2026, 10, 10, 0, 0, tzinfo=UTC)
T2 = T1 + timedelta(days=20)


def random_events(seed: int, n: int, start: datetime, end: datetime, users: range = range(15)) -> pa.Table:
    rng = np.random.default_rng(seed)
    ads = [f"ad{i}" for i in range(12)]
    camp_of = {a: f"c{int(a[2:]) // 3}" for a in ads}
    adv_of = {c: f"v{int(c[1:]) // 2}" for c in set(camp_of.values())}
    span = int((end - start).total_seconds())
    ad = rng.choice(ads, n)
    ts = [start + timedelta(seconds=int(s)) for s in rng.integers(0, span, n)]
    kind = rng.choice(["impression", "impression", "impression", "click", "conversion"], n)
    return pa.table(
        {
            "event_id": [f"{seed}-{i}" for i in range(n)],
            "event_type": kind,
            "event_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "user_id": rng.choice([f"u{i}" for i in users], n),
            "advertiser_id": [adv_of[camp_of[a]] for a in ad],
            "campaign_id": [camp_of[a] for a in ad],
            "ad_id": ad,
            "format": ["feed"] * n,
            "conversion_value": [1.5 if k == "conversion" else None for k in kind],
        }
    )


def _settings(tmp_path, kind: str, redis: str | None = None):
    env = {
        "FREQCAP__DATA_DIR": str(tmp_path),
        "FREQCAP__FEAST__ONLINE__KIND": kind,
        "FREQCAP__FEAST__PROJECT": f"t{uuid.uuid4().hex[:10]}",
    }
    if redis:
        env["FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING"] = redis
    return load_settings(environ=env)


def _run_snapshot(settings, tmp_path, events_dir, as_of, store, repo):
    """Features of `events_dir` as of `as_of`, published and materialized; the events pass the batch ingestion edge
    first (pseudonymous user ids, as in the pipeline): serving maps a request's raw id the same way."""
    source, _ = pseudonymous_events(settings, events_dir)
    build = build_features(source, as_of, tmp_path / f"features-{as_of:%Y%m%d}", settings.features)
    publish_snapshot(build, offline_root(repo))
    apply_definitions(store, settings, repo)
    materialize(store, as_of - timedelta(seconds=1), as_of + timedelta(seconds=1))
    return build


def _check_online_equals_brute_force(settings, store, events, as_of, pairs_by_level):
    for level, pairs in pairs_by_level.items():
        view = f"user_{level}"
        expected = tier_features(events, as_of, level, settings.features.tier(level).half_life_seconds)
        refs = [f"{view}:{f.name}" for f in store.get_feature_view(view).features]
        rows = [{"user_id": u, f"{level}_id": e} for u, e in sorted(pairs)]
        got = store.get_online_features(features=refs, entity_rows=rows).to_dict()
        for i, (u, e) in enumerate(sorted(pairs)):
            want = full_row(expected.get((u, e), {}))
            for col, value in want.items():
                if col == "last_imp_ts":
                    have = got[col][i]
                    assert (have is None and value is None) or have == value, (level, u, e, col, have, value)
                elif col == "imp_decayed":
                    assert math.isclose(got[col][i], value, rel_tol=1e-9, abs_tol=1e-12), (level, u, e)
                else:
                    assert got[col][i] == value, (level, u, e, col, got[col][i], value)


def _pairs(build) -> dict[str, set[tuple[str, str]]]:
    return {
        lvl: {(r["user_id"], r[f"{lvl}_id"]) for r in pq.read_table(build.paths[f"user_{lvl}"]).to_pylist()}
        for lvl in ("advertiser", "campaign", "ad")
    }


def _roundtrip(tmp_path, settings):
    events_dir = tmp_path / "events"
    # Users u7..u14 are active only more than 28 days before T2: every one of their pairs goes quiet by T2.
    old = random_events(1, 250, T1 - timedelta(days=12), T1 - timedelta(days=8, seconds=1))
    recent = random_events(2, 120, T1 - timedelta(days=1), T1 + timedelta(hours=1), users=range(7))
    late = random_events(3, 150, T2 - timedelta(days=3), T2 + timedelta(hours=2), users=range(7))  # some after T2
    parts = [old, recent, late]
    for i, part in enumerate(parts):
        write_events(part, events_dir / f"part-{i}.parquet")
    events = [row for part in parts for row in part.to_pylist()]
    repo = tmp_path / "feast"
    store = open_store(settings, repo)
    try:
        b1 = _run_snapshot(settings, tmp_path, events_dir, T1, store, repo)
        pairs1 = _pairs(b1)
        events = with_pseudonyms(settings, events)  # the brute force keyed as the store is (after the first run)
        _check_online_equals_brute_force(settings, store, events, T1, pairs1)
        b2 = _run_snapshot(settings, tmp_path, events_dir, T2, store, repo)
        pairs2 = _pairs(b2)
        quiet = {lvl: pairs1[lvl] - pairs2[lvl] for lvl in pairs1}
        assert all(quiet.values()), "the fixture must have pairs that went quiet between T1 and T2"
        both = {lvl: pairs1[lvl] | pairs2[lvl] for lvl in pairs1}
        _check_online_equals_brute_force(settings, store, events, T2, both)
    finally:
        if settings.feast.online.is_redis:
            store.teardown()


def test_sqlite_online_roundtrip(tmp_path):
    _roundtrip(tmp_path, _settings(tmp_path, "sqlite"))


@pytest.mark.redis
def test_redis_online_roundtrip(tmp_path, redis_connection_string):
    _roundtrip(tmp_path, _settings(tmp_path, "redis", redis_connection_string))


@pytest.mark.redis_cluster
def test_redis_cluster_online_roundtrip(tmp_path, redis_cluster):
    """Feast's own `redis_cluster` online store (materialize, get_online_features) as freqcap configures it."""
    settings = _settings(tmp_path, "redis_cluster", redis_cluster.connection_string)
    assert settings.feast.online.kind == "redis_cluster"
    _roundtrip(tmp_path, settings)


def test_reads_keep_working_during_materialization(tmp_path):
    """A second store (like a serving process) keeps answering while the first materializes."""
    settings = _settings(tmp_path, "sqlite")
    events_dir = tmp_path / "events"
    write_events(random_events(3, 400, T1 - timedelta(days=5), T1), events_dir / "part-0.parquet")
    repo = tmp_path / "feast"
    writer = open_store(settings, repo)
    _run_snapshot(settings, tmp_path, events_dir, T1, writer, repo)
    # A bigger second snapshot so that materialization takes a while.
    big = random_events(4, 60_000, T2 - timedelta(days=5), T2)
    write_events(big, events_dir / "part-1.parquet")
    build = build_features(events_dir, T2, tmp_path / "f2", settings.features)
    publish_snapshot(build, offline_root(repo))
    reader = open_store(settings, repo)
    refs = [f"user_ad:{f.name}" for f in reader.get_feature_view("user_ad").features]
    errors: list[Exception] = []
    reads = 0
    thread = threading.Thread(target=materialize, args=(writer, T2 - timedelta(seconds=1), T2 + timedelta(seconds=1)))
    thread.start()
    while thread.is_alive():
        try:
            reader.refresh_registry()
            reader.get_online_features(features=refs, entity_rows=[{"user_id": "u1", "ad_id": "ad1"}])
            reads += 1
        except Exception as exc:  # every failure is recorded, not hidden
            errors.append(exc)
        time.sleep(0.01)
    thread.join()
    assert reads > 5, "materialization finished before the reader could overlap with it"
    assert errors == []
