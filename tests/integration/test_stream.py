"""The streaming path against real Redis and a real Feast store: exact counts across the batch/stream seam,
deduplication, out-of-order events, dead letters, kill -9 of the worker, and serving's `stream_stale` fallback.

Brute force (tests/integration/stream_support.count_between) counts raw events; it knows the seam's documented
rule (freqcap.domain.stream.seam) but none of its code: for window W at time t, the events in (lo, t] with
lo = t - W when W is a stream window the stream fully covers (coverage <= t - W), else lo = T_b - W.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.fast_reader import RedisFeatureReader, make_reader
from freqcap.adapters.feast.store import open_store
from freqcap.adapters.stream.produce import produce
from freqcap.domain.policy.engine import Candidate
from freqcap.domain.stream.messages import event_fields
from freqcap.jobs.stream import redis_worker
from tests.bruteforce import calendar_starts
from tests.integration.stream_support import (
    cleanup_redis,
    count_between,
    heartbeating,
    jitter_order,
    stream_settings,
)
from tests.integration.test_feast_online import T1, _run_snapshot, random_events
from tests.privacy import pseudonym_of, with_pseudonyms

T_B = T1  # the batch cut-off (midnight: a multiple of the 1-minute bucket)
ADS = [f"ad{i}" for i in range(12)]
CAMP_OF = {a: f"c{int(a[2:]) // 3}" for a in ADS}
ADV_OF = {c: f"v{int(c[1:]) // 2}" for c in set(CAMP_OF.values())}
CANDIDATES = [Candidate(a, CAMP_OF[a], ADV_OF[CAMP_OF[a]]) for a in ADS]
USERS = [f"u{i}" for i in range(15)]
WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "28d": 28 * 86400}
STREAM_WINDOWS = {"1h", "24h"}


def _world(tmp_path):
    """History up to T_B (batch) and five hours after it (stream)."""
    history = [
        random_events(1, 400, T_B - timedelta(days=20), T_B),
        random_events(2, 300, T_B - timedelta(hours=30), T_B + timedelta(seconds=1)),  # some exactly at T_B
    ]
    live = random_events(3, 900, T_B + timedelta(seconds=1), T_B + timedelta(hours=5))
    events_dir = tmp_path / "events"
    for i, part in enumerate(history):
        write_events(part, events_dir / f"part-{i}.parquet")
    rows = [r for part in (*history, live) for r in part.to_pylist()]
    stream_rows = [r for r in rows if r["event_ts"] > T_B]
    return events_dir, rows, stream_rows


def _expected(rows, key, t, kind="impression"):
    out = {}
    for label, w in WINDOWS.items():
        alone = label in STREAM_WINDOWS and t - timedelta(seconds=w) >= T_B
        lo = t - timedelta(seconds=w) if alone else T_B - timedelta(seconds=w)
        out[w] = count_between(rows, key, kind, lo, t)
    # Calendar windows (UTC, the default zone): every event since the start of t's day, week, month.
    for period, start in calendar_starts(t).items():
        out[(period, "UTC")] = count_between(rows, key, kind, start, t)
    return out


def _check_resolved(reader, rows, t, pseudonym):
    checked = nonzero_stream = 0
    for user in USERS:
        state = reader.read(pseudonym(user), CANDIDATES, at=t)  # stored by pseudonym; brute force by raw id
        assert not state.stream_stale, "a fresh, covering stream must be used"
        for (level, entity), got in state.states.items():
            key = (level, user, entity)
            assert dict(got.counts) == _expected(rows, key, t), (key, t)
            conv = count_between(rows, key, "conversion", T_B - timedelta(days=28), t)
            assert got.conversions == conv, (key, t)
            imps = [
                e["event_ts"]
                for e in rows
                if e["event_type"] == "impression"
                and e["user_id"] == user
                and e[f"{level}_id"] == entity
                and e["event_ts"] <= t
                and e["event_ts"] > T_B - timedelta(days=28)
            ]
            want_last = max(imps) if imps else None
            if want_last is None:
                assert got.last_imp_ts is None, key
            else:  # exact, or (a replay asking about the past) the end of the newest bucket before t
                assert want_last <= got.last_imp_ts < want_last + timedelta(minutes=1), (key, got.last_imp_ts)
            checked += 1
            nonzero_stream += count_between(rows, key, "impression", T_B, t) > 0
    return checked, nonzero_stream


@pytest.fixture
def redis_client(redis_connection_string):
    host, port = redis_connection_string.split(":")
    return redis.Redis(host=host, port=int(port))


def test_seam_counts_equal_brute_force_with_duplicates_and_disorder(tmp_path, redis_connection_string, redis_client):
    settings, _ = stream_settings(tmp_path, redis_connection_string)
    events_dir, rows, stream_rows = _world(tmp_path)
    repo = tmp_path / "feast"
    store = open_store(settings, repo)
    try:
        _run_snapshot(settings, tmp_path, events_dir, T_B, store, repo)
        # Out of order within the lateness, and 15 % of events delivered twice (later, as a redelivery would be).
        ordered = jitter_order(stream_rows, timedelta(minutes=10), seed=5)
        messages = [event_fields(r) for r in ordered]
        rng = random.Random(9)
        for i in rng.sample(range(len(messages)), k=len(messages) * 15 // 100):
            messages.insert(min(len(messages), i + rng.randint(1, 40)), dict(messages[i]))
        produce(redis_client, settings.stream.stream_key, messages, coverage_start=T_B)
        with redis_worker(settings, store, consumer="c1") as worker:
            stats = worker.run(until_caught_up=True)
        assert stats.applied == len(stream_rows)
        assert stats.duplicates + stats.late == len(messages) - len(stream_rows)
        assert stats.dead_letters == stats.late  # nothing malformed here

        reader = make_reader(store, settings)
        assert isinstance(reader, RedisFeatureReader) and reader.reads_stream
        total = 0
        for t in (
            T_B + timedelta(minutes=20),
            T_B + timedelta(hours=1),
            T_B + timedelta(hours=2, minutes=30),
            T_B + timedelta(hours=5),
        ):
            checked, nonzero = _check_resolved(reader, rows, t, pseudonym_of(settings))
            total += checked
            if t > T_B + timedelta(hours=1):
                assert nonzero > 50, "the fixture must put stream events on many pairs"
        assert total > 500
    finally:
        store.teardown()
        cleanup_redis(redis_client, settings)


def test_serving_flags_stream_stale_and_answers_from_batch(tmp_path, redis_connection_string, redis_client):
    from fastapi.testclient import TestClient

    from freqcap.api.app import create_app
    from tests.integration.test_serving import TOKEN, write_policy

    settings, _ = stream_settings(tmp_path, redis_connection_string, max_lag="2s", status_refresh="0.1s")
    events_dir, rows, stream_rows = _world(tmp_path)
    repo = tmp_path / "feast"
    store = open_store(settings, repo)
    try:
        _run_snapshot(settings, tmp_path, events_dir, T_B, store, repo)
        produce(redis_client, settings.stream.stream_key, [event_fields(r) for r in stream_rows], coverage_start=T_B)
        reader = make_reader(store, settings)
        policy = write_policy(tmp_path)
        # A generous lookup budget: this test is about the stream going stale, and with the default 10 ms one
        # slow lookup on a loaded 2-core box answered `timeout` first (a fail-open, not what is checked here).
        app = create_app(settings, policy_path=policy, reader=reader, admin_token=TOKEN, budget_ms=1000)
        t = T_B + timedelta(hours=5)
        body = {
            "user_id": "u3",
            "context": {"format": "feed", "ts": t.isoformat()},
            "candidates": [
                {"ad_id": c.ad_id, "campaign_id": c.campaign_id, "advertiser_id": c.advertiser_id} for c in CANDIDATES
            ],
        }
        with TestClient(app) as client, redis_worker(settings, store, consumer="c1") as worker:
            worker.run(until_caught_up=True)
            with heartbeating(worker) as stop_worker:  # live until the fresh answer is in
                deadline = time.monotonic() + 30
                while (fresh := client.post("/v1/decide", json=body).json())["degraded"]:
                    assert time.monotonic() < deadline, f"never fresh with a live worker: {fresh}"
                    time.sleep(0.05)
                stop_worker()
            # The worker is stopped: within max_lag (+ one status refresh) serving says so and uses batch alone.
            stopped = time.monotonic()
            while True:
                out = client.post("/v1/decide", json=body).json()
                if out["degraded"]:
                    break
                assert time.monotonic() - stopped < 2.0 + 0.1 + 1.0, "stream_stale not flagged within one lag"
                time.sleep(0.05)
            assert out["degraded_reason"] == "stream_stale"
            assert all(d["penalty"] is not None for d in out["decisions"])  # real decisions, not fail-open
            metrics = client.get("/metrics").text
            assert "freqcap_decide_stream_stale_total" in metrics
        state = reader.read(pseudonym_of(settings)("u3"), CANDIDATES, at=t)
        assert state.stream_stale
        for (level, entity), got in state.states.items():
            key = (level, "u3", entity)
            for w in WINDOWS.values():  # batch alone: the counts as of T_B
                assert got.counts[w] == count_between(rows, key, "impression", T_B - timedelta(seconds=w), T_B)
    finally:
        store.teardown()
        cleanup_redis(redis_client, settings)


BAD_MESSAGES = [
    (
        {
            "event_type": "impression",
            "event_ts": "2026-10-10T01:00:00+00:00",
            "user_id": "u1",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "ad0",
            "format": "feed",
        },
        "missing_event_id",
    ),
    (
        {
            "event_id": "b2",
            "event_type": "view",
            "event_ts": "2026-10-10T01:00:00+00:00",
            "user_id": "u1",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "ad0",
            "format": "feed",
        },
        "bad_event_type",
    ),
    (
        {
            "event_id": "b3",
            "event_type": "impression",
            "event_ts": "yesterday",
            "user_id": "u1",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "ad0",
            "format": "feed",
        },
        "bad_event_ts",
    ),
    (
        {
            "event_id": "b4",
            "event_type": "impression",
            "event_ts": "2026-10-10T01:00:00",
            "user_id": "u1",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "ad0",
            "format": "feed",
        },
        "bad_event_ts",
    ),  # naive
    (
        {
            "event_id": "b5",
            "event_type": "impression",
            "event_ts": "1e20",
            "user_id": "u1",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "ad0",
            "format": "feed",
        },
        "bad_event_ts",
    ),
    (
        {
            "event_id": "b6",
            "event_type": "click",
            "event_ts": "2026-10-10T01:00:00Z",
            "user_id": "u1",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "",
            "format": "feed",
        },
        "missing_ad_id",
    ),
    (
        {
            "event_id": "b7",
            "event_type": "impression",
            "event_ts": "2026-10-10T01:00:00Z",
            "user_id": b"\xff\xfe",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "ad0",
            "format": "feed",
        },
        "bad_encoding_user_id",
    ),
    (
        {
            "event_id": "x" * 300,
            "event_type": "impression",
            "event_ts": "2026-10-10T01:00:00Z",
            "user_id": "u1",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "ad0",
            "format": "feed",
        },
        "too_long_event_id",
    ),
    (
        {
            "event_id": "b9",
            "event_type": "impression",
            "event_ts": "2026-10-10T01:00:00Z",
            "user_id": "u1",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "ad0",
            "format": "billboard",
        },
        "bad_format",
    ),
    (
        {
            "event_id": "b10",
            "event_type": "conversion",
            "event_ts": "2026-10-10T01:00:00Z",
            "user_id": "u1",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "ad0",
            "format": "feed",
            "conversion_value": "nan",
        },
        "bad_conversion_value",
    ),
    # Older than the watermark (02:00 below) minus the 10-minute lateness.
    (
        {
            "event_id": "b11",
            "event_type": "impression",
            "event_ts": "2026-10-10T01:00:00Z",
            "user_id": "u1",
            "advertiser_id": "v0",
            "campaign_id": "c0",
            "ad_id": "ad0",
            "format": "feed",
        },
        "late",
    ),
]


def test_malformed_and_late_messages_go_to_the_dead_letter_stream(tmp_path, redis_connection_string, redis_client):
    settings, _ = stream_settings(tmp_path, redis_connection_string)
    store = open_store(settings, tmp_path / "feast")
    from freqcap.adapters.feast.store import apply_definitions

    apply_definitions(store, settings, tmp_path / "feast")
    good = {
        "event_id": "g1",
        "event_type": "impression",
        "event_ts": "2026-10-10T02:00:00Z",
        "user_id": "u1",
        "advertiser_id": "v0",
        "campaign_id": "c0",
        "ad_id": "ad0",
        "format": "feed",
    }
    good2 = dict(good, event_id="g2", event_ts="2026-10-10T01:55:00Z")  # out of order, within lateness
    try:
        stream = settings.stream.stream_key
        redis_client.xadd(stream, good)
        for fields, _ in BAD_MESSAGES:
            redis_client.xadd(stream, fields)
        redis_client.xadd(stream, good2)
        with redis_worker(settings, store, consumer="c1") as worker:
            stats = worker.run(until_caught_up=True)
        assert stats.applied == 2 and stats.dead_letters == len(BAD_MESSAGES)
        dead = redis_client.xrange(settings.stream.dead_letter_key)
        reasons = [fields[b"_reason"].decode() for _, fields in dead]
        assert reasons == [reason for _, reason in BAD_MESSAGES]
        assert all(fields[b"_source_stream"].decode() == stream for _, fields in dead)
        # Dead letters keep the pseudonym, never the raw id; a user id that is not text is dropped, not kept.
        pseudonym = pseudonym_of(settings)
        for (fields, _), (_, kept) in zip(BAD_MESSAGES, dead, strict=True):
            raw = fields.get("user_id")
            if isinstance(raw, str):
                assert kept[b"user_id"].decode() == pseudonym(raw), kept
            else:
                assert b"user_id" not in kept, kept
        # Nothing pending: every message was acknowledged, dead or alive.
        assert redis_client.xpending(stream, settings.stream.group)["pending"] == 0
        status = redis_client.hgetall(f"{settings.stream.state_prefix}:{{p0}}:status")  # the one partition's
        assert int(status[b"dead_letters"]) == len(BAD_MESSAGES) and int(status[b"applied"]) == 2
        assert int(status[b"late"]) == 1
        by_reason: dict[str, int] = {}  # per-field reasons are grouped: missing_ad_id -> missing
        for _, reason in BAD_MESSAGES:
            group = next((g for g in ("missing", "too_long", "bad_encoding") if reason.startswith(g + "_")), reason)
            by_reason[group] = by_reason.get(group, 0) + 1
        assert {k.decode()[5:]: int(v) for k, v in status.items() if k.startswith(b"dead:")} == by_reason
    finally:
        store.teardown()
        cleanup_redis(redis_client, settings)


def _state_buckets(client, settings, rows, store):
    """Brute-force bucket counts per pair from unique events vs the worker's Redis state (one partition), as two
    dicts keyed by (level, user, entity). The state is the pair's state key, or, where the worker keeps none
    (`push_mode: direct` to Redis: the online rows are the state), the pair's stream row read raw from Redis."""
    from freqcap.adapters.feast.stream_push import RedisDirectPusher
    from freqcap.adapters.feast.stream_push import state_counts as decode_pair
    from freqcap.domain.stream.buckets import KINDS, bucket_end

    want: dict = {}
    for e in rows:
        ts_us = int(e["event_ts"].timestamp() * 1_000_000)
        for level in ("advertiser", "campaign", "ad"):
            key = (level, e["user_id"], e[f"{level}_id"])
            field = f"{KINDS[e['event_type']]}:{bucket_end(ts_us, 60)}"
            want.setdefault(key, {}).setdefault(field, 0)
            want[key][field] += 1
    got = {}
    base = f"{settings.stream.state_prefix}:{{p0}}:s:"
    assert not client.exists(f"{settings.stream.state_prefix}:{{p0}}:pending")  # everything pushed
    from_rows = RedisDirectPusher(store, client, None).read_counts(sorted(want))
    for key in want:
        blob = client.get(f"{base}{key[0]}:{key[1]}\x1f{key[2]}")
        pair = decode_pair(blob) if blob else from_rows.get(key)
        got[key] = {f"{k}:{e}": n for k, b in pair.buckets.items() for e, n in b.items()} if pair else {}
    return want, got


