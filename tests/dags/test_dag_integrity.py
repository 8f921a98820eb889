"""Every DAG file imports cleanly and follows the house rules: tags, retries, docs, thin tasks."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from tests.conftest import DAGS_DIR

DAG_FILES = sorted((DAGS_DIR).glob("*.py"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "freqcap_features" in dagbag.dag_ids


def test_every_dag_has_tags_docs_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert "freqcap" in dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id} needs doc_md=__doc__"
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


def test_features_dag_shape(dagbag):
    dag = dagbag.dags["freqcap_features"]
    order = ["validate", "aggregate", "check_features", "materialize"]
    assert {t.task_id for t in dag.tasks} == set(order)
    for upstream, downstream in itertools.pairwise(order):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    outlets = dag.get_task("materialize").outlets
    assert [a.name for a in outlets] == ["freqcap_online_features"]
    assert set(dag.params.keys()) >= {"as_of", "events_dir", "users"}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_stay_thin(path: Path):
    """No heavy imports at module level: only airflow.sdk, freqcap config/assets and the standard library."""
    tree = ast.parse(path.read_text())
    allowed = {"__future__", "datetime", "airflow.sdk", "freqcap.config", "freqcap.adapters.airflow.assets"}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            assert node.module in allowed, f"{path.name} imports {node.module} at module level"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name in allowed, f"{path.name} imports {alias.name} at module level"


def test_assets_chain_features_training_publish(dagbag):
    """features → (online features) → training → (proposed policy) → publish."""
    training, publish = dagbag.dags["freqcap_training"], dagbag.dags["freqcap_publish"]
    assert [a.name for a in training.get_task("attach_curves").outlets] == ["freqcap_proposed_policy"]
    assert "freqcap_online_features" in repr(training.timetable.asset_condition)
    assert "freqcap_proposed_policy" in repr(publish.timetable.asset_condition)
    order = ["fetch_champion_policy", "check_guardrails", "push_policy", "verify"]
    assert {t.task_id for t in publish.tasks} == set(order)
    for upstream, downstream in itertools.pairwise(order):
        assert publish.get_task(downstream).upstream_task_ids == {upstream}


def test_maintenance_dag_shape(dagbag):
    """Daily retention: one independent task per store group, each calling `jobs.retention.prune_group`."""
    from freqcap.jobs.retention import GROUPS

    dag = dagbag.dags["freqcap_maintenance"]
    assert {t.task_id for t in dag.tasks} == {
        "prune_events",
        "prune_features",
        "prune_training",
        "prune_monitoring",
        "prune_stream",
        "clean_airflow_metadata",
    }
    assert len(dag.tasks) == len(GROUPS)
    assert all(not t.upstream_task_ids for t in dag.tasks)  # a failing group does not hold the others back
    assert set(dag.params.keys()) == {"now", "dry_run"}
    assert dag.timetable.expression == "0 0 * * *"  # @daily
