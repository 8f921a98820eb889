"""End-to-end runs of the features DAG through Airflow's `dag.test()` on a small simulated world."""

from __future__ import annotations

import json
import math
import shutil
from datetime import timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.config import SimulationConfig, load_settings
from freqcap.layout import DataLayout, parse_as_of
from tests.bruteforce import full_row, tier_features

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    simulate_to_dir(out / "raw", SimulationConfig(users=600, days=6, seed=3))
    return out


@pytest.fixture
def data_env(world, monkeypatch):
    monkeypatch.setenv("FREQCAP__DATA_DIR", str(world / "data"))
    return load_settings()


def _online(settings, level: str, pairs: list[tuple[str, str]]):
    from freqcap.adapters.feast.store import open_store

    store = open_store(settings, DataLayout.of(settings).feast_repo)
    view = f"user_{level}"
    refs = [f"{view}:{f.name}" for f in store.get_feature_view(view).features]
    rows = [{"user_id": u, f"{level}_id": e} for u, e in pairs]
    return store.get_online_features(features=refs, entity_rows=rows).to_dict()


def _run(as_of, events_dir):
    from freqcap.adapters.airflow.local import run_dag, task_states

    dag_run = run_dag(
        "freqcap_features",
        logical_date=as_of,
        conf={"as_of": as_of.isoformat(), "events_dir": str(events_dir)},
    )
    return dag_run, task_states(dag_run)


def test_features_dag_end_to_end_then_gate_keeps_online_store(world, data_env, airflow_db):
    settings = data_env
    as_of = parse_as_of(load_ground_truth(world / "raw")["window"]["end"])
    events_dir = world / "raw" / "events"

    dag_run, states = _run(as_of, events_dir)
    assert dag_run.state == "success", states
    assert set(states.values()) == {"success"}

    # Online values (read through Feast) equal a brute-force count over the validated events.
    report = json.loads(
        (DataLayout.of(settings).features_run(as_of).validation_dir / "validation_report.json").read_text()
    )
    events = pq.read_table(report["clean_path"]).to_pylist()
    level = "ad"
    expected = tier_features(events, as_of, level, settings.features.tier(level).half_life_seconds)
    pairs = sorted(expected)[:: max(1, len(expected) // 60)]
    got = _online(settings, level, pairs)
    for i, pair in enumerate(pairs):
        want = full_row(expected[pair])
        for col in ("imp_1h", "imp_24h", "imp_7d", "imp_28d", "clk_28d", "conv_28d"):
            assert got[col][i] == want[col], (pair, col)
        assert math.isclose(got["imp_decayed"][i], want["imp_decayed"], rel_tol=1e-9)

    # The Asset that the training DAG schedules on was updated by this run.
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        n_events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "freqcap_online_features")
            .count()
        )
    assert n_events >= 1

    # A later run over mostly-bad data stops at validation: nothing downstream runs, online store unchanged.
    bad_dir = world / "bad-events"
    shutil.copytree(events_dir, bad_dir, dirs_exist_ok=True)
    good = pq.read_table(next(events_dir.rglob("*.parquet")))
    n_bad = int(good.num_rows * 0.5) + 1000
    bad = good.slice(0, min(n_bad, good.num_rows)).to_pandas()
    bad["event_id"] = [f"bad-{i}" for i in range(len(bad))]
    bad["event_type"] = "hover"  # not an allowed event type
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False).cast(good.schema), bad_dir / "corrupt.parquet")
    later = as_of + timedelta(hours=6)
    before = _online(settings, level, pairs)
    dag_run, states = _run(later, bad_dir)
    assert dag_run.state == "failed"
    assert states["validate"] == "failed"
    assert {states[t] for t in ("aggregate", "check_features", "materialize")} == {"upstream_failed"}
    assert _online(settings, level, pairs) == before
    quarantine = DataLayout.of(settings).features_run(later).validation_dir / "quarantine.parquet"
    reasons = duckdb.sql(f"SELECT reason, count(*) FROM read_parquet('{quarantine}') GROUP BY reason").fetchall()
    assert any("event_type" in r for r, _ in reasons), reasons


def test_a_corrupted_feature_table_stops_the_dag_before_materialize(world, data_env, airflow_db, monkeypatch, caplog):
    """The features gate (Great Expectations) runs between aggregate and materialize.

    Fault injection, said so: the aggregation is correct by construction, so a corrupted table cannot be produced
    for real. The real build job runs and its real output is then corrupted on disk (one user×ad row with
    imp_24h > imp_7d) before the DAG's next task reads it.
    """
    import freqcap.jobs.features as jobs
    from freqcap.adapters.feast.snapshots import snapshot_path
    from freqcap.layout import offline_root

    real_build = jobs.build_features_job

    def build_then_corrupt(*args, **kwargs):
        build = real_build(*args, **kwargs)
        path = build["paths"]["user_ad"]
        table = pq.read_table(path)
        frame = table.to_pandas()
        row = frame.index[frame["imp_7d"] > 0][0]
        frame.loc[row, "imp_24h"] = frame.loc[row, "imp_7d"] + 1
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).cast(table.schema), path)
        return build

    monkeypatch.setattr(jobs, "build_features_job", build_then_corrupt)
    settings = data_env
    as_of = parse_as_of(load_ground_truth(world / "raw")["window"]["end"]) + timedelta(hours=12)
    dag_run, states = _run(as_of, world / "raw" / "events")
    assert dag_run.state == "failed", states
    assert states["validate"] == states["aggregate"] == "success"
    assert states["check_features"] == "failed" and states["materialize"] == "upstream_failed"
    from tests.dags.test_publish_dag import _try_numbers

    assert _try_numbers(dag_run)["check_features"] == 1  # a failed gate is not retried: bad data stays bad

    report = json.loads((DataLayout.of(settings).features_run(as_of).features_report).read_text())
    assert report["failed_rules"] == ["user_ad.imp_24h_le_7d"]
    assert "user_ad.imp_24h_le_7d" in report["failure"] and "1 of" in report["failure"]
    assert any("user_ad.imp_24h_le_7d" in r.getMessage() for r in caplog.records), "the task's error names the rule"
    # Nothing was published: no snapshot at this as_of, and it is not the next run's row-count baseline.
    root = offline_root(DataLayout.of(settings).feast_repo)
    assert not snapshot_path(root, "user_ad", as_of).exists()
    counts = (
        json.loads(DataLayout.of(settings).row_counts.read_text())
        if DataLayout.of(settings).row_counts.exists()
        else {}
    )
    assert as_of.isoformat() not in {e["as_of"] for e in counts.get("user_ad", [])}
