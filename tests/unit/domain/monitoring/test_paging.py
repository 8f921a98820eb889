"""What paging sends, decided on plain alarm results (the job test sends them to real receivers): severity
routing, resolves of incidents lost between runs, `send_resolved: false`, and the Alertmanager body's shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from freqcap.domain.monitoring.paging import (
    Receiver,
    alertmanager_payload,
    fingerprint,
    plan_messages,
    record_delivery,
    slack_payload,
)

T = datetime(2026, 10, 4, 12, tzinfo=UTC)


def _incident(rule: str, segment: str, severity: str, opened: datetime = T) -> dict:
    return {"rule": rule, "segment": segment, "metric": "m", "severity": severity, "retrain": False,
            "threshold": 0.5, "opened_at": opened.isoformat(), "last_breach_at": opened.isoformat(),
            "value": 0.7, "peak": 0.7, "clear_runs": 0}  # fmt: skip


def _deliver_all(plan, now):
    state = plan.state
    for m in plan.messages:
        state = record_delivery(state, m, True, now)
    return state


def test_a_page_receiver_gets_page_alarms_only_and_a_warn_receiver_gets_both():
    alarms = {"open": [_incident("a_page", "all", "page"), _incident("a_warn", "cohort=x/y", "warn")], "resolved": []}
    plan = plan_messages({}, alarms, [Receiver("pager", min_severity="page"), Receiver("chat", "slack")], T, 3600)
    sent = sorted((m.receiver, m.rule) for m in plan.messages)
    assert sent == [("chat", "a_page"), ("chat", "a_warn"), ("pager", "a_page")]


def test_an_incident_gone_without_a_resolve_event_is_resolved_at_this_run():
    receivers = [Receiver("pager")]
    first = plan_messages({}, {"open": [_incident("r", "all", "page")]}, receivers, T, 3600)
    state = _deliver_all(first, T)
    later = T + timedelta(hours=5)
    plan = plan_messages(state, {"open": [], "resolved": []}, receivers, later, 3600)  # a run was lost
    [message] = plan.messages
    assert message.status == "resolved"
    body = alertmanager_payload(message)
    assert (
        body["alerts"][0]["endsAt"] == "2026-10-04T17:00:00Z"
        and body["alerts"][0]["startsAt"] == "2026-10-04T12:00:00Z"
    )
    state = _deliver_all(plan, later)
    assert state == {"pager": {}}  # nothing left to tell
    assert plan_messages(state, {"open": []}, receivers, later + timedelta(hours=1), 3600).messages == ()


def test_without_send_resolved_a_cleared_alarm_is_forgotten_silently():
    receivers = [Receiver("pager")]
    state = _deliver_all(plan_messages({}, {"open": [_incident("r", "all", "page")]}, receivers, T, 3600), T)
    plan = plan_messages(state, {"open": []}, receivers, T + timedelta(hours=1), 3600, send_resolved=False)
    assert plan.messages == () and plan.state == {"pager": {}}


def test_payloads_group_by_rule_and_fingerprint_by_labels():
    alarms = {"open": [_incident("r", "cohort=a/b", "warn"), _incident("r", "cohort=c/d", "warn")]}
    [message] = plan_messages({}, alarms, [Receiver("x")], T, 3600).messages
    body = alertmanager_payload(message, "https://page")
    assert body["groupKey"] == '{}:{alertname="r"}' and body["status"] == "firing"
    assert body["commonLabels"] == {"alertname": "r", "severity": "warn", "metric": "m", "service": "freqcap"}
    prints = [a["fingerprint"] for a in body["alerts"]]
    assert len(set(prints)) == 2 and prints[0] == fingerprint(body["alerts"][0]["labels"])
    text = slack_payload(message, "https://page")["text"]
    assert text.splitlines()[0] == "[FIRING:2] freqcap r" and text.splitlines()[-1] == "On-call page: https://page"
