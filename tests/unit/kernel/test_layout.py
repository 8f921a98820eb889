"""The data layout: one place for every path under the data directory, and the as-of format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from freqcap.config import load_settings
from freqcap.layout import DataLayout, parse_as_of, parse_stamp, stamp

T = datetime(2026, 10, 15, 6, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    ["2026-10-15T06:30:05Z", "2026-10-15T06:30:05+00:00", "2026-10-15T08:30:05+02:00", "2026-10-15 06:30:05"],
)
def test_as_of_text_in_any_offset_or_naive_is_the_same_utc_instant(text):
    assert parse_as_of(text) == T
    assert parse_as_of(text).tzinfo == UTC


def test_stamp_round_trips_and_sorts_like_time():
    assert stamp(T) == "20261015T063005Z"
    assert stamp("2026-10-15T08:30:05+02:00") == "20261015T063005Z"
    assert parse_stamp(stamp(T)) == T
    times = [T + timedelta(hours=h) for h in (30, -5, 0, 2, -700)]
    assert sorted(stamp(t) for t in times) == [stamp(t) for t in sorted(times)]


def test_every_path_is_under_the_resolved_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={"FREQCAP__DATA_DIR": "rel/data"})
    layout = DataLayout.of(settings)
    root = (tmp_path / "rel" / "data").resolve()
    assert layout.root == root
    paths = [
        layout.raw_dir,
        layout.events_dir,
        layout.features_run(T).root,
        layout.features_run(T).validation_dir,
        layout.features_run(T).features_dir,
        layout.features_run(T).features_report,
        layout.features_run(T).materialize_report,
        layout.feast_repo,
        layout.offline_root,
        layout.row_counts,
        layout.curves_dir(T),
        layout.training_dir("m", T),
        layout.mlflow_db,
        layout.mlflow_artifacts,
        layout.published_log,
        layout.publish_candidate_dir(3),
        layout.decision_log_dir,
        layout.monitoring_run(T).metrics,
        layout.monitoring_run(T).page,
        layout.oncall_page,
        layout.drift_report,
        layout.incidents_dir,
        layout.workspace_dir,
        layout.stream_dead_letters,
        layout.gx_dir,
    ]
    assert all(p.is_absolute() and p.is_relative_to(root) for p in paths)
    assert len({str(p) for p in paths}) == len(paths), "two stores share one path"
    # Runs are keyed by the instant, whatever offset the as-of time was written in.
    later = T.astimezone(timezone(timedelta(hours=-7)))
    assert layout.features_run(later) == layout.features_run(T.isoformat())
    assert layout.features_run(T).root.name == "20261015T063005Z"


def test_directory_settings_move_the_decision_log_and_the_workspace(tmp_path):
    settings = load_settings(
        environ={
            "FREQCAP__DATA_DIR": str(tmp_path / "data"),
            "FREQCAP__SERVING__DECISION_LOG_DIR": str(tmp_path / "logs"),
            "FREQCAP__MONITORING__WORKSPACE_DIR": str(tmp_path / "ws"),
        }
    )
    layout = DataLayout.of(settings)
    assert layout.decision_log_dir == tmp_path / "logs"
    assert layout.workspace_dir == (tmp_path / "ws").resolve()
    assert DataLayout(Path("/d")).decision_log_dir == Path("/d/decision_log")


def test_the_config_hierarchy_is_the_event_contracts():
    from typing import get_args

    from freqcap.config import Level
    from freqcap.domain.events import LEVELS

    assert tuple(get_args(Level)) == tuple(LEVELS)


def test_store_of_names_the_store_of_each_file(tmp_path):
    from freqcap.layout import DataLayout

    layout = DataLayout(tmp_path.resolve())
    r = layout.root
    cases = {
        r / "raw" / "events" / "date=2026-10-01" / "part-0.parquet": "raw_events",
        r / "raw" / "users.parquet": "users",
        r / "raw" / "truth" / "users.parquet": "simulation_truth",
        layout.features_run("2026-10-01T00:00:00Z").validation_dir / "clean" / "events.parquet": "clean_events",
        layout.features_run("2026-10-01T00:00:00Z").validation_dir / "quarantine.parquet": "quarantine",
        layout.features_run("2026-10-01T00:00:00Z").features_dir / "user_ad.parquet": "feature_runs",
        layout.offline_root / "user_ad" / "snapshot_20261001T000000Z.parquet": "offline_snapshots",
        layout.training_dir("m", "2026-10-01T00:00:00Z") / "training_set.parquet": "training_sets",
        r / "elsewhere" / "x.parquet": "other",
        tmp_path.parent / "x.parquet": "outside_data_dir",
    }
    for path, store in cases.items():
        assert layout.store_of(path) == store, path
