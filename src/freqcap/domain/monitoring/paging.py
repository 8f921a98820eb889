"""Paging: which alarm messages a monitoring run sends to each webhook receiver, and their payloads (pure).

The incident state machine (`alarms`) says what fired, what is open and what resolved. Paging adds, per receiver,
what that receiver has been told, kept between runs (`freqcap.adapters.paging_store.PagingStore`):

- an open incident the receiver has not been told about → **firing** message;
- an open incident told about at least `repeat_interval` ago → sent again (a reminder; Alertmanager's
  `repeat_interval`); told about more recently → **suppressed** (no message every hour);
- an incident the receiver was told (or tried to be told) about that is no longer open → **resolved** message
  (when `send_resolved`), with the time it resolved; an incident that is gone from the open set without a resolve
  event (a run was lost) resolves too, at this run's time;
- a message that could not be delivered stays **pending**: the next run sends it again. Nothing is dropped
  silently; every attempt is recorded (`PagingStore.record`).

Times are the monitoring run's `as_of` (not the wall clock): a rerun of a run sends nothing twice.

Messages are grouped per receiver and rule (`alertname`), like an Alertmanager route grouped by `alertname`.
Payloads: `alertmanager_payload` (the Alertmanager webhook format, version "4") and `slack_payload`
(`{"text": ...}`, which Slack, Mattermost and plain JSON receivers accept).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SEVERITY_RANK = {"warn": 0, "page": 1}
ALERTMANAGER_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert that has not ended


@dataclass(frozen=True)
class Receiver:
    """What the planner needs of a receiver (the URL stays in the adapter)."""

    name: str
    format: str = "alertmanager"
    min_severity: str = "warn"


@dataclass(frozen=True)
class Alert:
    key: str  # rule|segment
    status: str  # firing | resolved
    incident: dict[str, Any]  # the incident as `alarms` wrote it (resolved ones carry resolved_at)
    starts_at: str
    ends_at: str | None
    repeat: bool = False  # a reminder of an alarm this receiver was told about before


@dataclass(frozen=True)
class Message:
    receiver: str
    format: str
    rule: str
    alerts: tuple[Alert, ...]

    @property
    def status(self) -> str:
        return "firing" if any(a.status == "firing" for a in self.alerts) else "resolved"

    @property
    def group_key(self) -> str:
        return f'{{}}:{{alertname="{self.rule}"}}'


@dataclass(frozen=True)
class PagingPlan:
    messages: tuple[Message, ...]
    suppressed: tuple[tuple[str, str], ...]  # (receiver, key) still firing, told about recently
    state: dict[str, Any] = field(repr=False, default_factory=dict)


def _rfc3339(stamp: str) -> str:
    return datetime.fromisoformat(stamp).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_messages(
    state: dict[str, Any],
    alarms: dict[str, Any],
    receivers: list[Receiver],
    now: datetime,
    repeat_seconds: float,
    send_resolved: bool = True,
) -> PagingPlan:
    """Messages due in this run (see the module docstring). `state` maps receiver → key → what it was told:
    `{"status", "last_sent_at" (None: never delivered), "incident"}`; `alarms` is the `alarms_job` result."""
    open_ = {f"{i['rule']}|{i['segment']}": i for i in alarms.get("open", [])}
    resolved = {f"{r['rule']}|{r['segment']}": r for r in alarms.get("resolved", [])}
    stamp = now.isoformat()
    messages: list[Message] = []
    suppressed: list[tuple[str, str]] = []
    for receiver in receivers:
        told = dict(state.get(receiver.name) or {})
        due: list[Alert] = []
        floor = SEVERITY_RANK.get(receiver.min_severity, 0)
        for key, incident in sorted(open_.items()):
            if SEVERITY_RANK.get(incident["severity"], 0) < floor:
                continue
            entry = told.get(key)
            last = entry.get("last_sent_at") if entry and entry.get("status") == "firing" else None
            if last is not None and (now - datetime.fromisoformat(last)).total_seconds() < repeat_seconds:
                suppressed.append((receiver.name, key))
                continue
            due.append(Alert(key, "firing", incident, incident["opened_at"], None, repeat=last is not None))
            if entry is None or entry.get("status") != "firing":
                told[key] = {"status": "firing", "last_sent_at": None, "incident": incident}
        for key, entry in sorted(told.items()):
            if key in open_:
                continue
            if entry["status"] == "firing":  # it was firing for this receiver and is not any more
                incident = resolved.get(key) or {**entry["incident"], "resolved_at": stamp, "reason": "no longer open"}
                entry = {"status": "resolved", "last_sent_at": None, "incident": incident}
                told[key] = entry
            if not send_resolved:
                del told[key]
                continue
            if entry["last_sent_at"] is None:
                inc = entry["incident"]
                due.append(Alert(key, "resolved", inc, inc["opened_at"], inc["resolved_at"]))
        state = {**state, receiver.name: told}
        for rule in sorted({a.incident["rule"] for a in due}):
            alerts = tuple(a for a in due if a.incident["rule"] == rule)
            messages.append(Message(receiver.name, receiver.format, rule, alerts))
    return PagingPlan(tuple(messages), tuple(suppressed), state)


def record_delivery(state: dict[str, Any], message: Message, delivered: bool, now: datetime) -> dict[str, Any]:
    """The state after one message was (or was not) delivered: delivered firing alerts remember when, delivered
    resolves are forgotten; undelivered ones stay pending for the next run."""
    if not delivered:
        return state
    told = dict(state.get(message.receiver) or {})
    for alert in message.alerts:
        if alert.status == "resolved":
            told.pop(alert.key, None)
        else:
            told[alert.key] = {"status": "firing", "last_sent_at": now.isoformat(), "incident": alert.incident}
    return {**state, message.receiver: told}


# ------------------------------------------------------------------------------------------------- payloads


def labels(incident: dict[str, Any]) -> dict[str, str]:
    return {
        "alertname": incident["rule"],
        "segment": incident["segment"],
        "severity": incident["severity"],
        "metric": incident["metric"],
        "service": "freqcap",
    }


def fingerprint(label_set: dict[str, str]) -> str:
    """16 hex digits identifying an alert by its labels (stable across runs, like Alertmanager's)."""
    body = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(label_set.items()))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def summary(alert: Alert) -> str:
    i = alert.incident
    line = f"{i['rule']} [{i['segment']}] {i['metric']}={i['value']:.4g} (threshold {i['threshold']:.4g})"
    if alert.status == "resolved":
        return f"{line} resolved at {i['resolved_at']} ({i.get('reason', 'cleared')}), open since {i['opened_at']}"
    return f"{line} open since {i['opened_at']}" + (" (reminder)" if alert.repeat else "")