@pytest.mark.parametrize("overlap", [True, False])
def test_the_push_overlaps_the_next_micro_batch_and_the_counts_stay_exact(
    tmp_path, redis_connection_string, redis_client, overlap
):
    """A backlog in micro-batches of 100 (units of 40, re-sent duplicates across units and batches): with
    `overlap_push` most pushes land while the next micro-batch is decided, none without it; either way every pair's
    state equals brute force over the distinct events, and /metrics shows the overlap."""
    import httpx

    from freqcap.adapters.feast.store import apply_definitions
    from freqcap.api.live import free_port
    from freqcap.jobs.stream import metrics_server

    settings, _ = stream_settings(
        tmp_path,
        redis_connection_string,
        batch_size="100",
        flush_events="100",
        commit_events="40",
        overlap_push=str(overlap).lower(),
    )
    rows = [r for r in random_events(11, 3000, T_B, T_B + timedelta(hours=5)).to_pylist()]
    rows = [dict(r, event_id=f"o{i}") for i, r in enumerate(rows)]
    rng = random.Random(11)
    messages = [event_fields(r) for r in jitter_order(rows, timedelta(minutes=5), seed=11)]
    for i in rng.sample(range(len(messages)), 300):  # a duplicate 1-150 entries later: same unit, next ones, next batch
        messages.insert(min(len(messages), i + rng.randint(1, 150)), dict(messages[i]))
    store = open_store(settings, tmp_path / "feast")
    apply_definitions(store, settings, tmp_path / "feast")
    produce(redis_client, settings.stream.stream_key, messages, coverage_start=T_B)
    try:
        with redis_worker(settings, store, consumer="o1") as worker:
            stats = worker.run(until_caught_up=True)
            with metrics_server(worker, settings, free_port("127.0.0.1")) as port:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        batches = stats.batches
        assert batches >= len(messages) // 100
        if overlap:
            assert stats.pushes_overlapped >= batches // 2, (stats.pushes_overlapped, batches)
        else:
            assert stats.pushes_overlapped == 0 and stats.push_wait_seconds == 0
        assert f"freqcap_stream_pushes_overlapped_total {stats.pushes_overlapped}" in text
        assert "freqcap_stream_push_wait_seconds_total " in text
        assert stats.applied == len(rows) and stats.duplicates == 300
        want, got = _state_buckets(redis_client, settings, with_pseudonyms(settings, rows), store)
        assert got == want
    finally:
        store.teardown()
        cleanup_redis(redis_client, settings)


