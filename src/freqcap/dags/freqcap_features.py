"""
# freqcap_features

Validates raw ad events, aggregates the frequency features of the three tiers and loads them into Feast.

**validate** (Great Expectations `resources/gx/events.json`; bad rows -> quarantine, run stops above the bad-share
gate or on a stale / impression-less feed)
→ **aggregate** (DuckDB: user×advertiser, user×campaign, user×ad windows and decay, user signal tiers)
→ **check_features** (Great Expectations gate `resources/gx/features.json`: counts non-negative, windows nested for
the tier's configured windows, decayed ≤ raw, unique keys, row count within `validation.max_row_count_ratio` of the
previous published run; a failure stops the run naming each `table.rule`, report in `<run>/features_validation.json`)
→ **materialize** (offline snapshot + online store; records the run's row counts; emits the
`freqcap_online_features` Asset that the training DAG schedules on).

User ids become pseudonyms at validate (`privacy` settings): every later task, the feature tables, Feast and the
reports see pseudonyms only.

Every gate run is published to the Data Docs site under `<data_dir>/gx` (`make data-docs` opens it).

Params: `as_of` (ISO time; defaults to the run's data interval end — set it for backfills), `events_dir`
(defaults to `<data_dir>/raw/events`), `users` (defaults to `users.parquet` beside the events directory).
Every task calls one function in `freqcap.jobs.features`; nothing heavy happens at parse time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, get_current_context, task

from freqcap.adapters.airflow.assets import ONLINE_FEATURES
from freqcap.config import load_settings

# Parse-time work is only this: the scheduler re-parses the file every few seconds, so each task imports its job
# (and with it pandas, DuckDB, Feast, MLflow or Great Expectations) inside its own function, when it runs.
_settings = load_settings()


@dag(
    dag_id="freqcap_features",
    schedule=_settings.orchestration.features_schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": _settings.orchestration.retries,
        "retry_delay": _settings.orchestration.retry_delay_td,
    },
    params={
        "as_of": Param(None, type=["null", "string"], description="as-of time (ISO 8601, UTC)"),
        "events_dir": Param(None, type=["null", "string"], description="directory of raw event Parquet"),
        "users": Param(None, type=["null", "string"], description="users.parquet with audiences"),
    },
    tags=["freqcap", "features"],
    doc_md=__doc__,
)
def freqcap_features():
    @task
    def validate() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from freqcap.adapters.airflow.context import run_as_of
        from freqcap.adapters.gx import EventValidationError
        from freqcap.jobs.features import events_dir_for, validate_events_job

        ctx = get_current_context()
        settings = load_settings()
        events_dir = events_dir_for(settings, ctx["params"].get("events_dir"))
        try:
            # The wall clock bounds "future" events: a backfill's lake holds events later than its as-of time.
            now = datetime.now(UTC).isoformat()
            users = ctx["params"].get("users")
            return validate_events_job(events_dir, run_as_of(ctx).isoformat(), settings, now=now, users=users)
        except EventValidationError as exc:
            raise AirflowFailException(str(exc)) from exc  # bad data does not improve on retry

    @task
    def aggregate(report: dict) -> dict:
        from freqcap.jobs.features import build_features_job

        # The users table validate prepared (pseudonymized like the clean events), never the raw one.
        return build_features_job(report["clean_path"], report["as_of"], load_settings(), report.get("users_path"))

    @task
    def check_features(build: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from freqcap.adapters.gx.errors import DataValidationError
        from freqcap.jobs.features import check_features_job

        try:
            return check_features_job(build, load_settings())
        except DataValidationError as exc:
            raise AirflowFailException(str(exc)) from exc  # bad data does not improve on retry

    @task(outlets=[ONLINE_FEATURES])
    def materialize(build: dict) -> dict:
        from freqcap.jobs.features import materialize_job

        return materialize_job(build, load_settings())

    materialize(check_features(aggregate(validate())))


freqcap_features()
