"""
# freqcap_maintenance

Daily retention: every store is pruned to its horizon (`retention.*` settings; docs/operations/retention.md says
why each default is what it is). One task per store group, independent of each other, so a failure in one (the
tracking server down) leaves the others done:

- **prune_events**: raw event files whose newest event is past `retention.raw_events`; the clean copies
  (`retention.clean_events`) and the quarantine (`retention.quarantine`) of old features runs.
- **prune_features**: old features runs (`retention.feature_runs`) and Feast offline snapshots
  (`retention.snapshots`; every table's newest is kept).
- **prune_training**: training sets and curves (`retention.training_sets`; the champion's training set is kept) and
  MLflow runs with their artifacts (`retention.mlflow_runs`; runs of aliased model versions are kept).
- **prune_monitoring**: the decision log (`retention.decision_log`), Evidently snapshots
  (`retention.evidently_snapshots`) and monitoring run files (`retention.monitoring_runs`).
- **prune_stream**: dead letters (`retention.dead_letters`), in Redis and in the replay file.
- **clean_airflow_metadata**: `airflow db clean` before `retention.airflow_metadata` (dag runs, task instances,
  logs, XComs; Airflow keeps each DAG's last scheduled run).

Each task logs what it removed and returns the counts per store (XCom `return_value`). Params: `now` (ISO time
the horizons count back from; default the end of the data interval), `dry_run` (count, remove nothing).
The same from a shell: `freqcap retention [--dry-run]`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task

from freqcap.config import load_settings

# Parse-time work is only this: each task imports its job when it runs.
_settings = load_settings()


def _run(group: str) -> dict:
    from freqcap.adapters.airflow.context import run_as_of
    from freqcap.jobs.retention import prune_group

    context = get_current_context()
    params = context.get("params") or {}
    now = params.get("now") or run_as_of(context)
    return prune_group(group, load_settings(), now, dry_run=bool(params.get("dry_run")))


@dag(
    dag_id="freqcap_maintenance",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": _settings.orchestration.retries, "retry_delay": _settings.orchestration.retry_delay_td},
    params={
        "now": Param(None, type=["null", "string"], description="the time horizons count back from (ISO 8601)"),
        "dry_run": Param(False, type="boolean", description="count what would go, remove nothing"),
    },
    tags=["freqcap", "maintenance"],
    doc_md=__doc__,
)
def freqcap_maintenance():
    @task
    def prune_events() -> dict:
        return _run("events")

    @task
    def prune_features() -> dict:
        return _run("features")

    @task
    def prune_training() -> dict:
        return _run("training")

    @task
    def prune_monitoring() -> dict:
        return _run("monitoring")

    @task
    def prune_stream() -> dict:
        return _run("stream")

    @task
    def clean_airflow_metadata() -> dict:
        return _run("airflow")

    prune_events()
    prune_features()
    prune_training()
    prune_monitoring()
    prune_stream()
    clean_airflow_metadata()


freqcap_maintenance()
