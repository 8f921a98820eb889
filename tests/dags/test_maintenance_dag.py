"""The maintenance DAG and Airflow's own cleanup against a real (SQLite) Airflow metadata DB."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from freqcap.config import load_settings

DAY = timedelta(days=1)
AIRFLOW_HORIZON = 30 * DAY  # retention.airflow_metadata default, restated


def _add_runs(dag_id: str, ages: dict[str, tuple[float, str]], now: datetime) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType

    with create_session() as session:
        for run_id, (age, kind) in ages.items():
            t = now - age * DAY
            session.add(
                DagRun(
                    dag_id=dag_id,
                    run_id=run_id,
                    logical_date=t,
                    run_after=t,
                    start_date=t,
                    run_type=DagRunType(kind),
                    state=DagRunState.SUCCESS,
                    data_interval=(t, t),
                )
            )


def _run_ids(dag_id: str) -> set[str]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return {r.run_id for r in session.query(DagRun).filter(DagRun.dag_id == dag_id)}


def test_airflow_db_clean_removes_old_dag_runs(airflow_db, tmp_path):
    from freqcap.jobs.retention import prune_group

    now = datetime.now(UTC)
    dag_id = f"retention_probe_{uuid.uuid4().hex[:6]}"
    runs = {
        "scheduled__old1": (400, "scheduled"),
        "scheduled__old2": (45, "scheduled"),
        "manual__old": (60, "manual"),
        "scheduled__recent": (5, "scheduled"),
        "manual__recent": (1, "manual"),
    }
    settings = load_settings(environ={"FREQCAP__DATA_DIR": str(tmp_path / "data")})
    # The metadata DB is shared with the other DAG tests of the run (their old runs count too): what this test's
    # runs add to the count is what is checked.
    before = prune_group("airflow", settings, now, dry_run=True)["removed"].get("airflow_metadata.dag_run", 0)
    _add_runs(dag_id, runs, now)
    # Airflow's rule, restated: runs started before the cut-off go, except each DAG's last scheduled run.
    cut = now - AIRFLOW_HORIZON
    last_scheduled = min((a for a, k in runs.values() if k == "scheduled"))
    doomed = {
        r
        for r, (age, kind) in runs.items()
        if now - age * DAY < cut and not (kind == "scheduled" and age == last_scheduled)
    }
    assert doomed == {"scheduled__old1", "scheduled__old2", "manual__old"}

    dry = prune_group("airflow", settings, now, dry_run=True)
    assert dry["removed"]["airflow_metadata.dag_run"] - before == len(doomed)
    assert _run_ids(dag_id) == set(runs)

    done = prune_group("airflow", settings, now)
    assert done["removed"] == dry["removed"]
    assert _run_ids(dag_id) == set(runs) - doomed


def _xcoms(dag_run) -> dict[str, object]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id, XComModel.key == "return_value"
        )
        return {r.task_id: XComModel.deserialize_value(r) for r in rows}


def test_the_maintenance_dag_reports_counts_per_task_and_a_dry_run_keeps_everything(airflow_db, tmp_path, monkeypatch):
    from freqcap.adapters.airflow.local import run_dag, task_states
    from freqcap.layout import DataLayout

    monkeypatch.setenv("FREQCAP__DATA_DIR", str(tmp_path / "data"))
    now = datetime(2026, 12, 1, tzinfo=UTC)
    layout = DataLayout.of(load_settings())
    old_run = layout.monitoring_run(now - 8 * DAY).metrics  # past monitoring_runs' 7d
    new_run = layout.monitoring_run(now - 1 * DAY).metrics
    for path in (old_run, new_run):
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    conf = {"now": now.isoformat(), "dry_run": True}

    dag_run = run_dag("freqcap_maintenance", logical_date=now, conf=conf)
    assert dag_run.state == "success", task_states(dag_run)
    results = _xcoms(dag_run)
    assert set(results) == {
        "prune_events",
        "prune_features",
        "prune_training",
        "prune_monitoring",
        "prune_stream",
        "clean_airflow_metadata",
    }
    monitoring = results["prune_monitoring"]
    assert monitoring["dry_run"] is True and monitoring["removed"]["monitoring_runs"] == 1
    assert old_run.exists() and new_run.exists()

    dag_run = run_dag("freqcap_maintenance", logical_date=now + DAY, conf={"now": now.isoformat()})
    assert dag_run.state == "success", task_states(dag_run)
    assert _xcoms(dag_run)["prune_monitoring"]["removed"]["monitoring_runs"] == 1
    assert not old_run.exists() and new_run.exists()
    assert json.loads(Path(new_run).read_text()) == {}
