"""
# freqcap_publish

Pushes refreshed caps to online serving, safely: **fetch_champion_policy** (the `policy.yaml` logged on the run of
the model version marked `champion`, cross-checked with its `policy_version` tag; schema-validated) →
**check_guardrails** (every cap window is a feature window; caps within configured bounds; no shared cap changes
by more than a factor vs the live policy; the projected share of active pairs at or over their cap moves by at most
the configured amount per level; the what-if forecast of the candidate against the live policy on recent traffic —
projected impressions, conversions, reach and past-cap share per cohort and level with intervals — must not cost
more conversions or reach than `publish.forecast.*` allows; report, `forecast.csv` and `forecast.png` written beside
the candidate, the forecast logged to the champion's MLflow run and its headline returned as the task's summary) → **push_policy** (serving's token-protected
admin endpoint; a no-op when serving already runs that version) → **verify** (serving reports the new version; the
model version is tagged `published_at`).

A failed guardrail or a policy serving rejects fails the run at once (retrying cannot help); an unreachable serving
fails the task and retries, and serving keeps its current policy meanwhile.

Scheduled on the `freqcap_proposed_policy` Asset (emitted by freqcap_training) and runnable by hand.
Params: `registered_model` (default: the model config's registry name). Settings: `publish.*`,
`serving.admin_token` (from the environment).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task

from freqcap.adapters.airflow.assets import PROPOSED_POLICY
from freqcap.config import load_settings

# Parse-time work is only this: the scheduler re-parses the file every few seconds, so each task imports its job
# (and with it pandas, DuckDB, Feast, MLflow or Great Expectations) inside its own function, when it runs.
_settings = load_settings()


@dag(
    dag_id="freqcap_publish",
    schedule=[PROPOSED_POLICY],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": _settings.orchestration.retries, "retry_delay": _settings.orchestration.retry_delay_td},
    params={
        "registered_model": Param(None, type=["null", "string"], description="MLflow registered model name"),
    },
    tags=["freqcap", "publish"],
    doc_md=__doc__,
)
def freqcap_publish():
    @task
    def fetch_champion_policy() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from freqcap.domain.policy import PolicyValidationError
        from freqcap.domain.training.config import load_model_config
        from freqcap.jobs.publish import GuardrailViolation, NoChampion, fetch_champion_policy_job

        settings = load_settings()
        name = get_current_context()["params"].get("registered_model")
        name = name or load_model_config(settings.training.model_config_path).registered_model
        try:
            return fetch_champion_policy_job(settings, name)
        except (NoChampion, PolicyValidationError, GuardrailViolation) as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def check_guardrails(candidate: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from freqcap.jobs.publish import GuardrailViolation, check_guardrails_job

        try:
            return check_guardrails_job(candidate, load_settings())
        except GuardrailViolation as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def push_policy(checked: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from freqcap.jobs.publish import PolicyRejected, push_policy_job

        try:
            return push_policy_job(checked, load_settings())
        except PolicyRejected as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def verify(pushed: dict) -> dict:
        from freqcap.jobs.publish import verify_policy_job

        return verify_policy_job(pushed, load_settings())

    verify(push_policy(check_guardrails(fetch_champion_policy())))


freqcap_publish()
