"""Alarm rules and the incident state machine: fire once, stay quiet, resolve; persisted between runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from freqcap.adapters.incident_store import IncidentStore
from freqcap.domain.monitoring.alarms import observe, step
from freqcap.domain.monitoring.metrics import MetricRow
from freqcap.domain.monitoring.rules import AlertsConfig, MonitoringConfigError, load_alerts, load_dashboard
from tests.unit.domain.monitoring.helpers import T0

RULES = AlertsConfig.model_validate(
    {
        "rules": [
            {"name": "fail_open", "metric": "fail_open_rate", "above": 0.05, "min_support": 50, "severity": "page"},
            {"name": "drift", "metric": "drift_share", "above": 0.25, "retrain": True},
            {"name": "shift", "metric": "cap_hit_rate_change", "segments": "cohort=*", "absolute": True,
             "above": 0.15, "min_support": 100, "clear_after": 2},
        ]
    }
)  # fmt: skip


def run(store: IncidentStore, hour: int, rows: list[MetricRow]):
    outcome = step(store.load(), RULES, observe(RULES, rows), T0 + timedelta(hours=hour))
    store.commit(outcome)
    return outcome


def test_an_incident_fires_once_stays_quiet_and_resolves(tmp_path):
    store = IncidentStore(tmp_path)
    healthy = [MetricRow("fail_open_rate", "all", 0.0, 500)]
    assert not run(store, 0, healthy).fired
    bad = run(store, 1, [MetricRow("fail_open_rate", "all", 0.4, 500)])
    assert [(i.rule, i.segment, i.severity) for i in bad.fired] == [("fail_open", "all", "page")]
    assert not bad.retrain
    for hour, value in ((2, 0.9), (3, 0.2)):  # still breaching: quiet
        quiet = run(store, hour, [MetricRow("fail_open_rate", "all", value, 500)])
        assert not quiet.fired and [i.rule for i in quiet.open] == ["fail_open"]
    assert quiet.open[0].opened_at == (T0 + timedelta(hours=1)).isoformat()
    assert quiet.open[0].peak == 0.9 and quiet.open[0].value == 0.2
    # Too little support says nothing: the incident stays open.
    assert [i.rule for i in run(store, 4, [MetricRow("fail_open_rate", "all", 0.0, 10)]).open] == ["fail_open"]
    cleared = run(store, 5, healthy)
    assert [r["rule"] for r in cleared.resolved] == ["fail_open"] and not cleared.open
    assert cleared.resolved[0]["opened_at"] == (T0 + timedelta(hours=1)).isoformat()
    again = run(store, 6, [MetricRow("fail_open_rate", "all", 0.3, 500)])  # a new incident
    assert [i.opened_at for i in again.fired] == [(T0 + timedelta(hours=6)).isoformat()]
    events = [(e["event"], e["rule"], e["at"][11:16]) for e in store.history()]
    assert events == [
        ("fired", "fail_open", "01:00"),
        ("resolved", "fail_open", "05:00"),
        ("fired", "fail_open", "06:00"),
    ]


def test_one_incident_per_segment_abs_threshold_and_clear_after(tmp_path):
    store = IncidentStore(tmp_path)
    rows = [
        MetricRow("cap_hit_rate_change", "cohort=cold/engaged", -0.3, 400),  # a fall counts (absolute)
        MetricRow("cap_hit_rate_change", "cohort=returning/engaged", 0.05, 400),
        MetricRow("cap_hit_rate_change", "cohort=high_intent/converter", 0.5, 20),  # too little support
        MetricRow("cap_hit_rate_change", "level=ad", 0.9, 1000),  # not a cohort segment
    ]
    first = run(store, 0, rows)
    assert [i.segment for i in first.fired] == ["cohort=cold/engaged"]
    second = run(store, 1, [MetricRow("cap_hit_rate_change", "cohort=cold/engaged", 0.02, 400)])
    assert not second.resolved and second.open[0].clear_runs == 1  # clear_after: 2
    third = run(store, 2, [MetricRow("cap_hit_rate_change", "cohort=cold/engaged", 0.01, 400)])
    assert [r["segment"] for r in third.resolved] == ["cohort=cold/engaged"]


def test_drift_incident_asks_for_retraining_once(tmp_path):
    store = IncidentStore(tmp_path)
    assert run(store, 0, [MetricRow("drift_share", "all", 0.5, 5000)]).retrain
    assert not run(store, 1, [MetricRow("drift_share", "all", 0.6, 5000)]).retrain


def test_reruns_and_older_runs_change_nothing(tmp_path):
    store = IncidentStore(tmp_path)
    run(store, 3, [MetricRow("drift_share", "all", 0.5, 5000)])
    state = store.load()
    for hour in (3, 1):  # a retry of the same run, and a backfill of an older one
        outcome = run(
            store, hour, [MetricRow("drift_share", "all", 0.9, 5000), MetricRow("fail_open_rate", "all", 1, 900)]
        )
        assert outcome.stale and not outcome.fired and not outcome.resolved
    assert store.load() == state and len(store.history()) == 1


def test_incidents_of_removed_rules_resolve(tmp_path):
    store = IncidentStore(tmp_path)
    run(store, 0, [MetricRow("drift_share", "all", 0.5, 5000)])
    fewer = AlertsConfig(rules=tuple(r for r in RULES.rules if r.name != "drift"))
    outcome = step(store.load(), fewer, [], T0 + timedelta(hours=1))
    assert [(r["rule"], r["reason"]) for r in outcome.resolved] == [("drift", "rule removed")]


def test_shipped_alerts_and_dashboard_load():
    alerts = load_alerts()
    assert {r.metric for r in alerts.rules} >= {
        "drift_share",
        "cap_hit_rate_change",
        "fail_open_rate",
        "stream_lag_seconds",
    }
    assert [r.name for r in alerts.rules if r.retrain] == ["feature_drift", "prediction_drift"]
    dashboard = load_dashboard()
    assert {t.title for t in dashboard.tabs} >= {"On-call", "Cap hits", "Drift"}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "x", "metric": "m"}, "exactly one of `above` or `below`"),
        ({"name": "Bad Name", "metric": "m", "above": 1}, "rules.0.name"),
        ({"name": "x", "metric": "m", "above": 1, "severity": "urgent"}, "rules.0.severity"),
        ({"name": "x", "metric": "m", "above": 1, "colour": "red"}, "rules.0.colour"),
    ],
)
def test_invalid_alerts_name_the_field(tmp_path, rule, message):
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump({"rules": [rule]}))
    with pytest.raises(MonitoringConfigError, match=message) as err:
        load_alerts(path)
    assert str(path) in str(err.value)
