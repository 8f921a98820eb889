"""
# freqcap_monitoring

Hourly watch over serving and traffic: is capping working, is serving degraded, has the world moved away from what
the model was trained on?

**resolve** (as_of = the end of the run's hour; events and users) → **validate_decision_log** (the Great
Expectations gate `resources/gx/decision_log.json` on the rows this run reads; a bad log fails the run) →
**collect** (decision log: cap hit rate per
cohort, format, level and hour of day and its move against the previous 24 h; fail-open rate, reasons and since
when; realized vs configured frequency from the events and the live policy; stream lag; the last 24 h of
impressions for drift) → **drift** (Evidently: feature drift against the champion's training set, prediction drift
with the champion model) → **evaluate_alarms** (rules in `resources/monitoring/alerts.yaml`; an incident fires once, stays
quiet while it lasts and resolves when it clears; state kept between runs) → **page** (the alarms due to the webhook receivers of
`monitoring.paging`: new ones, reminders after `repeat_interval`, resolves; retried, every delivery recorded) →
**publish** (one snapshot in the
Evidently workspace project with its dashboard, and the on-call page `<data_dir>/monitoring/oncall.html`);
**signal_drift** updates the `freqcap_drift_alarm` Asset — which schedules freqcap_training — only when a new drift
incident fired in this run (skipped otherwise).

Params: `as_of` (ISO time; default the end of the data interval), `events_dir`, `users`. Settings: `monitoring.*`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task

from freqcap.adapters.airflow.assets import DRIFT_ALARM
from freqcap.config import load_settings

# Parse-time work is only this: the scheduler re-parses the file every few seconds, so each task imports its job
# (and with it pandas, DuckDB, Feast, MLflow or Great Expectations) inside its own function, when it runs.
_settings = load_settings()


@dag(
    dag_id="freqcap_monitoring",
    schedule=_settings.monitoring.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": _settings.orchestration.retries, "retry_delay": _settings.orchestration.retry_delay_td},
    params={
        "as_of": Param(None, type=["null", "string"], description="end of the monitored window (ISO 8601, UTC)"),
        "events_dir": Param(None, type=["null", "string"], description="directory of raw event Parquet"),
        "users": Param(None, type=["null", "string"], description="users.parquet with audiences"),
    },
    tags=["freqcap", "monitoring"],
    doc_md=__doc__,
)
def freqcap_monitoring():
    @task
    def resolve() -> dict:
        from freqcap.jobs.monitoring import resolve_inputs

        return resolve_inputs(get_current_context(), load_settings())

    @task
    def validate_decision_log(inputs: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from freqcap.adapters.gx.decision_log import DecisionLogGateError
        from freqcap.jobs.monitoring import validate_log_job

        try:
            return validate_log_job(inputs, load_settings())
        except DecisionLogGateError as exc:
            raise AirflowFailException(str(exc)) from exc  # a bad log does not improve on retry

    @task
    def collect(inputs: dict, _validated: dict) -> dict:
        from freqcap.jobs.monitoring import collect_job

        return collect_job(inputs, load_settings())

    @task
    def drift(collected: dict) -> dict:
        from freqcap.jobs.monitoring import drift_job

        return drift_job(collected, load_settings())

    @task
    def evaluate_alarms(collected: dict, drifted: dict) -> dict:
        from freqcap.jobs.monitoring import alarms_job

        return alarms_job(collected, drifted, load_settings())

    @task
    def page(collected: dict, alarms: dict) -> dict:
        from freqcap.jobs.monitoring import paging_job

        return paging_job(collected, alarms, load_settings())

    @task
    def publish(collected: dict, drifted: dict, alarms: dict, _paged: dict) -> dict:
        from freqcap.jobs.monitoring import publish_job

        return publish_job(collected, drifted, alarms, load_settings())

    @task(outlets=[DRIFT_ALARM])
    def signal_drift(alarms: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from freqcap.jobs.monitoring import drift_signal

        signal = drift_signal(alarms)
        if signal is None:
            raise AirflowSkipException("no new drift incident in this run")  # a skipped task emits no asset event
        get_current_context()["outlet_events"][DRIFT_ALARM].extra.update(signal)
        return signal

    inputs = resolve()
    collected = collect(inputs, validate_decision_log(inputs))
    drifted = drift(collected)
    alarms = evaluate_alarms(collected, drifted)
    publish(collected, drifted, alarms, page(collected, alarms))
    signal_drift(alarms)


freqcap_monitoring()