def test_a_full_pair_cache_evicts_unpinned_pairs_and_the_counts_stay_exact(
    tmp_path, redis_connection_string, redis_client
):
    """`stream.cache_pairs` below the partition's pairs (270 pairs, a cache of 160, micro-batches of 20 events):
    the worker evicts, oldest first and never a pair in use (this unit's, unpushed or being pushed), and reads
    evicted pairs back from their rows. The cache stays within its bound at every commit and every pair's state
    equals brute force over the distinct events (an evicted pair still to be pushed would come back older)."""
    settings, _ = stream_settings(
        tmp_path,
        redis_connection_string,
        batch_size="20",
        flush_events="20",
        commit_events="10",
        cache_pairs="160",
    )
    rows = [
        dict(r, event_id=f"c{i}")
        for i, r in enumerate(random_events(13, 3000, T_B, T_B + timedelta(hours=5)).to_pylist())
    ]
    pairs = {(lv, r["user_id"], r[f"{lv}_id"]) for r in rows for lv in ("advertiser", "campaign", "ad")}
    assert len(pairs) > 160
    messages = [event_fields(r) for r in jitter_order(rows, timedelta(minutes=5), seed=13)]
    store = open_store(settings, tmp_path / "feast")
    from freqcap.adapters.feast.store import apply_definitions

    apply_definitions(store, settings, tmp_path / "feast")
    produce(redis_client, settings.stream.stream_key, messages, coverage_start=T_B)
    sizes: list[int] = []
    running: dict[str, object] = {}

    def at(stage: str) -> None:  # the cache's size after every commit
        if stage == "commit":
            sizes.append(max(len(c.cache) for c in running["worker"].consumers.values()))

    try:
        with redis_worker(settings, store, consumer="e1", crash_hook=at) as worker:
            running["worker"] = worker
            stats = worker.run(until_caught_up=True)
        assert stats.applied == len(rows)
        assert stats.evicted > 0 and sizes and max(sizes) <= 160, (stats.evicted, max(sizes, default=None))
        want, got = _state_buckets(redis_client, settings, with_pseudonyms(settings, rows), store)
        assert got == want
    finally:
        store.teardown()
        cleanup_redis(redis_client, settings)


