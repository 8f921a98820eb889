"""Monitoring over a decision log written by the real decision API (Feast SQLite online store, TestClient), hour by
hour: cap hit rates equal a loop over the log's JSON lines; a real fail-open outage (the online store's database
file is gone, so every lookup errs) fires the page-severity alarm once, stays quiet while it lasts and resolves
after; a policy that tightens the `cold` audience's caps moves those cohorts' cap hit rates and names them. The
on-call page is rendered by headless Chromium (screenshot and DOM) while serving is degraded.

Timeline (T = 10:00 on the world's last day; 200 users, one request of their 3 most-seen ads per user and
hour): hours 0–3 policy p1 → hour 4 the store is down → hour 5 down for the first half, then served with p2 (cold
capped harder) → hour 6 p2. Monitoring runs at T+4h, T+5h, T+6h and T+7h."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections import defaultdict
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient

from freqcap.adapters.decision_log import DecisionLog
from freqcap.api.app import create_app
from freqcap.jobs.features import build_features_job, materialize_job
from freqcap.jobs.monitoring import run_monitoring
from freqcap.jobs.privacy import pseudonymous_events
from freqcap.layout import DataLayout, MonitoringRun
from tests.conftest import _service_missing
from tests.integration.test_feast_online import _settings
from tests.unit.domain.monitoring.helpers import simulate_world

pytestmark = pytest.mark.slow
TOKEN = "monitoring-test-admin-token-0123456789"
USERS = 200


def _policy(path, version: str, cold_tight: bool):
    doc = {
        "version": version,
        "created_at": "2026-10-01T00:00:00Z",
        "defaults": [
            {"level": "advertiser", "caps": [{"window": "28d", "max": 30}]},
            {"level": "campaign", "caps": [{"window": "7d", "max": 10}]},
            {"level": "ad", "caps": [{"window": "7d", "max": 4}]},
        ],
        "rules": [
            {"match": {"audience": "cold"}, "level": "ad", "caps": [{"window": "7d", "max": 1}]},
            {"match": {"audience": "cold"}, "level": "campaign", "caps": [{"window": "7d", "max": 1}]},
        ]
        if cold_tight
        else [],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring-serving")
    events_dir, users_path, end = simulate_world(tmp / "world", seed=4, users=USERS, days=3)
    t = end - timedelta(hours=14)  # 10:00 on the last day: the simulated traffic is up (for realized frequency)
    settings = _settings(tmp / "data", "sqlite")
    repo = DataLayout.of(settings).feast_repo
    # The features pipeline's own steps (bulk materialization into the SQLite online store) as of T.
    # From the events as the batch ingestion edge passes them on (pseudonymous ids, serving maps requests alike).
    private_events, private_users = pseudonymous_events(settings, events_dir, users_path)
    materialize_job(build_features_job(private_events, t.isoformat(), settings, users=private_users), settings)

    events = pq.read_table(events_dir).to_pandas()
    seen = events[(events["event_type"] == "impression") & (events["event_ts"] <= pd.Timestamp(t))]
    top = seen.groupby(["user_id", "ad_id", "campaign_id", "advertiser_id"]).size().rename("n").reset_index()
    top = top.sort_values(["user_id", "n", "ad_id"], ascending=[True, False, True]).groupby("user_id").head(3)
    cands = {u: g[["ad_id", "campaign_id", "advertiser_id"]].to_dict("records") for u, g in top.groupby("user_id")}
    users = sorted(cands)
    p1, p2 = _policy(tmp / "p1.yaml", "p1", False), _policy(tmp / "p2.yaml", "p2", True)
    log = DecisionLog(settings.data_dir / "decision_log", sample_rate=1.0, flush_seconds=0.05)
    rng = random.Random(4)

    online = repo / "online.db"

    def serve(policy, hours: list[tuple[int, range]], store_down: bool = False):
        """One serving process (app lifespan) answering every user once per (hour, minutes) slot."""
        if store_down:  # the online store's file is gone (a lost volume): every lookup raises, serving fails open
            online.rename(online.with_suffix(".away"))
        app = create_app(
            settings,
            policy_path=policy,
            repo_dir=repo,
            admin_token=TOKEN,
            budget_ms=5000,
            admission_ms=1000,
            decision_log=log,
        )
        with TestClient(app) as client:
            for hour, minutes in hours:
                for u in users:
                    ts = t + timedelta(hours=hour, minutes=rng.choice(minutes), seconds=rng.randrange(1, 60))
                    body = {
                        "user_id": u,
                        "context": {"format": rng.choice(["feed", "reels"]), "ts": ts.isoformat()},
                        "candidates": cands[u],
                    }
                    assert client.post("/v1/decide", json=body).status_code == 200
        if store_down:
            online.with_suffix(".away").rename(online)

    serve(p1, [(hour, range(60)) for hour in range(4)])
    serve(p1, [(4, range(60)), (5, range(30))], store_down=True)
    serve(p2, [(5, range(30, 60)), (6, range(60))])
    return {
        "per_hour": sum(len(cands[u]) for u in users),
        "tmp": tmp,
        "t": t,
        "events": events_dir,
        "users": users_path,
        "log": settings.data_dir / "decision_log",
        "p1": p1,
    }


@pytest.fixture(scope="module")
def runs(served, tmp_path_factory):
    """Four hourly monitoring runs over the same data dir (incident state carries over between them)."""
    from freqcap.config import load_settings

    data = served["tmp"] / "data"
    settings = load_settings(
        environ={"FREQCAP__DATA_DIR": str(data), "FREQCAP__MONITORING__POLICY_PATH": str(served["p1"])}
    )
    out = {}
    for hour in (4, 5, 6, 7):
        as_of = served["t"] + timedelta(hours=hour)
        # The decision-log gate (Great Expectations) runs on the first hour only: ~3 s a run.
        out[hour] = run_monitoring(
            settings, as_of, events_dir=str(served["events"]), users=str(served["users"]), validate=hour == 4
        )
        out[hour]["page"] = (data / "monitoring" / "oncall.html").read_text()
    return out


def _raw_window(log_dir, start: datetime, end: datetime) -> list[dict]:
    rows = [json.loads(line) for f in sorted(log_dir.rglob("*.jsonl")) for line in f.read_text().splitlines()]
    return [r for r in rows if start < datetime.fromisoformat(r["ts"]) <= end]


def _metrics(result) -> dict[tuple[str, str], dict]:
    doc = json.loads(Path(result["collected"]["metrics_path"]).read_text())
    return {(r["name"], r["segment"]): r for r in doc["rows"]}


def test_cap_hit_rates_equal_a_brute_force_count_over_the_log(served, runs):
    t = served["t"]
    raw = _raw_window(served["log"], t + timedelta(hours=3), t + timedelta(hours=4))
    assert len(raw) == served["per_hour"]  # every request of the hour was logged, one line per candidate
    got = _metrics(runs[4])
    hits, total = defaultdict(int), defaultdict(int)
    for r in raw:
        assert not r["fail_open"]
        for seg in ("all", f"cohort={r['audience']}/{r['signal_tier']}", f"format={r['format']}", f"hour={r['hour']}"):
            total[seg] += 1
            hits[seg] += bool(r["hit"])
        if r["hit"]:
            hits[f"level={r['level']}"] += 1
    for seg, n in total.items():
        assert got[("cap_hit_rate", seg)]["support"] == n, seg
        assert got[("cap_hit_rate", seg)]["value"] == pytest.approx(hits[seg] / n), seg
    for level in ("advertiser", "campaign", "ad"):
        if ("cap_hit_rate", f"level={level}") in got:
            assert got[("cap_hit_rate", f"level={level}")]["value"] == pytest.approx(hits[f"level={level}"] / len(raw))
    assert 0.05 < hits["all"] / len(raw) < 0.95, "caps must bind for some decisions and not for others"
    assert len([k for k in got if k[0] == "cap_hit_rate" and k[1].startswith("cohort=")]) >= 3
    assert runs[4]["alarms"]["fired"] == [] and runs[4]["alarms"]["open"] == []
    # Realized frequency ran on the same hour's simulated impressions against p1 (its numbers: unit tests).
    assert ("beyond_cap_share", "all") in got and ("frequency_to_cap_p99", "level=ad") in got
    # What serving logged passes the decision-log gate: every row of the four hours the run reads.
    assert runs[4]["validated"] == {**runs[4]["validated"], "validated": True, "rows": 4 * served["per_hour"]}


def test_fail_open_alarm_fires_once_and_resolves(served, runs):
    t = served["t"]
    second = runs[5]["alarms"]
    assert [(i["rule"], i["severity"]) for i in second["fired"]] == [("serving_fail_open", "page")]
    raw = _raw_window(served["log"], t + timedelta(hours=4), t + timedelta(hours=5))
    assert (
        _metrics(runs[5])[("fail_open_rate", "all")]["value"]
        == pytest.approx(sum(r["fail_open"] for r in raw) / len(raw))
        == 1.0
    )
    assert _metrics(runs[5])[("fail_open_rate", "reason=store_error: OperationalError")]["value"] == 1.0
    third = runs[6]["alarms"]
    assert "serving_fail_open" not in {i["rule"] for i in third["fired"]}  # still failing: quiet
    raw = _raw_window(served["log"], t + timedelta(hours=5), t + timedelta(hours=6))
    want = sum(r["fail_open"] for r in raw) / len(raw)
    assert 0.3 < want < 0.7 and _metrics(runs[6])[("fail_open_rate", "all")]["value"] == pytest.approx(want)
    fourth = runs[7]["alarms"]
    assert [r["rule"] for r in fourth["resolved"]] == ["serving_fail_open"]
    assert fourth["resolved"][0]["opened_at"] == (t + timedelta(hours=5)).isoformat()
    assert 'data-state="ok"' in runs[7]["page"]
    # Since when: the first failed-open decision, to the second — from the log, not the hourly run.
    first_failure = min(
        datetime.fromisoformat(r["ts"]) for r in _raw_window(served["log"], t, t + timedelta(hours=7)) if r["fail_open"]
    )
    ctx = json.loads(MonitoringRun(Path(runs[6]["collected"]["run_dir"])).page_context.read_text())
    assert ctx["serving_degraded"] and datetime.fromisoformat(ctx["fail_open"]["since"]) == first_failure
    last_failure = max(datetime.fromisoformat(r["ts"]) for r in raw if r["fail_open"])
    assert datetime.fromisoformat(ctx["fail_open"]["last_failure"]) == last_failure
    assert not ctx["fail_open"]["ongoing"]  # the store came back half-way through hour 5


def test_tighter_caps_for_cold_name_the_cold_cohorts(served, runs):
    fired = [i for i in runs[6]["alarms"]["fired"] if i["rule"] == "cap_hit_rate_shift"]
    assert fired and all(i["segment"].startswith("cohort=cold/") for i in fired)
    assert all(i["value"] > 0.15 for i in fired)
    assert "cap_hit_rate_shift" not in {i["rule"] for i in runs[7]["alarms"]["fired"]}  # still shifted: quiet
    still_open = {i["segment"] for i in runs[7]["alarms"]["open"] if i["rule"] == "cap_hit_rate_shift"}
    assert {i["segment"] for i in fired} <= still_open


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.state, self.off, self.text = None, [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") == "serving-status":
            self.state = a.get("data-state")
        if tag == "tr" and a.get("class") == "off" and "data-cohort" in a:
            self.off.append(a["data-cohort"])

    def handle_data(self, data):
        self.text.append(data)


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        _service_missing("chromium", "not installed (make test installs Debian's chromium)")
    return path


def test_on_call_page_renders_degraded_state_and_cohort_in_chromium(runs, tmp_path):
    from PIL import Image

    page = runs[6]["published"]["run_page"]
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"]  # fmt: skip
    png = tmp_path / "oncall.png"
    subprocess.run([*args, f"--screenshot={png}", f"file://{page}"], check=True, capture_output=True, timeout=90)
    dom = subprocess.run(
        [*args, "--dump-dom", f"file://{page}"], check=True, capture_output=True, text=True, timeout=90
    )
    parsed = _Dom()
    parsed.feed(dom.stdout)
    assert parsed.state == "degraded"
    text = " ".join(parsed.text)
    assert "SERVING DEGRADED" in text and "Degraded since" in text and "store_error" in text
    fired = {
        i["segment"].removeprefix("cohort=") for i in runs[6]["alarms"]["fired"] if i["rule"] == "cap_hit_rate_shift"
    }
    assert fired and set(parsed.off) == fired and all(c.startswith("cold/") for c in parsed.off)
    with Image.open(png) as img:
        assert img.size == (1280, 900)
        rgb = img.convert("RGB")
        colors = rgb.getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 50, "a blank page has a handful of colours"
        # the degraded banner (#c62828) fills a large block near the top
        red = sum(1 for x in range(40, 1240, 8) for y in range(70, 170, 4) if rgb.getpixel((x, y)) == (198, 40, 40))
        assert red > 1000
