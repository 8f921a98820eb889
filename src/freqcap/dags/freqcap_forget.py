"""
# freqcap_forget

Deletion requests in batches: every user named by a pending request is removed from every store, as
`freqcap forget` does (docs: Operations > Forgetting a user).

**collect** (the request files waiting in `<data_dir>/privacy/forget_requests/`: `*.json` with `users` and/or
`pseudonyms` lists, or `*.txt` with one id per line) → **forget** (one pass over every store for the whole batch:
Parquet tables under the data directory, the online store — SQLite, Redis or Redis Cluster, batch and stream views —
the stream's entries, state and dedup marks; then the audit record in `<data_dir>/privacy/forget_audit.jsonl`,
which holds no raw id; the request files are deleted once it succeeded, since they hold raw ids).

Runs hourly, so requests dropped into the folder are served within the hour in batches (the online store is scanned
once per batch, not once per user). A run can also be triggered (REST or UI) with `users` / `pseudonyms` in its
conf — but a conf is kept in Airflow's metadata database: pass **pseudonyms** there, raw ids through the folder.
Idempotent: a retry or a second run removes nothing more and records zero counts. A malformed request file fails
the run before anything is deleted; the message names the file and the field.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task

from freqcap.config import load_settings

# Parse-time work is only this: each task imports its job (pyarrow, Feast, redis) inside its own function.
_settings = load_settings()


@dag(
    dag_id="freqcap_forget",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # two runs would scan and rewrite the same stores at once
    default_args={"retries": _settings.orchestration.retries, "retry_delay": _settings.orchestration.retry_delay_td},
    params={
        "users": Param([], type="array", items={"type": "string"}, description="raw user ids (prefer the folder)"),
        "pseudonyms": Param([], type="array", items={"type": "string"}, description="pseudonyms u.<key>.<digest>"),
    },
    tags=["freqcap", "privacy"],
    doc_md=__doc__,
)
def freqcap_forget():
    @task
    def collect() -> list[str]:
        from freqcap.jobs.forget import pending_requests

        return pending_requests(load_settings())  # file paths only: no id goes through XCom

    @task
    def forget(files: list[str]) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from freqcap.jobs.forget import ForgetRequestError, forget_requests_job

        params = get_current_context()["params"]
        try:
            record = forget_requests_job(files, load_settings(), params.get("users"), params.get("pseudonyms"))
        except ForgetRequestError as exc:
            raise AirflowFailException(str(exc)) from exc  # a malformed request does not improve on retry
        return {k: record.get(k) for k in ("request_id", "removed_total", "counts", "residual", "skipped")}

    forget(collect())


freqcap_forget()
