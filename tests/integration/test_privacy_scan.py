"""The raw-id scan: after a full run, no artifact holds a raw user id of the input.

The run is what `freqcap demo` does (simulate -> features DAG -> training DAG -> serve + publish DAG -> monitoring),
in a subprocess of its own, then the stream worker over the same world's last day on the shared Redis under this
test's own key prefix, pushing into a Feast store of its own. Every file the run wrote is scanned — Parquet
contents, SQLite databases (Feast's online store and registry, MLflow's tracking DB, Airflow's metadata DB) as raw
pages and as rows, MLflow artifacts, the Evidently workspace, Great Expectations Data Docs, logs, the quarantine,
the decision log, the dead letters — and every Redis key and value under this test's prefix, for every raw user id
of the input. Only the input itself is left out: the simulated world under `data/raw/` and the Redis stream the
producer writes, which the edge reads (the test checks that the scan finds the raw ids there, so it can fail).

A second demo with `privacy.enabled=false` must leak raw ids into the same kinds of artifact: the scan is shown to
find what it looks for.
"""

from __future__ import annotations

import gzip
import os
import random
import re
import sqlite3
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis
import yaml

from freqcap.domain.stream.messages import event_fields
from freqcap.domain.training.config import default_model_config_path

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(2400)]

# Small, and a 2-day attribution window so that a week of events leaves days of complete labels to train on.
WORLD = ["--users", "800", "--days", "7", "--seed", "5"]


def _model_config(path: Path) -> Path:
    raw = yaml.safe_load(default_model_config_path().read_text())
    raw["label"]["attribution_window"] = "2d"
    raw["xgboost"]["num_boost_round"] = 40
    raw["curve"].update({"max_n": 10, "sample_rows": 500})
    path.write_text(yaml.safe_dump(raw))
    return path


def _demo(work: Path, privacy: bool) -> Path:
    """Run `freqcap demo` in `work` (a process of its own: Airflow configures itself per process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FREQCAP", "AIRFLOW"))}
    env["FREQCAP__PRIVACY__ENABLED"] = "true" if privacy else "false"
    work.mkdir(parents=True, exist_ok=True)
    env["FREQCAP__TRAINING__MODEL_CONFIG_PATH"] = str(_model_config(work.parent / f"{work.name}-model.yaml"))
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    done = subprocess.run(
        [sys.executable, "-m", "freqcap.cli", "demo", "--dir", str(work), *WORLD],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return work / "data"


def _raw_ids(data: Path) -> set[bytes]:
    ids = pq.read_table(data / "raw" / "users.parquet", columns=["user_id"]).column(0).to_pylist()
    assert len(ids) >= 300
    return {i.encode() for i in ids}


class Scanner:
    """Finds raw ids in bytes: every token shaped like the simulator's ids (`u` + fixed-width digits, not inside a
    longer word), kept when it is one of the input's ids."""

    def __init__(self, raw: set[bytes]):
        widths = {len(r) for r in raw}
        assert len(widths) == 1 and all(re.fullmatch(rb"u\d+", r) for r in raw), "simulator ids: u + fixed digits"
        digits = widths.pop() - 1
        self.raw = raw
        self.pattern = re.compile(rb"(?<![A-Za-z0-9_-])u\d{%d}(?!\d)" % digits)

    def found(self, data: bytes) -> set[bytes]:
        return {m for m in self.pattern.findall(data) if m in self.raw}

    def file(self, path: Path) -> set[bytes]:
        """Raw ids in a file: its bytes, and what they decode to (Parquet rows, SQLite rows, gzip, zip)."""
        data = path.read_bytes()
        hits = self.found(data)
        if data[:4] == b"PAR1":
            hits |= self.found(repr(pq.read_table(path).to_pylist()).encode())
        elif data[:16] == b"SQLite format 3\x00":
            hits |= self._sqlite(path)
        elif data[:2] == b"\x1f\x8b":
            hits |= self.found(gzip.decompress(data))
        elif data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    hits |= self.found(archive.read(name))
        return hits

    def _sqlite(self, path: Path) -> set[bytes]:
        hits: set[bytes] = set()
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for row in con.execute(f'SELECT * FROM "{table}"'):
                    for value in row:
                        if value is not None:
                            hits |= self.found(value if isinstance(value, bytes) else str(value).encode())
        finally:
            con.close()
        return hits

    def tree(self, root: Path, skip: tuple[Path, ...]) -> dict[str, set[bytes]]:
        """{relative path: raw ids found} for every file under `root` outside `skip`."""
        leaks = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if any(path.is_relative_to(s) for s in skip):
                continue
            hits = self.file(path)
            if hits:
                leaks[str(path.relative_to(root))] = hits
        return leaks


