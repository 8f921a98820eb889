"""
# freqcap_training

Turns history into caps: a point-in-time training set from Feast, an XGBoost conversion model tracked in MLflow,
survivorship-robust exposure–response curves per cohort × level, and a proposed capping policy.

**backfill_snapshots** (daily feature snapshots the training window needs; idempotent) → **build_training_set**
(Feast `get_historical_features`, features as of just before each impression) → **validate_training_set** (Great
Expectations gate `resources/gx/training.json`: label-rate band, no leakage past the impression or the set's as-of
time, exposure and feature invariants; a failure stops the run naming each rule, published to Data Docs)
→ **train** (XGBoost, metrics, model-based curve, MLflow run) → **register_and_gate** (registered as `challenger`;
promoted to `champion` only if not worse than the champion beyond the tolerance — the reason is recorded); in
parallel **fit_curves** (empirical curves with confidence intervals, caps, plots, `policy.yaml`) →
**attach_curves** (curves, plots, cross-check and policy logged to the model's run; emits `freqcap_proposed_policy`).

Scheduled on the `freqcap_online_features` Asset (fresh batch features) or the `freqcap_drift_alarm` Asset (the
monitoring DAG saw a new drift incident), and runnable by hand.
Params: `as_of`, `events_dir`, `users`, `floor` (relative floor R of the caps; default `training.floor`).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task

from freqcap.adapters.airflow.assets import DRIFT_ALARM, ONLINE_FEATURES, PROPOSED_POLICY
from freqcap.config import load_settings

# Parse-time work is only this: the scheduler re-parses the file every few seconds, so each task imports its job
# (and with it pandas, DuckDB, Feast, MLflow or Great Expectations) inside its own function, when it runs.
_settings = load_settings()


@dag(
    dag_id="freqcap_training",
    schedule=ONLINE_FEATURES | DRIFT_ALARM,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": _settings.orchestration.retries, "retry_delay": _settings.orchestration.retry_delay_td},
    params={
        "as_of": Param(None, type=["null", "string"], description="as-of time (ISO 8601, UTC)"),
        "events_dir": Param(None, type=["null", "string"], description="directory of raw event Parquet"),
        "users": Param(None, type=["null", "string"], description="users.parquet with audiences"),
        "floor": Param(None, type=["null", "number"], description="relative floor R for the caps"),
    },
    tags=["freqcap", "training"],
    doc_md=__doc__,
)
def freqcap_training():
    @task
    def resolve() -> dict:
        from freqcap.jobs.training import resolve_inputs

        return resolve_inputs(get_current_context(), load_settings())

    @task
    def backfill_snapshots(inputs: dict) -> dict:
        from freqcap.jobs.training import backfill_snapshots_job

        return backfill_snapshots_job(
            inputs["events_dir"], inputs["start"], inputs["as_of"], load_settings(), users=inputs["users"]
        )

    @task
    def build_training_set(inputs: dict, _snapshots: dict) -> dict:
        from freqcap.jobs.training import build_training_set_job

        settings = load_settings()
        return build_training_set_job(
            inputs["events_dir"],
            inputs["as_of"],
            settings,
            users=inputs["users"],
            model_config=settings.training.model_config_path,
        )

    @task
    def validate_training_set(training_set: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from freqcap.adapters.gx.training_suite import TrainingValidationError
        from freqcap.jobs.training import validate_training_set_job

        try:
            settings = load_settings()
            return validate_training_set_job(training_set, settings, model_config=settings.training.model_config_path)
        except TrainingValidationError as exc:
            raise AirflowFailException(str(exc)) from exc  # bad data does not improve on retry

    @task
    def train(training_set: dict, validation: dict) -> dict:
        from freqcap.jobs.training import train_job

        settings = load_settings()
        return train_job(
            training_set, settings, model_config=settings.training.model_config_path, validation=validation
        )

    @task
    def register_and_gate(trained: dict) -> dict:
        from freqcap.jobs.training import register_and_gate_job

        settings = load_settings()
        return register_and_gate_job(trained, settings, model_config=settings.training.model_config_path)

    @task
    def fit_curves(inputs: dict) -> dict:
        from freqcap.jobs.training import fit_curves_job

        settings = load_settings()
        return fit_curves_job(
            inputs["events_dir"],
            inputs["as_of"],
            settings,
            users=inputs["users"],
            floor=inputs["floor"] or settings.training.floor,
        )

    @task(outlets=[PROPOSED_POLICY])
    def attach_curves(trained: dict, gated: dict, curves: dict) -> dict:
        from freqcap.jobs.training import attach_curves_job

        return attach_curves_job(trained, gated, curves, load_settings())

    inputs = resolve()
    training_set = build_training_set(inputs, backfill_snapshots(inputs))
    trained = train(training_set, validate_training_set(training_set))
    attach_curves(trained, register_and_gate(trained), fit_curves(inputs))


freqcap_training()