def test_kill_9_mid_stream_then_restart_gives_exact_counts(tmp_path, redis_connection_string, redis_client):
    settings, env = stream_settings(
        tmp_path, redis_connection_string, batch_size="100", flush_events="100", push_interval="0.05s"
    )
    _, _, stream_rows = _world(tmp_path)
    many = stream_rows + [r for r in random_events(7, 6000, T_B, T_B + timedelta(hours=5)).to_pylist()]
    many = [dict(r, event_id=f"k{i}") for i, r in enumerate(many) if r["event_ts"] > T_B]
    store = open_store(settings, tmp_path / "feast")
    from freqcap.adapters.feast.store import apply_definitions

    apply_definitions(store, settings, tmp_path / "feast")
    messages = [event_fields(r) for r in jitter_order(many, timedelta(minutes=10), seed=3)]
    produce(redis_client, settings.stream.stream_key, messages, coverage_start=T_B)
    cmd = [sys.executable, "-m", "freqcap.cli", "stream", "--consumer", "w1", "--until-caught-up"]
    proc_env = dict(os.environ, **env)
    status_key = f"{settings.stream.state_prefix}:{{p0}}:status"
    try:
        kills = 0
        for _ in range(2):  # kill it twice, at different points
            proc = subprocess.Popen(cmd, env=proc_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            before = int(redis_client.hget(status_key, "applied") or 0)
            deadline = time.monotonic() + 120
            while int(redis_client.hget(status_key, "applied") or 0) < before + 1500:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "worker made no progress"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
        applied_at_kill = int(redis_client.hget(status_key, "applied"))
        assert 0 < applied_at_kill < len(many), "the kills must land mid-stream"
        pending = redis_client.xpending(settings.stream.stream_key, settings.stream.group)["pending"]
        done = subprocess.run(cmd, env=proc_env, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        # Keyed by pseudonym: the worker's Redis state and Feast's stream rows hold no raw id.
        want, got = _state_buckets(redis_client, settings, with_pseudonyms(settings, many), store)
        assert got == want
        assert int(redis_client.hget(status_key, "applied")) == len(many)
        assert redis_client.xpending(settings.stream.stream_key, settings.stream.group)["pending"] == 0
        # What Feast serves equals the state: read the pushed stream rows back through get_online_features.
        sample = random.Random(1).sample(sorted(want), 40)
        for key in sample:
            level, user, entity = key
            out = store.get_online_features(
                features=[f"user_{level}_stream:imp_buckets", f"user_{level}_stream:imp_counts"],
                entity_rows=[{"user_id": user, f"{level}_id": entity}],
            ).to_dict()
            imp = {int(f[2:]): n for f, n in want[key].items() if f.startswith("i:")}
            assert dict(zip(out["imp_buckets"][0] or [], out["imp_counts"][0] or [], strict=True)) == imp, key
        print(f"kills={kills} applied_at_last_kill={applied_at_kill} pending_at_restart={pending}")
    finally:
        store.teardown()
        cleanup_redis(redis_client, settings)


def test_redis_and_memory_partition_state_agree_on_flushes_replays_and_fencing(
    tmp_path, redis_connection_string, redis_client
):
    """The atomic flush script and the in-memory state are one specification: the same flush units give the same
    outcome (written, replayed: nothing written, fenced: nothing written), the same marks, pairs and counters."""
    from freqcap.adapters.feast.stream_push import StreamRowEncoder, state_blob, state_counts
    from freqcap.adapters.stream.ownership import LeaseOwnership
    from freqcap.adapters.stream.state import (
        FENCED,
        REPLAYED,
        WRITTEN,
        FlushUnit,
        MemoryPartitionState,
        RedisPartitionState,
        pack_pending,
    )
    from freqcap.domain.stream.buckets import PairCounts

    encoder = StreamRowEncoder()

    def blob(pair):
        return state_blob(encoder.values(pair), pair.last_imp_us)

    settings, _ = stream_settings(tmp_path, redis_connection_string)
    cfg = settings.stream
    rng = random.Random(4)
    owner = LeaseOwnership(redis_client, cfg.state_prefix, 1, "w1", 30)
    token = owner.acquire(0)
    red = RedisPartitionState(redis_client, cfg.state_prefix, 0, dedup_ttl_s=3600, retention_s=7200)
    mem = MemoryPartitionState(0)
    pairs: dict = {}
    marked: set = set()
    try:
        for b in range(1, 30):
            changed = []
            for _ in range(rng.randint(0, 40)):
                key = (rng.choice(["ad", "campaign"]), f"u{rng.randrange(30)}", f"e{rng.randrange(4)}")
                pair = pairs.setdefault(key, PairCounts())
                pair.add(rng.choice("iicv"), (1_790_000_000 + rng.randrange(7200)) * 1_000_000, 60)
                changed.append(key)
            ids = [f"id{b}-{i}" for i in range(rng.randint(0, 60))]
            unit = FlushUnit(
                token,
                f"{b * 10}-0",
                f"{b * 10 + 5}-1",
                1_790_000_000_000_000 + b,
                ids,
                [(k, blob(pairs[k])) for k in dict.fromkeys(changed)],
                {"applied": len(ids), "late": b % 3},
            )
            assert red.commit(unit) == mem.commit(unit) == WRITTEN
            marked.update(ids)
            replay = FlushUnit(token, f"{b * 10 + 5}-1", f"{b * 10 + 5}-1", None, ["never"], [], {"applied": 1})
            assert red.commit(replay) == mem.commit(replay) == REPLAYED  # not newer than the last applied entry
        assert red.commit(FlushUnit("w9:99", "99999-0", "99999-0", None, ["never"], [], {"applied": 1})) == FENCED
        probe = [*sorted(marked)[:50], "never", "other"]
        assert red.seen(probe) == mem.seen(probe) == set(sorted(marked)[:50])
        keys = sorted(pairs)
        got_r, got_m = red.read_pairs(keys), mem.read_pairs(keys)
        for key in keys:  # brute force: the pairs as built
            r, m = state_counts(got_r[key]), state_counts(got_m[key])
            assert r.buckets == m.buckets == pairs[key].buckets, key
            assert r.last_imp_us == m.last_imp_us == pairs[key].last_imp_us
        status = {k.decode(): int(v) for k, v in red.status().items() if k != b"last_id"}
        assert status["applied"] == len(marked) == mem.counters["applied"]
        assert status["late"] == sum(b % 3 for b in range(1, 30)) == mem.counters["late"]
        assert red.load().last_id == mem.load().last_id == "295-1"
        assert set(red.load().unpushed) == set(keys)  # written, push not finished
        red.pushed("w9:99")  # a fenced worker finishing its push late clears nothing
        assert set(red.load().unpushed) == set(keys)
        red.pushed(token)
        assert red.load().unpushed == []
        # The pending log (online rows as the state): units append the pairs' states; the last record of a pair
        # is its state, whatever units came before.
        logged: dict = {}
        for b in range(30, 40):
            changed = {}
            for _ in range(rng.randint(1, 20)):
                key = (rng.choice(["ad", "campaign"]), f"p{rng.randrange(10)}", f"e{rng.randrange(3)}")
                pair = logged.setdefault(key, PairCounts())
                pair.add(rng.choice("iicv"), (1_790_000_000 + rng.randrange(7200)) * 1_000_000, 60)
                changed[key] = pair
            unit = FlushUnit(
                token, f"{b * 10}-0", f"{b * 10}-1", None, [], [], {}, pending=pack_pending(red.base, changed.items())
            )
            assert red.commit(unit) == WRITTEN
        assert red.load().pending == {k: (v.buckets, v.last_imp_us) for k, v in logged.items()}
        assert red.read_pairs(sorted(logged)) == {}  # no state key written for them
        red.pushed("w9:99")
        assert len(red.load().pending) == len(logged)
        red.pushed(token)
        assert red.load().pending == {}
    finally:
        cleanup_redis(redis_client, settings)


def _feast_push_bytes(store, redis_client, direct, rows):
    """`FeatureStore.push` the rows, return the stored hashes and delete them (the reference the writers must match)."""
    from freqcap.adapters.feast.stream_push import FeastPusher

    FeastPusher(store).push(rows)
    keys = [direct.redis_key(p.level, p.user_id, p.entity_id) for p, _ in rows]
    stored = [redis_client.hgetall(k) for k in keys]
    redis_client.delete(*keys)
    return stored


def _assert_same_feature_bytes(redis_client, direct, pairs, via_feast):
    """Every feature field byte-identical to what `push` stored (the `_ts` write time differs by design)."""
    for p, theirs in zip(pairs, via_feast, strict=True):
        mine = redis_client.hgetall(direct.redis_key(p.level, p.user_id, p.entity_id))
        assert set(mine) == set(theirs) and len(mine) == 8  # 7 features + _ts
        for field, value in theirs.items():
            if not field.startswith(b"_ts:"):
                assert mine[field] == value, (p, field)


def test_direct_push_writes_the_bytes_feast_push_writes(tmp_path, redis_connection_string, redis_client):
    from freqcap.adapters.feast.store import apply_definitions
    from freqcap.adapters.feast.stream_push import PairState, RedisDirectPusher, pair_row

    settings, _ = stream_settings(tmp_path, redis_connection_string)
    store = open_store(settings, tmp_path / "feast")
    apply_definitions(store, settings, tmp_path / "feast")
    pairs = [
        PairState("ad", "u1", "ad0", {"i": {120: 2, 180: 1}, "c": {}, "v": {180: 1}}, 1_790_000_170_000_000),
        PairState("campaign", "ünï", "c0", {"i": {60: 1}, "c": {60: 1}, "v": {}}, 1_790_000_001_000_000),
        PairState("advertiser", "u2", "v0", {"i": {}, "c": {60: 3}, "v": {}}, None),
    ]
    rows = [(p, pair_row(p, 0)[0]) for p in pairs]
    direct = RedisDirectPusher(store, redis_client, key_ttl_seconds=3600)
    try:
        via_feast = _feast_push_bytes(store, redis_client, direct, rows)
        direct.push(rows)
        _assert_same_feature_bytes(redis_client, direct, pairs, via_feast)
        # And Feast reads the direct write back as the same values.
        out = store.get_online_features(
            features=["user_ad_stream:imp_buckets", "user_ad_stream:imp_counts", "user_ad_stream:last_imp_ts"],
            entity_rows=[{"user_id": "u1", "ad_id": "ad0"}],
        ).to_dict()
        assert out["imp_buckets"][0] == [120, 180] and out["imp_counts"][0] == [2, 1]
        assert out["last_imp_ts"][0] == datetime.fromtimestamp(1_790_000_170, UTC)
    finally:
        store.teardown()


def test_push_values_writes_only_the_values_that_changed_since_the_last_write(
    tmp_path, redis_connection_string, redis_client
):
    """With the caller's memory of what it wrote, a second push of a pair sends only its changed values: a field
    removed behind the writer's back stays removed (it was not sent), the changed ones equal what Feast's own push
    stores for the new state. Without the memory the whole row is written again."""
    from freqcap.adapters.feast.store import apply_definitions
    from freqcap.adapters.feast.stream_push import PairState, RedisDirectPusher, StreamRowEncoder, pair_row
    from freqcap.domain.stream.buckets import PairCounts

    settings, _ = stream_settings(tmp_path, redis_connection_string)
    store = open_store(settings, tmp_path / "feast")
    apply_definitions(store, settings, tmp_path / "feast")
    direct, encoder = RedisDirectPusher(store, redis_client, key_ttl_seconds=3600), StreamRowEncoder()
    key = ("ad", "u7", "ad3")
    pair = PairCounts()
    for kind, ts in (("i", 1_790_000_010), ("c", 1_790_000_020), ("v", 1_790_000_030)):
        pair.add(kind, ts * 1_000_000, 60)
    written: dict = {}
    redis_key = direct.redis_key(*key)
    try:
        direct.push_values([(key, pair, encoder.values(pair))], written)
        assert len(redis_client.hgetall(redis_key)) == 8  # first write: whole
        clk_counts = direct.fields["ad"].features[3]  # STREAM_FEATURES order: imp, clk, conv lists, last impression
        clk_counts = clk_counts if isinstance(clk_counts, bytes) else clk_counts.encode()
        assert redis_client.hdel(redis_key, clk_counts) == 1
        pair.add("i", 1_790_000_100 * 1_000_000, 60)  # an impression: impression lists and last impression change
        direct.push_values([(key, pair, encoder.values(pair))], written)
        after = redis_client.hgetall(redis_key)
        assert clk_counts not in after and len(after) == 7
        state = PairState(*key, pair.buckets, pair.last_imp_us)
        reference = _feast_push_bytes(store, redis_client, direct, [(state, pair_row(state, 0)[0])])[0]
        direct.push_values([(key, pair, encoder.values(pair))])  # no memory: whole
        assert {f: v for f, v in redis_client.hgetall(redis_key).items() if not f.startswith(b"_ts:")} == {
            f: v for f, v in reference.items() if not f.startswith(b"_ts:")
        }
        assert clk_counts in reference
    finally:
        store.teardown()
        redis_client.delete(redis_key)


def test_prepare_pairs_in_c_builds_what_the_python_path_builds(
    tmp_path, redis_connection_string, redis_client, monkeypatch
):
    """The worker's push in one C pass (`push_rows`: encode, diff against what was written, HSET, EXPIRE when due)
    against the Python steps it replaces (`FREQCAP_NATIVE=off`): the same commands but for the row's write time,
    the same keys and values; counts beyond 64 bits take the Python encoder; written, they read back as the states."""
    import hiredis

    from freqcap.adapters.feast.store import apply_definitions
    from freqcap.adapters.feast.stream_push import RedisDirectPusher, StreamRowEncoder
    from freqcap.domain.stream.buckets import PairCounts

    settings, _ = stream_settings(tmp_path, redis_connection_string)
    store = open_store(settings, tmp_path / "feast")
    apply_definitions(store, settings, tmp_path / "feast")
    rng = random.Random(3)
    cache = {}
    for i in range(400):
        pair = PairCounts()
        for kind in "icv":
            for _ in range(rng.choice([0, 1, 1, 3, 20])):
                pair.buckets[kind][1_790_000_000 + 60 * rng.randrange(500)] = rng.choice(
                    [1, 2, 7, 1 << 70 if i == 5 else 1]
                )
        pair.last_imp_us = rng.choice([None, 1_790_000_000_000_000 + rng.randrange(10**9)])
        cache[(rng.choice(["advertiser", "campaign", "ad"]), f"pp-u{i % 40}-é", f"e{i}")] = pair
    pairs = list(cache)

    def build(native: str):
        monkeypatch.setenv("FREQCAP_NATIVE", native)
        direct, encoder = RedisDirectPusher(store, redis_client, key_ttl_seconds=3600), StreamRowEncoder()
        # What was written before: an older state for a third of the pairs, nothing for the rest.
        older = {k: encoder.values(PairCounts({"i": {1_790_000_000: 1}, "c": {}, "v": {}}, None)) for k in pairs[::3]}
        for k in pairs[:100]:  # some Feast keys already known
            direct.redis_key(*k)
        return direct, encoder, older

    c_direct, c_encoder, c_written = build("on")
    assert c_encoder.compiled, "the row codec is not built in this install"
    py_direct, py_encoder, py_written = build("off")
    assert not py_encoder.compiled
    ts_field = {f.ts.encode() if isinstance(f.ts, str) else f.ts for f in c_direct.fields.values()}

    def parsed(commands):  # each command's arguments, the write time's value masked
        out = []
        for command in commands:
            reader = hiredis.Reader()
            reader.feed(command)
            args = reader.gets()
            out.append([b"<ts>" if i > 0 and args[i - 1] in ts_field else a for i, a in enumerate(args)])
        return out

    keys = []
    try:
        for round_ in range(2):  # the second round: the TTLs were refreshed, no EXPIRE
            c_commands, c_keys, c_values = c_direct.prepare_pairs(pairs, cache, c_encoder, c_written)
            py_commands, py_keys, py_values = py_direct.prepare_pairs(pairs, cache, py_encoder, py_written)
            assert parsed(c_commands) == parsed(py_commands)
            assert c_keys == py_keys and c_values == py_values
            expires = sum(a[0] == b"EXPIRE" for a in parsed(c_commands))
            assert expires == (len(pairs) if round_ == 0 else 0)
            assert len(c_commands) == len(pairs) + expires
            c_written.update(zip(pairs, c_values, strict=True))
            py_written.update(zip(pairs, py_values, strict=True))
        # A pair changed since: only its changed values, in both.
        cache[pairs[7]].add("i", 1_790_000_999_000_000, 60)
        changed = [pairs[7], pairs[8]]
        c_commands, _, _ = c_direct.prepare_pairs(changed, cache, c_encoder, c_written)
        py_commands, _, _ = py_direct.prepare_pairs(changed, cache, py_encoder, py_written)
        assert parsed(c_commands) == parsed(py_commands)
        assert len(parsed(c_commands)[0]) == 2 + 2 + 2 * 3  # key, time, the impression lists and last impression
        assert len(parsed(c_commands)[1]) == 2 + 2  # nothing changed: the time alone
        # Written whole, the rows read back as the states (whole seconds of the last impression).
        c_commands, keys, _ = c_direct.prepare_pairs(pairs, cache, c_encoder, {})
        c_direct.send(c_commands, keys)
        back = c_direct.read_counts(pairs)
        assert any(n >= 1 << 64 for b in cache[pairs[5]].buckets.values() for n in b.values())
        for k in pairs[:5] + pairs[6:]:  # not the pair with counts beyond 64 bits: an Int64List cannot hold them
            want = cache[k]
            assert {kind: {e: n for e, n in b.items() if n} for kind, b in back[k].buckets.items()} == {
                kind: {e: n for e, n in b.items() if n} for kind, b in want.buckets.items()
            }, k
            assert back[k].last_imp_us == (None if want.last_imp_us is None else want.last_imp_us // 10**6 * 10**6)
    finally:
        store.teardown()
        if keys:
            redis_client.delete(*set(keys))


def test_embedded_replay_pushes_through_feast_to_sqlite(tmp_path):
    """No Redis: `freqcap stream --replay DIR` keeps state in memory and pushes with FeatureStore.push."""
    from freqcap.adapters.feast.store import apply_definitions
    from freqcap.config import load_settings
    from freqcap.domain.stream.buckets import bucket_end
    from freqcap.jobs.stream import replay_worker

    settings = load_settings(environ={"FREQCAP__DATA_DIR": str(tmp_path)})
    events_dir = tmp_path / "live"
    live = random_events(11, 400, T_B, T_B + timedelta(hours=3))
    write_events(live, events_dir / "part-0.parquet")
    store = open_store(settings, tmp_path / "feast")
    apply_definitions(store, settings, tmp_path / "feast")
    stats = replay_worker(settings, store, events_dir).run(until_caught_up=True)
    assert stats.applied == 400 and stats.dead_letters == 0
    rows = with_pseudonyms(settings, live.to_pylist())  # the worker pushed pseudonymous rows
    for user in map(pseudonym_of(settings), ("u1", "u4", "u9")):
        for ad in ADS[:6]:
            out = store.get_online_features(
                features=["user_ad_stream:imp_buckets", "user_ad_stream:imp_counts"],
                entity_rows=[{"user_id": user, "ad_id": ad}],
            ).to_dict()
            want: dict[int, int] = {}
            for e in rows:
                if e["user_id"] == user and e["ad_id"] == ad and e["event_type"] == "impression":
                    end = bucket_end(int(e["event_ts"].timestamp() * 1_000_000), 60)
                    want[end] = want.get(end, 0) + 1
            got = dict(zip(out["imp_buckets"][0] or [], out["imp_counts"][0] or [], strict=True))
            assert got == want, (user, ad)


def test_produce_cli_replays_events_after_since_and_declares_coverage(tmp_path, redis_connection_string, redis_client):
    import httpx

    from freqcap.api.live import free_port
    from freqcap.jobs.stream import metrics_server

    settings, env = stream_settings(tmp_path, redis_connection_string)
    events_dir, rows, stream_rows = _world(tmp_path)
    live = random_events(3, 900, T_B + timedelta(seconds=1), T_B + timedelta(hours=5))
    write_events(live, events_dir / "part-live.parquet")
    cmd = [
        sys.executable,
        "-m",
        "freqcap.cli",
        "stream",
        "produce",
        "--events",
        str(events_dir),
        "--since",
        T_B.isoformat(),
        "--rate",
        "20000",
        "--duplicate-share",
        "0.1",
    ]
    try:
        out = subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        report = json.loads(out.stdout)
        after = [r for r in rows if r["event_ts"] > T_B]
        assert report["events"] == len(after) == len(stream_rows)
        key = settings.stream.stream_key
        assert redis_client.xlen(key) == report["events"] + report["duplicates"] > report["events"]
        meta = redis_client.hget(f"{key}:meta", "coverage_start_us")
        assert int(meta) == int(T_B.timestamp() * 1_000_000)
        # The worker's /metrics after consuming it: counters match, lag and watermark present.
        store = open_store(settings, tmp_path / "feast")
        from freqcap.adapters.feast.store import apply_definitions

        apply_definitions(store, settings, tmp_path / "feast")
        with redis_worker(settings, store, consumer="c1") as worker:
            worker.run(until_caught_up=True)
            with metrics_server(worker, settings, free_port("127.0.0.1")) as port:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert f"freqcap_stream_applied_total {len(after)}" in text
        assert f"freqcap_stream_duplicates_total {report['duplicates']}" in text
        assert "freqcap_stream_lag_seconds" in text and "freqcap_stream_stale 0" in text
        store.teardown()
    finally:
        cleanup_redis(redis_client, settings)


def test_another_consumer_reclaims_the_entries_a_dead_consumer_left_pending(
    tmp_path, redis_connection_string, redis_client
):
    """A consumer that read entries and died (never acked) leaves them pending; a live worker with another name that
    takes the partition's lease claims them (XAUTOCLAIM) before reading anything new, and the counts are exact."""
    from freqcap.adapters.feast.store import apply_definitions

    settings, _ = stream_settings(tmp_path, redis_connection_string)
    cfg = settings.stream
    store = open_store(settings, tmp_path / "feast")
    apply_definitions(store, settings, tmp_path / "feast")
    rows = [
        dict(r, event_id=f"r{i}")
        for i, r in enumerate(random_events(8, 300, T_B, T_B + timedelta(hours=1)).to_pylist())
    ]
    try:
        rows.sort(key=lambda r: r["event_ts"])  # in order: none late, so every event must be applied
        produce(redis_client, cfg.stream_key, [event_fields(r) for r in rows], coverage_start=T_B)
        redis_client.xgroup_create(cfg.stream_key, cfg.group, id="0", mkstream=True)
        taken = redis_client.xreadgroup(cfg.group, "dead-worker", {cfg.stream_key: ">"}, count=120)
        assert len(taken[0][1]) == 120  # the dead consumer holds these, unacknowledged
        with redis_worker(settings, store, consumer="live-worker") as worker:
            stats = worker.run(until_caught_up=True)
        assert stats.applied == len(rows)
        assert redis_client.xpending(cfg.stream_key, cfg.group)["pending"] == 0
        want, got = _state_buckets(redis_client, settings, with_pseudonyms(settings, rows), store)
        assert got == want
    finally:
        store.teardown()
        cleanup_redis(redis_client, settings)