def _stream(data: Path, redis_url: str) -> tuple[object, object]:
    """The stream worker over the world's last day (plus a malformed and a late event of real users), state and
    dead letters in Redis under this test's prefix, pushing into a Feast Redis store of its own project."""
    from freqcap.adapters.feast.store import apply_definitions, open_store
    from freqcap.adapters.stream.produce import produce
    from freqcap.jobs.stream import redis_worker
    from tests.integration.stream_support import stream_settings

    settings, _ = stream_settings(data, redis_url)
    repo = data / "stream-feast"
    store = open_store(settings, repo)
    apply_definitions(store, settings, repo)
    events = pq.read_table(data / "raw" / "events").to_pylist()
    end = max(e["event_ts"] for e in events)
    live = sorted((e for e in events if e["event_ts"] > end - timedelta(days=1)), key=lambda e: e["event_ts"])
    messages = [event_fields(e) for e in live]
    rng = random.Random(3)
    bad = dict(messages[rng.randrange(len(messages))], event_id="bad-1", event_type="hover")
    late = dict(messages[0], event_id="late-1", event_ts=(end - timedelta(days=3)).isoformat())
    messages += [bad, late]
    host, port = redis_url.split(":")
    client = redis.Redis(host=host, port=int(port))
    produce(client, settings.stream.stream_key, messages)
    with redis_worker(settings, store, consumer="scan") as worker:
        stats = worker.run(until_caught_up=True)
    assert stats.applied >= len(live) * 0.9 and stats.dead_letters >= 2, stats
    return settings, store


def _redis_leaks(client: redis.Redis, settings, scanner: Scanner) -> tuple[dict[bytes, set[bytes]], set[bytes]]:
    """Raw ids in every key and value of this test's stream prefix and Feast project, and (apart) in the input
    stream."""
    cfg = settings.stream
    prefix = cfg.stream_key.rsplit(":", 1)[0]  # t<tag>: stream, state, dead letters share it
    keys = set(client.scan_iter(match=f"{prefix}:*", count=10_000))
    keys |= set(client.scan_iter(match=f"*{settings.feast.project}*", count=10_000))
    leaks, in_input = {}, set()
    for key in keys:
        blob = key + b"\n" + _dump(client, key)
        hits = scanner.found(blob)
        if key.decode(errors="replace").startswith(cfg.stream_key) and not key.endswith(b":meta"):
            in_input |= hits  # the producer's stream: the edge's input
        elif hits:
            leaks[key] = hits
    return leaks, in_input


def _dump(client: redis.Redis, key: bytes) -> bytes:
    kind = client.type(key)
    if kind == b"string":
        return client.get(key) or b""
    if kind == b"hash":
        return b"\n".join(k + b"=" + v for k, v in client.hgetall(key).items())
    if kind == b"set":
        return b"\n".join(client.smembers(key))
    if kind == b"zset":
        return b"\n".join(m for m, _ in client.zrange(key, 0, -1, withscores=True))
    if kind == b"list":
        return b"\n".join(client.lrange(key, 0, -1))
    if kind == b"stream":
        return b"\n".join(b"%s %s" % (i, b" ".join(k + b"=" + v for k, v in f.items())) for i, f in client.xrange(key))
    return b""


def test_no_artifact_of_a_full_run_holds_a_raw_user_id(tmp_path, redis_connection_string):
    from tests.integration.stream_support import cleanup_redis

    work = tmp_path / "private"
    data = _demo(work, privacy=True)
    raw = _raw_ids(data)
    scanner = Scanner(raw)
    # The input holds them (the scan finds what it looks for), and the run wrote the stores it is meant to.
    assert scanner.tree(data / "raw", skip=()), "the scan must find the raw ids in the input"
    for store in ("runs", "feast", "mlflow", "curves", "training", "publish", "decision_log", "monitoring", "gx"):
        assert any((data / store).rglob("*")), store
    # dag.test() logs to the console (the demo's output): Airflow's own store is its metadata DB.
    assert any(data.rglob("quarantine.parquet")) and (work / "airflow" / "airflow.db").is_file()

    host, port = redis_connection_string.split(":")
    client = redis.Redis(host=host, port=int(port))
    settings, store = _stream(data, redis_connection_string)
    try:
        redis_leaks, in_input = _redis_leaks(client, settings, scanner)
        leaks = scanner.tree(work, skip=(data / "raw",))
        assert in_input, "the producer's stream holds raw ids: the scan of Redis can find them"
        assert redis_leaks == {}, {k: sorted(v)[:3] for k, v in redis_leaks.items()}
        assert leaks == {}, {k: sorted(v)[:3] for k, v in leaks.items()}
        assert any(data.rglob("pseudonym_keys.yaml")), "the generated key is kept beside the data"
    finally:
        cleanup_redis(client, settings)
        store.teardown()
        client.close()


def test_with_privacy_disabled_the_scan_finds_raw_ids(tmp_path):
    """The control: the same run without pseudonymization leaves raw ids in the stores the first test checks."""
    work = tmp_path / "raw-ids"
    data = _demo(work, privacy=False)
    scanner = Scanner(_raw_ids(data))
    leaks = scanner.tree(work, skip=(data / "raw",))
    leaked_in = {Path(p).parts[1] if p.startswith("data/") else Path(p).parts[0] for p in leaks}
    # Clean events, quarantine and features (runs), Feast's snapshots and online store, training sets.
    assert {"runs", "feast", "training"} <= leaked_in, sorted(leaks)[:20]
    assert not any(data.rglob("pseudonym_keys.yaml")), "no key is generated while privacy is disabled"
