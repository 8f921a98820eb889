"""Retention of MLflow runs: old runs of freqcap's experiments, their artifacts and logged models, for good.

Two steps, as MLflow itself works: `MlflowClient.delete_run` (and `delete_logged_model`, `delete_model_version`)
moves things to the `deleted` lifecycle stage; then MLflow's garbage collector (`mlflow gc`'s implementation)
deletes the artifacts and the rows. The collector is called with explicit run and logged-model ids and with
experiments skipped: the `mlflow gc` command with no experiment ids would also hard-delete every experiment anyone
soft-deleted, which is not ours to decide.

Kept whatever its age: a run behind a registered model version that carries an alias (`champion`, `challenger`):
serving's policy, the drift reference and the gate all read it. Older versions of a registered model whose run goes
are deleted with it (a version without its run's artifacts could not be loaded anyway).

Against a tracking server (`http://...`) only the first step is possible from a client; the server's operator runs
`mlflow gc` (docs/operations/retention.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from freqcap.adapters.mlflow.tracking import client as tracking_client
from freqcap.adapters.mlflow.uris import resolve_tracking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MlflowPruning:
    runs: int  # runs deleted (or that would be)
    model_versions: int  # registered model versions deleted with their runs
    logged_models: int  # MLflow 3 logged models whose source run was deleted
    permanent: bool  # artifacts and rows gone for good (a database store) or only marked deleted (a server)


def _all_pages(fetch: Any) -> list[Any]:
    items, token = [], None
    while True:
        page = fetch(token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _protected_runs(client: Any, registered_models: Iterable[str]) -> tuple[set[str], list[Any]]:
    """The run ids behind aliased versions, and every version of the given registered models."""
    from mlflow.exceptions import MlflowException

    protected: set[str] = set()
    versions: list[Any] = []
    for name in registered_models:
        try:
            aliases = client.get_registered_model(name).aliases  # {alias: version}
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue
            raise
        # search_model_versions leaves `aliases` empty on the SQL store: the model's alias map is the truth.
        found = client.search_model_versions(f"name = '{name}'")
        versions.extend(found)
        aliased = {str(v) for v in aliases.values()}
        protected.update(v.run_id for v in found if str(v.version) in aliased)
    return protected, versions


def prune_runs(
    settings: Any,
    experiments: Iterable[str],
    registered_models: Iterable[str],
    cutoff: datetime,
    dry_run: bool = False,
) -> MlflowPruning:
    """Delete the runs of the named experiments started before `cutoff` (with their artifacts, logged models and
    unaliased model versions), keeping the runs of aliased model versions."""
    from mlflow.entities import ViewType

    client = tracking_client(settings)
    experiment_ids = [e.experiment_id for name in experiments if (e := client.get_experiment_by_name(name))]
    if not experiment_ids:
        return MlflowPruning(0, 0, 0, False)
    protected, versions = _protected_runs(client, registered_models)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    old = _all_pages(
        lambda token: client.search_runs(
            experiment_ids,
            filter_string=f"attributes.start_time < {cutoff_ms}",
            run_view_type=ViewType.ALL,  # runs deleted earlier but never collected go now too
            max_results=1000,
            page_token=token,
        )
    )
    doomed = [r for r in old if r.info.run_id not in protected]
    doomed_ids = {r.info.run_id for r in doomed}
    doomed_versions = [v for v in versions if v.run_id in doomed_ids]
    logged = _all_pages(lambda token: client.search_logged_models(experiment_ids, max_results=1000, page_token=token))
    doomed_models = [m.model_id for m in logged if m.source_run_id in doomed_ids]
    permanent = _is_database(resolve_tracking(settings).tracking_uri)
    if not dry_run and doomed:
        for v in doomed_versions:
            client.delete_model_version(v.name, v.version)
        for model_id in doomed_models:
            client.delete_logged_model(model_id)
        for run in doomed:
            if run.info.lifecycle_stage != "deleted":
                client.delete_run(run.info.run_id)
        if permanent:
            _collect(resolve_tracking(settings).tracking_uri, sorted(doomed_ids), doomed_models)
    result = MlflowPruning(len(doomed), len(doomed_versions), len(doomed_models), permanent)
    if doomed:
        log.info(
            "%s %d MLflow runs started before %s (%d model versions, %d logged models; %s), kept %d aliased",
            "would delete" if dry_run else "deleted",
            result.runs,
            cutoff.isoformat(),
            result.model_versions,
            result.logged_models,
            "permanently" if permanent else "marked deleted: run `mlflow gc` on the server",
            len(protected),
        )
    return result


def _is_database(uri: str) -> bool:
    """A SQLAlchemy store the garbage collector can open directly (not an HTTP server, not a file store)."""
    return uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql")


def _collect(tracking_uri: str, run_ids: list[str], logged_model_ids: list[str]) -> None:
    """MLflow's garbage collector on exactly these ids: artifacts deleted, then the rows."""
    from mlflow.cli import _gc_tracking_resources
    from mlflow.tracking import _get_store

    _gc_tracking_resources(
        backend_store=_get_store(tracking_uri),
        run_ids=run_ids,
        experiment_ids=None,
        logged_model_ids=logged_model_ids,
        older_than=None,
        time_delta=0,
        skip_experiments=True,
        skip_logged_models=False,
    )
