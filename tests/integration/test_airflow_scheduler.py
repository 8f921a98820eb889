"""A scheduler-driven run: real api-server + scheduler + dag-processor (LocalExecutor), triggered over REST."""

from __future__ import annotations

import json
import socket

import pytest

from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.config import SimulationConfig
from freqcap.layout import parse_as_of

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_features_dag_runs_under_the_scheduler(tmp_path):
    from freqcap.adapters.airflow.service import local_airflow

    raw = tmp_path / "data" / "raw"
    simulate_to_dir(raw, SimulationConfig(users=300, days=4, seed=5))
    as_of = parse_as_of(load_ground_truth(raw)["window"]["end"])
    env = {
        "FREQCAP__DATA_DIR": str(tmp_path / "data"),
        "FREQCAP__ORCHESTRATION__RETRY_DELAY": "1s",
        # Only the run triggered below: no scheduled runs of its own.
        "FREQCAP__ORCHESTRATION__FEATURES_SCHEDULE": "null",
        "FREQCAP__MONITORING__SCHEDULE": "null",
    }
    with local_airflow(tmp_path / "airflow", port=_free_port(), extra_env=env) as client:
        client.wait_for_dag("freqcap_features")
        client.unpause("freqcap_features")
        run_id = client.trigger(
            "freqcap_features",
            {"as_of": as_of.isoformat(), "events_dir": str(raw / "events")},
            logical_date=as_of.isoformat(),
        )
        state = client.wait("freqcap_features", run_id, timeout=480)
        tasks = client.task_states("freqcap_features", run_id)
    assert state == "success", tasks
    assert tasks == {t: "success" for t in ("validate", "aggregate", "check_features", "materialize")}
    summary = json.loads(next((tmp_path / "data" / "runs").glob("*/materialize.json")).read_text())
    assert summary["online_written"] and summary["rows"] > 0
