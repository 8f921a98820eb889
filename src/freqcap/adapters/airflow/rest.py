"""Airflow's REST API (v2) through the maintained client, `apache-airflow-client`: what an operator (or a test)
does to a running deployment — pause, trigger, backfill, wait, read run and task states.

Log in with the simple auth manager's `POST /auth/token` (the client has no call for it), then every call goes
through `airflow_client.client`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from airflow_client import client as af
from airflow_client.client.rest import ApiException

FINISHED = ("success", "failed")


def login(base_url: str, username: str, password: str, timeout: float = 10.0) -> str:
    """A JWT for `username` from the api-server's `/auth/token`."""
    resp = httpx.post(f"{base_url}/auth/token", json={"username": username, "password": password}, timeout=timeout)
    resp.raise_for_status()
    return resp.json()["access_token"]


@dataclass
class AirflowRest:
    """A logged-in client of one Airflow deployment (`base_url` without `/api/v2`)."""

    base_url: str
    token: str

    @classmethod
    def connect(cls, base_url: str, username: str, password: str) -> AirflowRest:
        return cls(base_url, login(base_url, username, password))

    def _api(self) -> af.ApiClient:
        return af.ApiClient(af.Configuration(host=self.base_url, access_token=self.token))

    def dags(self) -> dict[str, Any]:
        """dag_id -> DAG (paused flag, schedule, docs, tags) of every DAG the dag-processor has parsed."""
        with self._api() as api:
            return {d.dag_id: d for d in af.DAGApi(api).get_dags(limit=100).dags}

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180.0) -> None:
        """Until the dag-processor has parsed every one of `dag_ids` into the metadata DB."""
        deadline = time.monotonic() + timeout
        while missing := set(dag_ids) - set(self.dags()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAGs {sorted(missing)} not parsed within {timeout:.0f}s")
            time.sleep(1.0)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        with self._api() as api:
            af.DAGApi(api).patch_dag(dag_id, af.DAGPatchBody(is_paused=paused))

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: datetime | None = None) -> str:
        """A manual run; returns its run id."""
        body = af.TriggerDAGRunPostBody(conf=conf or {}, logical_date=logical_date)
        with self._api() as api:
            return af.DagRunApi(api).trigger_dag_run(dag_id, body).dag_run_id

    def runs(self, dag_id: str, **filters: Any) -> list[Any]:
        """Runs of `dag_id`, oldest first (filters: `run_type=[...]`, `state=[...]`, `logical_date_gte=...`)."""
        with self._api() as api:
            return list(af.DagRunApi(api).get_dag_runs(dag_id, order_by=["id"], limit=100, **filters).dag_runs)

    def dag_run(self, dag_id: str, run_id: str) -> Any:
        with self._api() as api:
            return af.DagRunApi(api).get_dag_run(dag_id, run_id)

    def wait(self, dag_id: str, run_id: str, timeout: float = 900.0, poll: float = 2.0) -> Any:
        """Until the run finishes (success or failed); returns the run."""
        deadline = time.monotonic() + timeout
        while (run := self.dag_run(dag_id, run_id)).state.value not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {run.state.value} after {timeout:.0f}s")
            time.sleep(poll)
        return run

    def wait_for_run(self, dag_id: str, after: set[str], timeout: float = 300.0, **filters: Any) -> Any:
        """Until a run of `dag_id` whose id is not in `after` appears (e.g. one an asset event scheduled)."""
        deadline = time.monotonic() + timeout
        while True:
            new = [r for r in self.runs(dag_id, **filters) if r.dag_run_id not in after]
            if new:
                return new[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new run of {dag_id} within {timeout:.0f}s")
            time.sleep(2.0)

    def triggered_by(self, dag_id: str, run_id: str) -> list[tuple[str | None, str | None, str | None]]:
        """The Asset events that scheduled an asset-triggered run: (asset name, source DAG, source run id) each."""
        with self._api() as api:
            events = af.DagRunApi(api).get_upstream_asset_events(dag_id, run_id).asset_events
        return [(e.name, e.source_dag_id, e.source_run_id) for e in events]

    def task_instances(self, dag_id: str, run_id: str) -> list[Any]:
        with self._api() as api:
            return list(af.TaskInstanceApi(api).get_task_instances(dag_id, run_id).task_instances)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """task_id -> state of one run."""
        return {ti.task_id: ti.state.value if ti.state else "none" for ti in self.task_instances(dag_id, run_id)}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The log of one try of a task, as the UI shows it (the error of a failed gate is at its end)."""
        with self._api() as api:
            answer = af.TaskInstanceApi(api).get_log(dag_id, run_id, task_id, try_number, full_content=True)
        content = answer.content.actual_instance if hasattr(answer.content, "actual_instance") else answer.content
        if isinstance(content, list):
            return "\n".join(str(getattr(line, "event", line)) for line in content)
        return str(content)

    def failures(self, dag_id: str, run_id: str, tail: int = 15) -> dict[str, str]:
        """task_id -> the last `tail` lines of the log of each failed task of a run."""
        out = {}
        for ti in self.task_instances(dag_id, run_id):
            if ti.state is not None and ti.state.value == "failed":
                lines = self.task_log(dag_id, run_id, ti.task_id, max(ti.try_number, 1)).splitlines()
                out[ti.task_id] = "\n".join(lines[-tail:])
        return out

    def backfill(self, dag_id: str, start: datetime, end: datetime, max_active_runs: int = 1) -> int:
        """Airflow's backfill of `dag_id` over [start, end] (one run per schedule interval); returns its id."""
        body = af.BackfillPostBody(
            dag_id=dag_id, from_date=start, to_date=end, max_active_runs=max_active_runs, run_backwards=False
        )
        with self._api() as api:
            return af.BackfillApi(api).create_backfill(body).id

    def wait_backfill(self, backfill_id: int, timeout: float = 1200.0) -> Any:
        """Until the backfill completes; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            with self._api() as api:
                backfill = af.BackfillApi(api).get_backfill(backfill_id)
            if backfill.completed_at is not None:
                return backfill
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill {backfill_id} not complete after {timeout:.0f}s")
            time.sleep(3.0)


__all__ = ["FINISHED", "AirflowRest", "ApiException", "login"]
