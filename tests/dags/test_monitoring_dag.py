"""The monitoring DAG through Airflow's `dag.test()`: a world whose audience mix shifted raises the drift alarm,
whose `signal_drift` task updates the `freqcap_drift_alarm` Asset (which schedules freqcap_training); an hour
later the incident is still open and nothing is emitted again."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from freqcap.config import load_settings
from tests.unit.domain.monitoring.helpers import simulate_world, write_reference

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring-dag")
    return tmp, simulate_world(tmp / "reference", seed=1), simulate_world(tmp / "shifted", seed=2, shifted=True)


def _asset_events(name: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == name)
            .all()
        )
        return [dict(e.extra or {}) for e in rows]


def _queued_for(dag_id: str) -> int:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == dag_id).count()


def test_drift_alarm_updates_the_asset_that_schedules_training(worlds, monkeypatch, airflow_db):
    from freqcap.adapters.airflow.local import load_dag, run_dag, task_states

    tmp, (ref_events, ref_users, end), (events, users, _) = worlds
    monkeypatch.setenv("FREQCAP__DATA_DIR", str(tmp / "data"))
    write_reference(load_settings(), ref_events, ref_users, end)
    before = len(_asset_events("freqcap_drift_alarm"))

    conf = {"as_of": end.isoformat(), "events_dir": str(events), "users": str(users)}
    dag_run = run_dag("freqcap_monitoring", logical_date=end, conf=conf)
    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert set(states.values()) == {"success"}
    emitted = _asset_events("freqcap_drift_alarm")[before:]
    assert len(emitted) == 1
    assert any(i.startswith("feature_drift [all] drift_share=") for i in emitted[0]["incidents"])
    run = tmp / "data" / "monitoring" / "runs" / end.strftime("%Y%m%dT%H%M%SZ")
    alarms = json.loads((run / "alarms.json").read_text())
    assert [i["rule"] for i in alarms["fired"]] == ["feature_drift"] and alarms["retrain"]
    assert Path(tmp / "data" / "monitoring" / "oncall.html").exists()

    # The training DAG listens to it: scheduled on `freqcap_online_features | freqcap_drift_alarm`.
    training = load_dag("freqcap_training")
    assert "freqcap_drift_alarm" in repr(training.timetable.asset_condition)
    assert "freqcap_online_features" in repr(training.timetable.asset_condition)
    assert _queued_for("freqcap_training") >= 1

    later = end + timedelta(hours=1)
    conf = {"as_of": later.isoformat(), "events_dir": str(events), "users": str(users)}
    dag_run = run_dag("freqcap_monitoring", logical_date=later, conf=conf)
    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert states["signal_drift"] == "skipped" and states["publish"] == "success" and states["page"] == "success"
    assert len(_asset_events("freqcap_drift_alarm")) == before + 1  # one incident, one event


def test_monitoring_dag_shape():
    from freqcap.adapters.airflow.local import load_dag

    dag = load_dag("freqcap_monitoring")
    assert dag.tags and "freqcap" in dag.tags and len(dag.doc_md) > 200
    assert "expression='0 * * * *'" in repr(dag.timetable)  # monitoring.schedule: @hourly
    order = ["resolve", "validate_decision_log", "collect", "drift", "evaluate_alarms", "page", "publish"]
    assert {t.task_id for t in dag.tasks} == {*order, "signal_drift"}
    assert dag.get_task("page").upstream_task_ids == {"collect", "evaluate_alarms"}
    assert dag.get_task("collect").upstream_task_ids == {"resolve", "validate_decision_log"}
    assert dag.get_task("signal_drift").upstream_task_ids == {"evaluate_alarms"}
    assert dag.get_task("publish").upstream_task_ids == {"collect", "drift", "evaluate_alarms", "page"}
    assert [a.name for a in dag.get_task("signal_drift").outlets] == ["freqcap_drift_alarm"]
    assert all(t.retries >= 1 for t in dag.tasks)
