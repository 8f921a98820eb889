"""The decision log and cap-hit metrics of the running API, checked against brute-force decisions: what the
monitoring issue will aggregate must be exactly what was decided, by cohort and level, with no user ids."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from freqcap.adapters.decision_log import DecisionLog, read_decision_log
from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.store import open_store
from freqcap.api.app import create_app
from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.engine import Candidate, decide
from tests.integration.test_feast_online import T1, _run_snapshot, _settings, random_events
from tests.integration.test_serving import TOKEN, _brute_force_state, body, candidates, write_policy

USERS = [f"u{i}" for i in range(15)] + ["nobody"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("declog")
    settings = _settings(tmp_path, "sqlite")
    events_dir = tmp_path / "events"
    old = random_events(1, 250, T1 - timedelta(days=12), T1 - timedelta(days=8, seconds=1))
    recent = random_events(2, 400, T1 - timedelta(days=1), T1 + timedelta(hours=1), users=range(7))
    for i, part in enumerate([old, recent]):
        write_events(part, events_dir / f"part-{i}.parquet")
    events = [row for part in (old, recent) for row in part.to_pylist()]
    repo = tmp_path / "feast"
    _run_snapshot(settings, tmp_path, events_dir, T1, open_store(settings, repo), repo)
    return settings, repo, events, tmp_path


def _expected_hits(settings, events, policy):
    """(audience, signal_tier, level) -> hits, and decisions per cohort, from brute-force states and the engine."""
    hits, total = Counter(), Counter()
    cands = [Candidate(**c) for c in candidates()]
    for user in USERS:
        audience, tier, states = _brute_force_state(settings, events, user)
        for d in decide(policy, audience, tier, cands, states, T1):
            total[(audience, tier)] += 1
            b = d.binding
            # independent of the code's is_hit: a cap is hit when the count reached it; recency and
            # stop-after-conversion constraints only bind while active
            if b is not None and (b.kind != "cap" or b.count >= b.cap):
                hits[(audience, tier, b.level)] += 1
    return hits, total


def test_every_sampled_decision_is_logged_by_cohort_and_level(world, tmp_path):
    settings, repo, events, _ = world
    policy_path = write_policy(tmp_path)
    log = DecisionLog(tmp_path / "decisions", sample_rate=1.0, flush_seconds=0.05)
    app = create_app(
        settings,
        policy_path=policy_path,
        repo_dir=repo,
        admin_token=TOKEN,
        budget_ms=5000,
        admission_ms=1000,
        decision_log=log,
    )
    with TestClient(app) as client:
        for user in USERS:
            resp = client.post("/v1/decide", json=body(user))
            assert resp.status_code == 200 and resp.json()["degraded"] is False
        # The 16 requests can finish within one flush interval: let the periodic flush (not shutdown) write first.
        deadline = time.monotonic() + 10
        while log.written == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        metrics = client.get("/metrics").text
    frame = read_decision_log(tmp_path / "decisions")  # the lifespan's close() flushed the rest
    assert len(frame) == len(USERS) * len(candidates())
    assert not frame["degraded"].any()
    assert set(frame["policy_version"]) == {"p1"} and set(frame["format"]) == {"feed"}
    assert set(frame["hour"]) == {T1.hour} and set(frame["date"]) == {T1.date().isoformat()}

    want_hits, want_total = _expected_hits(settings, events, parse_policy(policy_path.read_text()))
    got_hits = Counter(
        {k: int(v) for k, v in frame[frame["hit"]].groupby(["audience", "signal_tier", "level"]).size().items()}
    )
    got_total = Counter({k: int(v) for k, v in frame.groupby(["audience", "signal_tier"]).size().items()})
    assert got_hits == want_hits
    assert got_total == want_total
    assert sum(want_hits.values()) > 10, "the fixture must make caps bind"
    assert len({k[2] for k in want_hits}) >= 2, "hits at more than one level"

    # No user ids anywhere in the files (the users of this world are u0..u14 and 'nobody').
    raw = "".join(p.read_text() for p in (tmp_path / "decisions").rglob("*.jsonl"))
    assert not re.search(r'"(u\d+|nobody)"', raw)
    assert "user" not in frame.columns.str.cat()

    # /metrics counts every decision (not only the sampled ones) and the hits by level.
    by_level = Counter()
    for (_, _, level), n in want_hits.items():
        by_level[level] += n
    for level in ("advertiser", "campaign", "ad"):
        assert f'freqcap_cap_hits_total{{level="{level}"}} {by_level[level]}' in metrics
    assert f"freqcap_decisions_total {len(USERS) * len(candidates())}" in metrics
    written = int(re.search(r'freqcap_decision_log_rows_total\{outcome="written"\} (\d+)', metrics).group(1))
    assert 0 < written <= len(frame)  # /metrics was read before the final flush at shutdown
    assert 'freqcap_decision_log_rows_total{outcome="dropped"} 0' in metrics
    assert 'freqcap_decide_latency_seconds_bucket{le="+Inf"} 16' in metrics


def test_sampling_logs_whole_requests(world, tmp_path):
    settings, repo, _, _ = world
    log = DecisionLog(tmp_path / "decisions", sample_rate=0.25, seed=11, flush_seconds=0.05)
    app = create_app(
        settings,
        policy_path=write_policy(tmp_path),
        repo_dir=repo,
        admin_token=TOKEN,
        budget_ms=5000,
        decision_log=log,
    )
    n = 200
    with TestClient(app) as client:
        for i in range(n):
            assert client.post("/v1/decide", json=body(USERS[i % len(USERS)])).status_code == 200
    frame = read_decision_log(tmp_path / "decisions")
    per_request = len(candidates())
    assert len(frame) % per_request == 0 and len(frame) == log.sampled_requests * per_request
    # binomial(200, 0.25): mean 50, sd ≈ 6.1
    assert 20 <= log.sampled_requests <= 80


def test_starts_without_a_valid_policy_fails_open_then_accepts_one(world, tmp_path):
    settings, repo, _, _ = world
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: p0\ncreated_at: 2026-01-01T00:00:00Z\ndefaults:\n  - level: ad\n    caps: []\n")
    log = DecisionLog(tmp_path / "decisions", sample_rate=1.0)
    app = create_app(
        settings,
        policy_path=broken,
        repo_dir=repo,
        admin_token=TOKEN,
        budget_ms=5000,
        admission_ms=1000,
        decision_log=log,
    )
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503
        resp = client.post("/v1/decide", json=body("u1"))
        assert resp.status_code == 200
        got = resp.json()
        assert got["degraded"] is True and got["degraded_reason"] == "no_policy"
        assert all(d["penalty"] == 1.0 and d["eligible"] for d in got["decisions"])
        assert client.get("/v1/policy").status_code == 503
        pushed = client.post(
            "/v1/admin/policy",
            content=write_policy(tmp_path, "p2").read_text(),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert pushed.status_code == 200 and pushed.json()["policy_version"] == "p2"
        assert client.get("/readyz").status_code == 200
        again = client.post("/v1/decide", json=body("u1")).json()
        assert again["degraded"] is False and again["policy_version"] == "p2"
        assert 'freqcap_decide_fail_open_total{reason="no_policy"} 1' in client.get("/metrics").text
    frame = read_decision_log(tmp_path / "decisions")
    assert frame["degraded"].sum() == len(candidates()) and set(frame["degraded_reason"].dropna()) == {"no_policy"}
