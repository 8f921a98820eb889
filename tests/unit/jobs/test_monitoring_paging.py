"""Paging against real local HTTP receivers (ThreadingHTTPServer on free loopback ports, started and stopped here),
through the monitoring job functions over a synthetic decision log, hour by hour:

    h1  healthy serving                           → nothing sent (the world built not to page)
    h2  30 % of decisions fail open               → serving_fail_open fires: an Alertmanager message (page receiver)
                                                     and a Slack one (warn receiver); a rerun of h2 sends nothing
    h3, h4 still failing                          → suppressed (repeat_interval 3h)
    h5  still failing, 3 h after the first message → a reminder to both
    h6  healthy again, the Alertmanager receiver is down → its resolve fails after 3 attempts (recorded, pending);
                                                     the Slack one gets the resolve
    h7  healthy, the receiver is back on its port → the pending resolve is delivered; nothing else is sent

Expected values are computed here from the rows written (fail-open share) and the timeline, not read from the job.
The webhook URLs carry a token that must appear in no log line and no file the jobs write."""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from freqcap.config import load_settings
from freqcap.jobs.monitoring import alarms_job, collect_job, drift_job, paging_job
from freqcap.layout import DataLayout
from tests.unit.domain.monitoring.helpers import log_row, write_log
from tests.unit.jobs.webhook_receiver import Receiver

T0 = datetime(2026, 10, 4, 0, 0, tzinfo=UTC)
TOKEN = "T0KEN-sekret-4f9a8b7c6d5e"
PER_HOUR = 240


def _hour(directory: Path, start: datetime, fail_share: float, rng: random.Random) -> tuple[int, int]:
    """PER_HOUR decisions in (start, start + 1h], a share of them failed open; (failed, total)."""
    rows = []
    for k in range(PER_HOUR):
        ts = start + timedelta(seconds=10 + k * 3590 / PER_HOUR)
        rows.append(log_row(ts, rng, fail_open=k < fail_share * PER_HOUR, reason="timeout"))
    write_log(directory, rows, part=f"part-{start:%H}")
    failed = sum(r["fail_open"] for r in rows)
    return failed, len(rows)


@pytest.fixture
def receivers():
    am, slack = Receiver().start(), Receiver().start()
    yield am, slack
    for r in (am, slack):
        if r.server is not None:
            r.stop()


