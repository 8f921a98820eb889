"""Forgetting two users end to end: a small world built through the real pipeline jobs (validation with a
quarantine, daily snapshots, a training set, the features run and its materialization, the stream worker), then
`freqcap forget` on two users, then:

* no store holds either user in any form (raw id, pseudonym under the active or a retired key): every Parquet
  file decoded cell by cell, every other file byte by byte, every Redis key of the test (names, hash fields and
  values, strings, stream entries);
* every other user's features are unchanged: the online store (read through Feast's own `get_online_features`)
  and the newest offline snapshot equal a brute-force recomputation from the validated events minus the two users,
  and everything else the stores held for other users is byte-identical to before;
* a second forget is a no-op with zero counts; the audit holds no form of the ids, only hashes computed here
  independently.

Parametrized over the online store: Feast SQLite (stream replayed in process) and Redis (the Redis stream worker).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import yaml

from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.forget import user_of_entity_key
from freqcap.adapters.feast.snapshots import list_snapshots
from freqcap.adapters.feast.store import open_store
from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.adapters.stream.produce import produce
from freqcap.cli.main import main as cli_main
from freqcap.config import SimulationConfig, load_settings
from freqcap.domain.stream.messages import event_fields
from freqcap.jobs.features import build_features_job, check_features_job, materialize_job, validate_events_job
from freqcap.jobs.forget import forget_users
from freqcap.jobs.stream import redis_worker, replay_worker
from freqcap.jobs.training import backfill_snapshots_job, build_training_set_job
from freqcap.layout import DataLayout, parse_as_of
from freqcap.resources import model_config_path
from tests.bruteforce import full_row, tier_features
from tests.integration.stream_support import cleanup_redis

pytestmark = [pytest.mark.slow, pytest.mark.redis]
KEYS = {"k0": "retired-key-material-" + "r" * 24, "k1": "active-key-material-" + "a" * 24}
COUNTS = ("imp_1h", "imp_24h", "imp_7d", "imp_28d", "clk_28d", "conv_28d")


def pseudonym(key: str, user: str) -> str:
    """The pseudonym as the privacy docs define it, computed here with hmac directly (not freqcap's code)."""
    digest = hmac.new(KEYS[key].encode(), user.encode(), hashlib.sha256).digest()[:16]
    return f"u.{key}." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _env(tmp_path: Path, kind: str, redis_url: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    env = {
        "FREQCAP__DATA_DIR": str(tmp_path / "data"),
        "FREQCAP__FEAST__PROJECT": f"t{tag}",
        "FREQCAP__FEAST__ONLINE__KIND": kind,
        "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": redis_url,
        "FREQCAP__PRIVACY__ACTIVE_KEY": "k1",
        "FREQCAP__PRIVACY__KEYS__K0": KEYS["k0"],
        "FREQCAP__PRIVACY__KEYS__K1": KEYS["k1"],
        "FREQCAP__STREAM__REDIS_URL": redis_url,
        "FREQCAP__STREAM__STREAM_KEY": f"t{tag}:events",
        "FREQCAP__STREAM__DEAD_LETTER_KEY": f"t{tag}:dead",
        "FREQCAP__STREAM__STATE_PREFIX": f"t{tag}:stream",
        "FREQCAP__STREAM__GROUP": "g",
        "FREQCAP__STREAM__ENABLED": "true" if kind == "redis" else "false",
        "FREQCAP__VALIDATION__DATA_DOCS": "true",
    }
    return env


def _model_config(path: Path) -> str:
    raw = yaml.safe_load(model_config_path().read_text())
    raw["label"]["attribution_window"] = "1d"  # a 5-day world
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# --------------------------------------------------------------------------------------------- what the stores hold


def _parquet_cells(path: Path) -> list[str]:
    table = pq.read_table(path)
    out = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            out += [v for v in column.to_pylist() if v is not None]
    return out


def files_holding(root: Path, forms: set[str]) -> list[str]:
    hits = []
    needles = [f.encode() for f in forms]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            if any(any(f in cell for f in forms) for cell in _parquet_cells(path)):
                hits.append(str(path.relative_to(root)))
        elif any(n in path.read_bytes() for n in needles):
            hits.append(str(path.relative_to(root)))
    return hits


def redis_dump(client: redis.Redis, settings) -> dict[bytes, object]:
    """Every key of this test (Feast project, bulk state, stream keys) with its content."""
    cfg = settings.stream
    patterns = [f"*{settings.feast.project}", f"*{settings.feast.project}:*", f"{cfg.state_prefix}:*",
                f"{cfg.stream_key}*", f"{cfg.dead_letter_key}*"]  # fmt: skip
    out: dict[bytes, object] = {}
    for pattern in patterns:
        for key in client.scan_iter(match=pattern, count=10_000):
            kind = client.type(key)
            if kind == b"hash":
                out[key] = client.hgetall(key)
            elif kind == b"string":
                out[key] = client.get(key)
            elif kind == b"stream":
                out[key] = client.xrange(key)
            else:
                out[key] = kind
    return out


def redis_holding(dump: dict[bytes, object], forms: set[str]) -> list[bytes]:
    needles = [f.encode() for f in forms]
    return [k for k, v in dump.items() if any(n in k or n in repr(v).encode() for n in needles)]


def sqlite_rows(settings) -> dict[str, list[tuple]]:
    import sqlite3

    db = DataLayout.of(settings).feast_repo / "online.db"
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}
    finally:
        con.close()


# ------------------------------------------------------------------------------------------------------- the test


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_forget_two_users_everywhere(tmp_path, monkeypatch, redis_connection_string, kind):
    env = _env(tmp_path, kind, redis_connection_string)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    layout = DataLayout.of(settings)
    host, port = redis_connection_string.split(":")
    client = redis.Redis(host=host, port=int(port))

    # -- the world, through the real jobs ------------------------------------------------------------------------
    sim = simulate_to_dir(layout.raw_dir, SimulationConfig(users=250, days=5, seed=21))
    events_dir = str(sim.events_dir)
    window = load_ground_truth(layout.raw_dir)["window"]
    start, as_of = parse_as_of(window["start"]), parse_as_of(window["end"])
    raw_events = pq.read_table(events_dir).to_pylist()
    by_user: dict[str, int] = {}
    for row in raw_events:
        by_user[row["user_id"]] = by_user.get(row["user_id"], 0) + 1
    a, b = sorted(by_user, key=lambda u: (-by_user[u], u))[:2]  # the two busiest: in every store
    forms = {a, b} | {pseudonym(k, u) for k in KEYS for u in (a, b)}

    first = next(Path(events_dir).rglob("*.parquet"))
    like = pq.read_table(first).slice(0, 1).to_pylist()[0]
    bad = pa.Table.from_pylist(
        [{**like, "event_id": f"bad-{i}", "event_type": "bogus", "user_id": a} for i in range(3)],
        schema=pq.read_schema(first),
    )
    write_events(bad, first.parent / "part-bad.parquet")  # same date partition as its rows

    config = _model_config(tmp_path / "conversion.yaml")
    try:
        backfill_snapshots_job(events_dir, (start + timedelta(days=1)).isoformat(), (as_of - timedelta(days=1)).isoformat(), settings)  # fmt: skip
        training = build_training_set_job(events_dir, as_of.isoformat(), settings, model_config=config)
        assert training["rows"] > 0
        report = validate_events_job(events_dir, as_of.isoformat(), settings)
        assert report["quarantined_rows"] >= 3
        users = str(layout.raw_dir / "users.parquet")
        build = check_features_job(build_features_job(report["clean_path"], as_of.isoformat(), settings, users), settings)  # fmt: skip
        materialize_job(build, settings)
        store = open_store(settings, layout.feast_repo)
        clean = pq.read_table(report["clean_path"]).to_pylist()
        if kind == "redis":  # the last day through the Redis stream worker: pair state, dedup marks, stream views
            # Raw events, as a producer at the edge sends them (the worker pseudonymizes them itself).
            recent = sorted(
                (e for e in raw_events if as_of - timedelta(hours=20) < e["event_ts"] <= as_of),
                key=lambda e: (e["event_ts"], e["event_id"]),
            )
            produce(
                client,
                settings.stream.stream_key,
                [event_fields(e) for e in recent],
                coverage_start=as_of - timedelta(hours=20),
            )
            with redis_worker(settings, store, consumer="c1") as worker:
                assert worker.run(until_caught_up=True, max_seconds=120).applied == len(recent)
        else:  # embedded: the raw directory replayed in process into the SQLite stream views, where the
            # quarantined user's bogus rows become dead letters
            replay_worker(settings, store, Path(events_dir)).run(until_caught_up=True)
            assert layout.stream_dead_letters.exists()

        # Before: the user is everywhere we expect.
        held = files_holding(layout.root, forms)
        for part in ("raw/events", "runs/", "feast/offline/user_ad", "training/", "raw/users.parquet", "quarantine"):
            assert any(part in h for h in held), (part, held)
        before_redis = redis_dump(client, settings)
        before_sqlite = sqlite_rows(settings) if kind == "sqlite" else {}
        if kind == "redis":
            assert redis_holding(before_redis, forms)
        else:
            assert "feast/online.db" in held
        snapshots_before = {p: pq.read_table(p).to_pylist() for t in ("user_ad", "user") for _, p in list_snapshots(layout.offline_root, t)}  # fmt: skip

        # -- forget, through the CLI ---------------------------------------------------------------------------------
        assert cli_main(["forget", "--user", a, "--user", b, "--request-id", "req-1"]) == 0
        record = json.loads(layout.forget_audit.read_text().splitlines()[-1])

        # -- no store holds either user -------------------------------------------------------------------------------
        assert files_holding(layout.root, forms) == []
        after_redis = redis_dump(client, settings)
        assert redis_holding(after_redis, forms) == []

        # -- every other user unchanged -------------------------------------------------------------------------------
        version = 3
        project = settings.feast.project.encode()
        for key in set(before_redis) - set(after_redis):  # only the two users' hashes and pair states went
            if key.endswith(project):
                assert user_of_entity_key(key[: -len(project)], version) in forms, key
            else:
                assert any(f":s:{level}:{u}\x1f".encode() in key for u in forms for level in ("advertiser", "campaign", "ad")), key  # fmt: skip
        # Everything else is as it was, less the two users' event ids (dedup marks) and stream entries.
        gone_events = {e["event_id"].encode() for e in raw_events + bad.to_pylist() if e["user_id"] in forms}
        expected_redis = {}
        for key, value in before_redis.items():
            if key not in after_redis:
                continue
            if b":seen:" in key:
                value = {k: v for k, v in value.items() if k not in gone_events}
            elif isinstance(value, list):  # a stream
                value = [(i, f) for i, f in value if f.get(b"user_id", b"").decode() not in forms]
            expected_redis[key] = value
        assert after_redis == expected_redis
        if kind == "sqlite":
            after_sqlite = sqlite_rows(settings)
            for table, rows in before_sqlite.items():
                if table.startswith(f"{settings.feast.project}_"):  # a view's table: entity_key first
                    rows = [r for r in rows if user_of_entity_key(r[0], version) not in forms]
                assert after_sqlite[table] == rows, table
            assert sum(len(v) for v in after_sqlite.values()) < sum(len(v) for v in before_sqlite.values())
        for path, rows in snapshots_before.items():
            assert pq.read_table(path).to_pylist() == [r for r in rows if r["user_id"] not in forms], path

        others = [e for e in clean if e["user_id"] not in forms]
        level = "ad"
        expected = tier_features(others, as_of, level, settings.features.tier(level).half_life_seconds)
        # pairs active in the rolling windows (as `snap` below selects them; calendar-only rows left out)
        expected = {k: f for k, f in expected.items() if any(f.get(f"{p}_28d", 0) for p in ("imp", "clk", "conv"))}
        newest = list_snapshots(layout.offline_root, "user_ad")[-1][1]
        snap = {(r["user_id"], r["ad_id"]): r for r in pq.read_table(newest).to_pylist() if r["imp_28d"] + r["clk_28d"] + r["conv_28d"] > 0}  # fmt: skip
        assert set(snap) == set(expected)
        for pair, feats in expected.items():
            want = full_row(feats)
            assert [snap[pair][c] for c in COUNTS] == [want[c] for c in COUNTS], pair
            assert math.isclose(snap[pair]["imp_decayed"], want["imp_decayed"], rel_tol=1e-9)
        pairs = sorted(expected)[:: max(1, len(expected) // 80)]
        view = store.get_feature_view("user_ad")
        got = store.get_online_features(
            features=[f"user_ad:{f.name}" for f in view.features],
            entity_rows=[{"user_id": u, "ad_id": e} for u, e in pairs],
        ).to_dict()
        for i, pair in enumerate(pairs):
            want = full_row(expected[pair])
            assert [got[c][i] for c in COUNTS] == [want[c] for c in COUNTS], pair

        # -- the audit record ------------------------------------------------------------------------------------------
        assert record["request_id"] == "req-1"
        assert sorted(record["subjects"]) == sorted("sha256:" + hashlib.sha256(pseudonym("k1", u).encode()).hexdigest() for u in (a, b))  # fmt: skip
        assert record["residual"] == []
        counts = record["counts"]
        for store_name in ("raw_events", "clean_events", "quarantine", "offline_snapshots", "training_sets", "users", f"online_{kind}"):  # fmt: skip
            assert counts.get(store_name, 0) > 0, (store_name, counts)
        if kind == "redis":
            assert counts["stream_entries"] > 0 and counts["stream_dedup_marks"] > 0
            # The worker (push_mode direct) keeps the pairs' state in the online rows, counted and removed with them
            # (online_redis above); it writes no pair-state keys, and its pending log was empty once caught up.
            assert counts["stream_pair_states"] == 0
        else:
            assert counts["stream_dead_letter_file"] > 0
        assert not any(f in layout.forget_audit.read_text() for f in forms)

        # -- idempotent ------------------------------------------------------------------------------------------------
        again = forget_users([a, b], load_settings(), request_id="req-2")
        assert again["removed_total"] == 0 and again["residual"] == [], again["counts"]
        assert redis_dump(client, settings) == after_redis
    finally:
        cleanup_redis(client, settings)
        for key in list(client.scan_iter(match=f"*{settings.feast.project}*", count=10_000)):
            client.delete(key)