def alertmanager_payload(message: Message, external_url: str | None = None) -> dict[str, Any]:
    """The Alertmanager webhook body (version "4") for one message."""
    alerts = []
    for a in message.alerts:
        lab = labels(a.incident)
        alerts.append(
            {
                "status": a.status,
                "labels": lab,
                "annotations": {
                    "summary": summary(a),
                    "value": f"{a.incident['value']:.6g}",
                    "threshold": f"{a.incident['threshold']:.6g}",
                    "runbook": "docs/operations/runbook.md#alerts-runbook",
                },
                "startsAt": _rfc3339(a.starts_at),
                "endsAt": _rfc3339(a.ends_at) if a.ends_at else ALERTMANAGER_ZERO_TIME,
                "generatorURL": external_url or "",
                "fingerprint": fingerprint(lab),
            }
        )
    common = {k: v for k, v in alerts[0]["labels"].items() if all(x["labels"].get(k) == v for x in alerts)}
    return {
        "version": "4",
        "groupKey": message.group_key,
        "truncatedAlerts": 0,
        "status": message.status,
        "receiver": message.receiver,
        "groupLabels": {"alertname": message.rule},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": external_url or "",
        "alerts": alerts,
    }


def slack_payload(message: Message, external_url: str | None = None) -> dict[str, Any]:
    """`{"text": ...}`: one line per alert under a heading like Alertmanager's default Slack title."""
    firing = sum(a.status == "firing" for a in message.alerts)
    head = f"[FIRING:{firing}] freqcap {message.rule}" if firing else f"[RESOLVED] freqcap {message.rule}"
    lines = [head, *(f"• {a.incident['severity']}: {summary(a)}" for a in message.alerts)]
    if external_url:
        lines.append(f"On-call page: {external_url}")
    return {"text": "\n".join(lines)}


def payload(message: Message, external_url: str | None = None) -> dict[str, Any]:
    return (alertmanager_payload if message.format == "alertmanager" else slack_payload)(message, external_url)