def test_alarms_page_once_repeat_after_the_interval_and_resolve_through_an_outage(tmp_path, receivers, caplog):
    am, slack = receivers
    hooks = [
        {"name": "oncall", "url": am.url(f"hooks/am/{TOKEN}"), "format": "alertmanager", "min_severity": "page"},
        {"name": "chat", "url": slack.url(f"hooks/slack/{TOKEN}"), "format": "slack", "min_severity": "warn"},
    ]
    env = {
        "FREQCAP__DATA_DIR": str(tmp_path / "data"),
        "FREQCAP__MONITORING__PAGING__RECEIVERS": json.dumps(hooks),
        "FREQCAP__MONITORING__PAGING__REPEAT_INTERVAL": "3h",
        "FREQCAP__MONITORING__PAGING__PAGE_URL": "https://oncall.example/freqcap",
    }
    settings = load_settings(environ=env)
    log_dir = DataLayout.of(settings).decision_log_dir
    rng = random.Random(3)
    waits: list[float] = []
    caplog.set_level(logging.DEBUG)

    def run(hour: int, fail_share: float) -> tuple[dict, float]:
        start = T0 + timedelta(hours=hour - 1)
        failed, total = _hour(log_dir, start, fail_share, rng)
        inputs = {"as_of": (start + timedelta(hours=1)).isoformat(), "events_dir": None, "users": None}
        collected = collect_job(inputs, settings)
        alarms = alarms_job(collected, drift_job(collected, settings), settings)
        return paging_job(collected, alarms, settings, sleep=waits.append), failed / total

    paged, _ = run(1, 0.0)
    assert am.bodies == [] and slack.bodies == [] and paged["messages"] == []

    paged, share = run(2, 0.3)
    assert len(am.bodies) == 1 and len(slack.bodies) == 1
    # A retried run of the same hour (Airflow retries the task; alarms_job returns what it decided): nothing again.
    inputs = {"as_of": (T0 + timedelta(hours=2)).isoformat(), "events_dir": None, "users": None}
    collected = collect_job(inputs, settings)
    rerun = paging_job(collected, alarms_job(collected, drift_job(collected, settings), settings), settings)
    assert rerun["messages"] == [] and len(am.bodies) == 1 and len(slack.bodies) == 1
    body = am.bodies[0]
    assert am.paths == ["/hooks/am/" + TOKEN]
    labels = {
        "alertname": "serving_fail_open",
        "segment": "all",
        "severity": "page",
        "metric": "fail_open_rate",
        "service": "freqcap",
    }
    assert {k: body[k] for k in ("version", "status", "receiver", "groupLabels", "externalURL", "truncatedAlerts")} == {
        "version": "4",
        "status": "firing",
        "receiver": "oncall",
        "groupLabels": {"alertname": "serving_fail_open"},
        "externalURL": "https://oncall.example/freqcap",
        "truncatedAlerts": 0,
    }
    assert body["groupKey"] == '{}:{alertname="serving_fail_open"}' and body["commonLabels"] == labels
    [alert] = body["alerts"]
    assert alert["status"] == "firing" and alert["labels"] == labels
    assert alert["startsAt"] == "2026-10-04T02:00:00Z" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert float(alert["annotations"]["value"]) == pytest.approx(share, abs=1e-6)
    assert len(alert["fingerprint"]) == 16
    text = slack.bodies[0]["text"]
    assert set(slack.bodies[0]) == {"text"}
    assert text.startswith("[FIRING:1] freqcap serving_fail_open\n") and "[all] fail_open_rate=0.3" in text

    for hour in (3, 4):
        paged, _ = run(hour, 0.3)
        assert len(am.bodies) == 1 and len(slack.bodies) == 1, f"hour {hour}: a repeat before the interval"
        assert paged["suppressed"] == ["oncall:serving_fail_open|all", "chat:serving_fail_open|all"]

    paged, _ = run(5, 0.3)  # 3 h after the first message
    assert len(am.bodies) == 2 and len(slack.bodies) == 2
    assert am.bodies[1]["alerts"][0]["fingerprint"] == alert["fingerprint"]
    assert am.bodies[1]["alerts"][0]["startsAt"] == "2026-10-04T02:00:00Z"  # the same incident, reminded
    assert "(reminder)" in slack.bodies[1]["text"]

    am.stop()
    paged, _ = run(6, 0.0)
    assert len(slack.bodies) == 3 and slack.bodies[2]["text"].startswith("[RESOLVED] freqcap serving_fail_open")
    failed = [m for m in paged["messages"] if not m["ok"]]
    assert paged["failed"] == 1 and failed[0]["receiver"] == "oncall" and failed[0]["attempts"] == 3
    assert failed[0]["status"] == "resolved" and failed[0]["error"].startswith("URLError")
    assert waits == [0.5, 1.0]  # backoff 0.5 s · 2^k between the 3 attempts
    assert paged["pending"] == 1
    assert any("PAGING FAILED to oncall" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)

    am.start()  # the same port
    paged, _ = run(7, 0.0)
    assert len(am.bodies) == 3 and len(slack.bodies) == 3  # only the pending resolve
    resolved = am.bodies[2]
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["status"] == "resolved"
    assert resolved["alerts"][0]["endsAt"] == "2026-10-04T06:00:00Z"  # when it cleared, not when delivered
    assert resolved["alerts"][0]["fingerprint"] == alert["fingerprint"]
    assert paged["pending"] == 0 and paged["failed"] == 0

    store = DataLayout.of(settings).paging_dir
    deliveries = [json.loads(x) for x in (store / "deliveries.jsonl").read_text().splitlines()]
    assert [(d["receiver"], d["status"], d["ok"]) for d in deliveries] == [
        ("oncall", "firing", True), ("chat", "firing", True),
        ("oncall", "firing", True), ("chat", "firing", True),
        ("oncall", "resolved", False), ("chat", "resolved", True),
        ("oncall", "resolved", True),
    ]  # fmt: skip
    written = "".join(
        p.read_text() for p in (tmp_path / "data").rglob("*") if p.is_file() and p.suffix in {".json", ".jsonl"}
    )
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in written and TOKEN not in logged
    assert TOKEN not in repr(settings.monitoring.paging)


def test_a_receiver_url_must_be_http_and_is_not_echoed():
    from pydantic import ValidationError

    bad = [{"name": "x", "url": f"ftp://host/{TOKEN}"}]
    with pytest.raises(ValidationError) as err:
        load_settings(environ={"FREQCAP__MONITORING__PAGING__RECEIVERS": json.dumps(bad)})
    assert "url" in str(err.value) and TOKEN not in str(err.value)
