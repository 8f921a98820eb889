"""The forget DAG through Airflow's `dag.test()`: requests from the drop folder and from the run's conf, a
malformed request failing the run before anything is deleted."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.config import load_settings
from freqcap.domain.privacy import Pseudonymizer
from freqcap.layout import DataLayout

pytestmark = pytest.mark.slow
KEY = "dag-test-key-material-" + "k" * 20


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("FREQCAP__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FREQCAP__PRIVACY__KEYS__K1", KEY)
    layout = DataLayout.of(load_settings())
    p = Pseudonymizer({"k1": KEY.encode()}, "k1")
    users = ["u1", "u2", p("u3"), "u4", p("u5")]
    events = layout.events_dir / "date=2026-10-01" / "part-0.parquet"
    events.parent.mkdir(parents=True)
    pq.write_table(pa.table({"event_id": [f"e{i}" for i in range(5)], "user_id": users}), events)
    layout.forget_requests.mkdir(parents=True)
    return layout, events, p


def _run(conf=None):
    from freqcap.adapters.airflow.local import run_dag, task_states

    dag_run = run_dag("freqcap_forget", logical_date=datetime.now(UTC), conf=conf or {})
    return dag_run, task_states(dag_run)


def test_drop_folder_and_conf_requests_are_forgotten_and_the_files_deleted(data, airflow_db):
    layout, events, p = data
    (layout.forget_requests / "req-a.json").write_text(json.dumps({"users": ["u1"], "pseudonyms": [p("u3")]}))
    (layout.forget_requests / "req-b.txt").write_text("# one id per line\nu2\n")

    dag_run, states = _run({"pseudonyms": [p("u5")]})

    assert dag_run.state == "success", states
    assert pq.read_table(events).column("user_id").to_pylist() == ["u4"]
    assert list(layout.forget_requests.iterdir()) == []  # raw ids do not outlive the request
    (record,) = [json.loads(line) for line in layout.forget_audit.read_text().splitlines()]
    assert record["request_id"] == "req-a,req-b"
    assert record["counts"]["raw_events"] == 4 and len(record["subjects"]) == 4


def test_a_malformed_request_fails_the_run_and_deletes_nothing(data, airflow_db):
    layout, events, _ = data
    (layout.forget_requests / "req-a.json").write_text(json.dumps({"users": "u1"}))  # not a list

    dag_run, states = _run()

    assert dag_run.state == "failed" and states["forget"] == "failed", states
    assert pq.read_table(events).num_rows == 5
    assert (layout.forget_requests / "req-a.json").exists()
    assert not layout.forget_audit.exists()
