"""kill -9 of stream workers at every stage of a flush and at random instants, restarts under the same consumer name
and as a replacement under a new name while a backlog remains, partitions moving between workers: the counts equal
a single delivery of every distinct event, and the `late` and dead-letter counters are exact.

Workers run in forked processes (the parent has Feast and the worker code imported, so a child starts in
milliseconds) and are killed with SIGKILL: by the parent at random instants, or by themselves at a chosen stage
(`crash_hook`: right after the dead letters are written, right after the atomic write, right after an overlapped
push was handed to its thread, right after the push — the windows between the steps of a flush that a random kill
rarely hits). Each test has its own redis-server.

Brute force (independent of the worker's code): the streams are read back with XRANGE; per partition, in stream
order, an event is a duplicate if its id was applied before, late if older than the newest applied event time minus
the lateness, applied otherwise; malformed messages are known by construction. Counts per pair and bucket come from
the applied events; what Feast serves is read back through `get_online_features`.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import traceback
from datetime import timedelta

import pytest
import redis

from freqcap.adapters.feast.store import apply_definitions, open_store
from freqcap.adapters.stream.produce import produce
from freqcap.adapters.stream.status import read_combined
from freqcap.config import load_settings
from freqcap.domain.stream.messages import event_fields
from freqcap.domain.stream.partitions import state_base, stream_name
from freqcap.jobs.stream import redis_worker
from tests.integration.serving_support import RedisServer
from tests.integration.stream_support import cleanup_redis, jitter_order, stream_settings
from tests.integration.test_feast_online import T1, random_events
from tests.privacy import pseudonym_of

pytestmark = pytest.mark.redis

LATENESS_S = 600
KIND = {"impression": "i", "click": "c", "conversion": "v"}


def _messages(seed: int, n: int) -> list[dict]:
    """n events over 4 h for 40 users, out of order within the lateness, with 15 % re-sent duplicates, 3 % copies
    moved 40 min back under new ids (late once the watermark has passed them) and 1 % malformed messages."""
    rng = random.Random(seed)
    rows = random_events(seed, n, T1, T1 + timedelta(hours=4), users=range(40)).to_pylist()
    msgs = [event_fields(r) for r in jitter_order(rows, timedelta(seconds=LATENESS_S), seed)]
    for i in rng.sample(range(len(msgs)), len(msgs) * 3 // 100):
        old = dict(msgs[i], event_id=f"old-{i}")
        old["event_ts"] = (_ts(msgs[i]) - timedelta(minutes=40)).isoformat()
        msgs.insert(min(len(msgs), i + rng.randint(50, 400)), old)
    for i in rng.sample(range(len(msgs)), len(msgs) * 15 // 100):
        msgs.insert(min(len(msgs), i + rng.randint(1, 300)), dict(msgs[i]))
    for i in rng.sample(range(len(msgs)), len(msgs) // 100):
        msgs.insert(i, dict(msgs[i], event_id=f"bad-{i}", event_type="view"))
    return msgs


def _ts(fields):
    from datetime import datetime

    return datetime.fromisoformat(fields["event_ts"])


def _brute_force(client, cfg, pseudonym) -> dict:
    """Per partition, in stream order: verdicts, counts per (pair, kind, bucket end), last impression per pair
    (pairs keyed by the user's pseudonym, `pseudonym(raw id)`: what the worker stores and pushes)."""
    from freqcap.domain.stream.partitions import stream_name

    out = {"applied": 0, "duplicates": 0, "late": 0, "dead": {}, "pairs": {}, "last_imp": {}}
    for p in range(cfg.partitions):
        seen, watermark = set(), None
        stream = stream_name(cfg.stream_key, p, cfg.partitions)
        for entry_id, raw in client.xrange(stream):
            f = {k.decode(): v.decode() for k, v in raw.items()}
            source = (stream, entry_id.decode())  # ids are per stream: two partitions can hold the same id
            if f["event_type"] not in KIND:
                out["dead"][source] = "bad_event_type"
                continue
            ts_us = round(_ts(f).timestamp() * 1_000_000)
            if f["event_id"] in seen:
                out["duplicates"] += 1
            elif watermark is not None and ts_us < watermark - LATENESS_S * 1_000_000:
                out["late"] += 1
                out["dead"][source] = "late"
            else:
                seen.add(f["event_id"])
                watermark = ts_us if watermark is None else max(watermark, ts_us)
                out["applied"] += 1
                end = -(-ts_us // 60_000_000) * 60
                for level in ("advertiser", "campaign", "ad"):
                    pair = (level, pseudonym(f["user_id"]), f[f"{level}_id"])
                    counts = out["pairs"].setdefault(pair, {})
                    key = (KIND[f["event_type"]], end)
                    counts[key] = counts.get(key, 0) + 1
                    if f["event_type"] == "impression":
                        out["last_imp"][pair] = max(out["last_imp"].get(pair, 0), ts_us)
    return out


def _spawn(
    settings, store, name: str, crash: tuple[str, int] | None = None, seconds: float = 120, until_caught_up=True
) -> int:
    """A worker in a forked process; with `crash=(stage, n)` it SIGKILLs itself at the n-th time it passes `stage`;
    without `until_caught_up` it runs until killed (or `seconds`)."""
    pid = os.fork()
    if pid:
        return pid
    try:
        passed = {"n": 0}

        def hook(stage: str) -> None:
            if crash and stage == crash[0]:
                passed["n"] += 1
                if passed["n"] == crash[1]:
                    os.kill(os.getpid(), signal.SIGKILL)

        with redis_worker(settings, store, consumer=name, crash_hook=hook) as worker:
            worker.run(until_caught_up=until_caught_up, max_seconds=seconds)
        os._exit(0)
    except BaseException:
        traceback.print_exc()
        os._exit(1)


def _wait(pid: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"worker {pid} did not finish within {timeout} s")


def _killed_by_itself(pid: int) -> None:
    status = _wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"worker ended with status {status}"


def _kill_after(client, cfg, pid: int, applied_at_least: int) -> int:
    """SIGKILL the worker once the partitions' `applied` counter reaches a threshold, at a moment it holds read but
    unacknowledged entries (polled just before: a kill right after an acknowledgement would leave nothing to
    claim, and the takeover this is for would go untested); the count at the kill."""
    streams = [stream_name(cfg.stream_key, p, cfg.partitions) for p in range(cfg.partitions)]
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        assert not done, f"worker exited ({status}) before the kill"
        applied = int(read_combined(client, cfg).get("applied", 0))
        if applied >= applied_at_least and any(client.xpending(s, cfg.group)["pending"] for s in streams):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return applied
        assert time.monotonic() < deadline, "worker made no progress"
        time.sleep(0.002)


def _check(client, settings, store, state_keys: bool = False) -> None:
    """Everything against brute force: state-independent counters, dead letters, nothing pending, Feast rows
    (`state_keys`: the last worker kept pair-state keys, the layout for rows that expire before the retention)."""
    from freqcap.domain.stream.partitions import dead_letter_name, stream_name

    cfg = settings.stream
    want = _brute_force(client, cfg, pseudonym_of(settings))
    assert want["late"] > 20 and want["duplicates"] > 100 and len(want["dead"]) > want["late"], "weak fixture"
    status = read_combined(client, cfg)
    assert status["applied"] == want["applied"]
    assert status["duplicates"] == want["duplicates"]
    assert status["late"] == want["late"]
    assert status["dead_letters"] == len(want["dead"])
    dead = []
    for p in range(cfg.partitions):
        assert client.xpending(stream_name(cfg.stream_key, p, cfg.partitions), cfg.group)["pending"] == 0
        for _, f in client.xrange(dead_letter_name(cfg.dead_letter_key, p, cfg.partitions)):
            dead.append(((f[b"_source_stream"].decode(), f[b"_source_id"].decode()), f[b"_reason"].decode()))
    assert len(dead) == len(set(dead)), "a message was dead-lettered twice"
    assert dict(dead) == want["dead"]
    # Both modes keep the pairs' state in the online rows (direct: through the pending log, emptied by each push),
    # so the kills above hit that path: no pair-state keys, nothing left in the log.
    if not state_keys:
        assert not any(client.scan_iter(match=f"{cfg.state_prefix}:*:s:*")), "the worker wrote pair state keys"
    assert not any(client.scan_iter(match=f"{cfg.state_prefix}:*:unpushed")), "unpushed names were left"
    assert not any(client.scan_iter(match=f"{cfg.state_prefix}:*:pending")), "the pending log was not emptied"
    # What serving reads: every pair's stream row through Feast's own reader.
    by_level: dict[str, list] = {}
    for pair in want["pairs"]:
        by_level.setdefault(pair[0], []).append(pair)
    checked = 0
    for level, pairs in by_level.items():
        out = store.get_online_features(
            features=[f"user_{level}_stream:{c}_{x}" for c in ("imp", "clk", "conv") for x in ("buckets", "counts")]
            + [f"user_{level}_stream:last_imp_ts"],
            entity_rows=[{"user_id": u, f"{level}_id": e} for _, u, e in pairs],
        ).to_dict()
        for i, pair in enumerate(pairs):
            got = {}
            for kind, prefix in (("i", "imp"), ("c", "clk"), ("v", "conv")):
                ends, counts = out[f"{prefix}_buckets"][i] or [], out[f"{prefix}_counts"][i] or []
                got.update({(kind, e): n for e, n in zip(ends, counts, strict=True)})
            assert got == want["pairs"][pair], pair
            last = want["last_imp"].get(pair)
            seen_last = out["last_imp_ts"][i]
            assert (seen_last.timestamp() if seen_last else None) == (last // 1_000_000 if last else None), pair
            checked += 1
    assert checked > 300


@pytest.fixture(params=["single", "single-atomic", pytest.param("cluster", marks=pytest.mark.redis_cluster)])
def world(request, tmp_path):
    """`(client, make)`: a redis-server of this test's own (`single-atomic`: the online rows written inside the
    flush script, `stream.push_mode: atomic`), or the session's three-master Redis Cluster with the stream, its
    state and the online store all on it (`stream.redis_kind: redis_cluster`; keys of this test's own, deleted
    afterwards)."""
    if request.param.startswith("single"):
        mode = {"push_mode": "atomic"} if request.param == "single-atomic" else {}
        with RedisServer() as server:
            client = redis.Redis(port=server.port)

            def make(**stream: str):
                settings, _ = stream_settings(tmp_path, server.address, **stream, **mode)
                assert settings.stream.push_mode == mode.get("push_mode", "direct")
                store = open_store(settings, tmp_path / "feast")
                apply_definitions(store, settings, tmp_path / "feast")
                return settings, store

            yield client, make
        return
    cluster = request.getfixturevalue("redis_cluster")
    made = []

    def make_on_cluster(**stream: str):
        settings, _ = stream_settings(
            tmp_path, cluster.connection_string, "redis_cluster", redis_kind="redis_cluster", **stream
        )
        store = open_store(settings, tmp_path / "feast")
        apply_definitions(store, settings, tmp_path / "feast")
        made.append(settings)
        return settings, store

    client = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0], socket_timeout=10)
    try:
        yield client, make_on_cluster
    finally:
        for settings in made:
            cleanup_redis(client, settings)
        client.close()


def test_kill_9_at_every_stage_then_same_name_and_replacement_during_backlog(world, request):
    client, make = world
    # A cluster needs hash-tagged partitions (two, on different masters); one unpartitioned stream on a single node.
    partitions = 2 if "cluster" in request.node.callspec.id else 1
    settings, store = make(
        batch_size="60", flush_events="120", commit_events="50", lease_ttl="1s", partitions=str(partitions)
    )
    cfg = settings.stream
    try:
        produce(client, cfg.stream_key, _messages(1, 3000), coverage_start=T1, partitions=partitions)
        # Each window of a flush: a micro-batch is written as units of <= 50 messages, so the third commit lands
        # between two units of one flush, before its push and acknowledgement; `push_sent`: the overlapped push of
        # a micro-batch has just been handed to its thread (it dies half written) and the next one is being read.
        overlapped = (("push_sent", 3),) if cfg.push_mode == "direct" and cfg.overlap_push else ()
        for stage, n in (("commit", 3), ("dead_letters", 2), *overlapped, ("push", 4)):
            _killed_by_itself(_spawn(settings, store, "w1", crash=(stage, n)))
        applied = int(read_combined(client, cfg)["applied"])
        at_kill = _kill_after(client, cfg, _spawn(settings, store, "w1"), applied + random.Random(7).randint(300, 600))
        pending = sum(
            client.xpending(stream_name(cfg.stream_key, p, partitions), cfg.group)["pending"] for p in range(partitions)
        )
        assert pending > 0, "the kill must leave entries pending"
        # A replacement under a new name while a backlog remains: it waits out w1's lease, claims w1's pending
        # entries before reading anything new, and is itself killed right after an atomic write.
        _killed_by_itself(_spawn(settings, store, "w2", crash=("commit", 2)))
        assert int(read_combined(client, cfg)["applied"]) < 3000 * 0.9, "the backlog must outlive the takeover"
        status = _wait(_spawn(settings, store, "w3"))
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        print(f"applied at the random kill: {at_kill}")
        _check(client, settings, store)
    finally:
        store.teardown()


def test_partitions_move_between_workers_and_survive_kill_9(world):
    client, make = world
    settings, store = make(partitions="3", batch_size="50", flush_events="100", lease_ttl="1s", block_ms="20")
    cfg = settings.stream
    try:
        msgs = _messages(2, 4000)
        thirds = [msgs[: len(msgs) // 3], msgs[len(msgs) // 3 : 2 * len(msgs) // 3], msgs[2 * len(msgs) // 3 :]]
        produce(client, cfg.stream_key, thirds[0], coverage_start=T1, partitions=3)
        a = _spawn(settings, store, "wa", until_caught_up=False)
        time.sleep(0.3)
        b = _spawn(settings, store, "wb", until_caught_up=False)  # joins: the assignment moves partitions to it
        owners: set = set()
        deadline = time.monotonic() + 30
        while len(owners) < 2:  # both own some partition before the kill
            owners = {client.hget(f"{cfg.state_prefix}:{{p{p}}}:status", "owner") for p in range(3)} - {None}
            assert time.monotonic() < deadline, "partitions did not spread over two workers"
            time.sleep(0.01)
        produce(client, cfg.stream_key, thirds[1], partitions=3)  # the rest comes while workers come and go
        applied = int(read_combined(client, cfg).get("applied", 0))
        _kill_after(client, cfg, a, applied + 300)  # wa dies holding leases and pending entries
        c = _spawn(settings, store, "wc")  # another joins while wb takes over wa's partitions
        produce(client, cfg.stream_key, thirds[2], partitions=3)
        time.sleep(0.5)
        os.kill(b, signal.SIGKILL)
        os.waitpid(b, 0)
        status = _wait(c)  # wc takes over what the assignment gives it (some of it wa's and wb's), drains it, exits
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        time.sleep(1.2)  # wb's membership expires: the last worker is assigned everything left
        status = _wait(_spawn(settings, store, "wd"))
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        _check(client, settings, store)
    finally:
        store.teardown()


def test_a_worker_that_lost_its_lease_before_its_push_pushes_nothing(tmp_path):
    """Paused past its lease between the atomic write and the push (a long GC pause, a stopped container): the
    rows are the pairs' state, so a late push could overwrite a newer owner's rows with older states. The worker
    finds the lease gone before pushing and gives the partition up; the new owner pushes the logged states and
    drains, and everything equals the brute force."""
    with RedisServer() as server:
        client = redis.Redis(port=server.port)
        # One unit per flush: the lease is taken right after the flush's last (only) atomic write.
        settings, _ = stream_settings(
            tmp_path, server.address, batch_size="50", flush_events="50", commit_events="50", lease_ttl="1s"
        )
        store = open_store(settings, tmp_path / "feast")
        apply_definitions(store, settings, tmp_path / "feast")
        cfg = settings.stream
        lease = f"{cfg.state_prefix}:{{p0}}:lease"
        try:
            produce(client, cfg.stream_key, _messages(3, 1000), coverage_start=T1)

            def steal(stage: str) -> None:  # what another worker does once the lease has expired
                if stage == "commit" and not client.exists(f"{cfg.state_prefix}:stolen"):
                    client.set(f"{cfg.state_prefix}:stolen", 1)
                    client.set(lease, "intruder:1", px=60_000)

            with redis_worker(settings, store, consumer="w1", crash_hook=steal) as worker:
                stats = worker.run(until_caught_up=True, max_seconds=1.5)
            assert stats.applied > 0, "the first unit must have been written"
            assert stats.pushed == 0, "a worker without the lease pushed rows"
            ours = (cfg.state_prefix.encode(), cfg.stream_key.encode(), cfg.dead_letter_key.encode())
            assert not [k for k in client.scan_iter(count=10_000) if not k.startswith(ours)], "online rows written"
            assert client.exists(f"{cfg.state_prefix}:{{p0}}:pending"), "the new owner needs the logged states"
            client.delete(lease, f"{cfg.state_prefix}:stolen")  # the intruder's lease expires
            with redis_worker(settings, store, consumer="w2") as worker:
                worker.run(until_caught_up=True, max_seconds=60)
            _check(client, settings, store)
        finally:
            store.teardown()


@pytest.mark.parametrize("where", ["single", pytest.param("cluster", marks=pytest.mark.redis_cluster)])
def test_switching_between_state_layouts_with_kill_9_loses_nothing(where, request, tmp_path):
    """A deployment that changes the online key TTL across `stream.retention` + 1 h switches a partition between
    its two layouts of pair state under the same `state_prefix`: state keys (rows may expire before the retention)
    and the online rows themselves (pending log). The first is also the layout of releases before rows-as-state, so
    keys -> rows is the upgrade. Each worker is killed right after an atomic write, leaving the next one, in the
    other layout, unpushed names or a pending log to finish; pairs changed under the rows layout must not be read
    back from state keys an earlier state-key worker left behind. Everything equals the brute force."""
    with contextlib.ExitStack() as stack:
        if where == "single":
            server = stack.enter_context(RedisServer())
            client, url, kind, partitions = redis.Redis(port=server.port), server.address, "redis", 1
        else:
            cluster = request.getfixturevalue("redis_cluster")
            client = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0], socket_timeout=10)
            url, kind, partitions = cluster.connection_string, "redis_cluster", 2
        extra = {"redis_kind": kind} if where == "cluster" else {}
        rows, env = stream_settings(
            tmp_path,
            url,
            kind,
            batch_size="60",
            flush_events="120",
            commit_events="50",
            lease_ttl="1s",
            partitions=str(partitions),
            **extra,
        )
        keys = load_settings(environ={**env, "FREQCAP__FEAST__ONLINE_KEY_TTL": "26h"})  # < retention + 1 h
        assert keys.online_key_ttl < timedelta(seconds=keys.stream.seconds("retention") + 3600) <= rows.online_key_ttl
        if where == "cluster":
            stack.callback(client.close)
            stack.callback(cleanup_redis, client, rows)
        store = open_store(rows, tmp_path / "feast")
        apply_definitions(store, rows, tmp_path / "feast")
        stack.callback(store.teardown)
        cfg = rows.stream
        produce(client, cfg.stream_key, _messages(4, 3000), coverage_start=T1, partitions=partitions)
        plan = [(keys, "unpushed"), (rows, "pending"), (keys, "unpushed"), (rows, "pending")]
        for i, (settings, log) in enumerate(plan):
            _killed_by_itself(_spawn(settings, store, f"w{i}", crash=("commit", 4)))
            assert any(client.scan_iter(match=f"{cfg.state_prefix}:*:{log}")), f"worker {i} must leave its {log}"
            assert int(read_combined(client, cfg)["applied"]) < 2500, "the stream must outlast the switches"
            if i == 0:
                assert any(client.scan_iter(match=f"{cfg.state_prefix}:*:s:*")), "state keys must be left behind"
        if where == "cluster":
            masters = client.get_primaries()
            client.config_resetstat(target_nodes=masters)
        status = _wait(_spawn(keys, store, "last"))
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if where == "cluster":
            # the layout switch scans only the masters holding the partitions' slots (a partition's state client is a
            # plain client of its hash tag's master), never the whole cluster
            scanned = {n.name for n in masters if "cmdstat_scan" in client.info("commandstats", target_nodes=n)}
            owning = {client.get_node_from_key(state_base(cfg.state_prefix, p)).name for p in range(partitions)}
            assert scanned and scanned <= owning and len(owning) < len(masters), (scanned, owning)
        _check(client, keys, store, state_keys=True)
