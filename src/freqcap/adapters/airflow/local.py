"""Running freqcap's DAGs through a real, local Airflow (SQLite metadata DB) — for the demo and the tests.

`airflow_environment` must run before anything imports airflow: Airflow reads its configuration at import.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from freqcap.resources import dags_folder

# The DAG files shipped in the package (`freqcap.dags`).
DAGS_FOLDER = dags_folder()


def airflow_environment(
    home: Path, dags_folder: Path = DAGS_FOLDER, log_level: str = "WARNING", namespace_levels: str | None = None
) -> dict[str, str]:
    """Point Airflow at an isolated home and SQLite DB (absolute path) and quiet its logs (`log_level`; per-logger
    levels of Airflow's structured loggers in `namespace_levels`, e.g. `py.warnings=WARNING`)."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": log_level,
    }
    if namespace_levels is not None:
        env["AIRFLOW__LOGGING__NAMESPACE_LEVELS"] = namespace_levels
    os.environ.update(env)
    return env


def init_metadata_db() -> None:
    """Create/migrate the metadata DB (idempotent, ~1 s on SQLite)."""
    from airflow.utils import db

    db.initdb()


def load_dag(dag_id: str, dags_folder: Path = DAGS_FOLDER):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.dags[dag_id]


def run_dag(dag_id: str, *, logical_date: datetime, conf: dict[str, Any] | None = None) -> Any:
    """Run one DAG run in-process with `dag.test()`; returns the DagRun (check `.state`, it never raises)."""
    airflow_log = logging.getLogger("airflow")
    if airflow_log.getEffectiveLevel() < logging.WARNING:  # at least WARNING (quieter when configured so)
        airflow_log.setLevel(logging.WARNING)
    dag = load_dag(dag_id)
    return dag.test(logical_date=logical_date, run_conf=conf or {})


def task_states(dag_run: Any) -> dict[str, str]:
    """task_id -> final state of a finished DagRun."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
        )
        return {ti.task_id: str(ti.state) for ti in tis}
