"""The stream worker with everything on a real local Redis Cluster: its streams, partition state, leases and status
(`stream.redis_kind: redis_cluster`) and the online store it pushes to (Feast `redis_cluster`).

Same brute force as the single-node test (tests/integration/test_stream.py): counts across the batch/stream seam
with duplicates and disorder equal the raw events' counts. Then a second worker under another name takes the
partitions over and applies the rest, as a new pod would.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from freqcap.adapters.feast.fast_reader import RedisClusterFeatureReader, make_reader
from freqcap.adapters.feast.store import open_store
from freqcap.adapters.feast.stream_push import RedisDirectPusher
from freqcap.adapters.stream.produce import produce
from freqcap.adapters.stream.status import read_status, stream_redis_client
from freqcap.domain.stream.messages import event_fields
from freqcap.jobs.stream import redis_worker
from tests.integration.stream_support import cleanup_redis, jitter_order, stream_settings
from tests.integration.test_feast_online import _run_snapshot
from tests.integration.test_stream import T_B, _check_resolved, _world
from tests.privacy import pseudonym_of
from tests.redis_cluster import keys_per_master

pytestmark = [pytest.mark.redis_cluster, pytest.mark.slow]
PARTITIONS = 4


def _cluster_settings(tmp_path, cluster):
    settings, _ = stream_settings(
        tmp_path, cluster.connection_string, "redis_cluster", partitions=str(PARTITIONS), redis_kind="redis_cluster"
    )
    return settings


def _messages(rows, seed):
    messages = [event_fields(r) for r in jitter_order(rows, timedelta(minutes=10), seed=seed)]
    rng = random.Random(seed)
    for i in rng.sample(range(len(messages)), k=len(messages) * 15 // 100):
        messages.insert(min(len(messages), i + rng.randint(1, 40)), dict(messages[i]))
    return messages


def test_stream_worker_on_a_redis_cluster_equals_brute_force_and_hands_over(tmp_path, redis_cluster):
    settings = _cluster_settings(tmp_path, redis_cluster)
    events_dir, rows, stream_rows = _world(tmp_path)
    repo = tmp_path / "feast"
    store = open_store(settings, repo)
    client = stream_redis_client(settings.stream, socket_timeout=10)
    try:
        _run_snapshot(settings, tmp_path, events_dir, T_B, store, repo)
        cut = T_B + timedelta(hours=3)
        first = [r for r in stream_rows if r["event_ts"] <= cut]
        second = [r for r in stream_rows if r["event_ts"] > cut]
        produce(client, settings.stream.stream_key, _messages(first, 5), coverage_start=T_B, partitions=PARTITIONS)
        with redis_worker(settings, store, consumer="pod-a") as worker:
            # The direct writer, routed per master (not Feast's slower push): what production runs.
            assert isinstance(worker.pusher, RedisDirectPusher) and worker.pusher.topology is not None
            stats = worker.run(until_caught_up=True)
        assert stats.applied == len(first)
        assert sorted(worker.consumers) == [] and stats.takeovers == PARTITIONS

        # The partitions' keys (hash-tagged) spread over the masters: the worker wrote more than one node.
        prefix = settings.stream.state_prefix.encode()
        assert sum(1 for n in keys_per_master(redis_cluster, prefix + b":*").values() if n) >= 2

        # A replacement worker under a new name takes every partition over and applies the rest.
        produce(client, settings.stream.stream_key, _messages(second, 6), partitions=PARTITIONS)
        with redis_worker(settings, store, consumer="pod-b") as worker:
            stats_b = worker.run(until_caught_up=True)
        assert stats_b.applied == len(second)

        status = read_status(settings)
        assert status is not None and not status.stale
        assert status.counters["applied"] == len(stream_rows)

        reader = make_reader(store, settings)
        assert isinstance(reader, RedisClusterFeatureReader) and reader.reads_stream
        total = nonzero = 0
        for t in (T_B + timedelta(minutes=20), T_B + timedelta(hours=2, minutes=30), T_B + timedelta(hours=5)):
            checked, touched = _check_resolved(reader, rows, t, pseudonym_of(settings))
            total, nonzero = total + checked, nonzero + touched
        assert total > 500 and nonzero > 100
    finally:
        store.teardown()
        cleanup_redis(client, settings)
        client.close()
