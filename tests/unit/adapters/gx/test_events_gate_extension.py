"""The events gate's batch-level extension (`events_fresh`, `impressions_present`) on a small simulated world.

A stalled feed (as of two days after the newest event) and a feed without impressions (the real events minus
every impression) must stop the run naming the rule and what was observed; the real feed passes. Expected values
(the newest event time) are read from the events with DuckDB, not from the gate.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import duckdb
import pytest

from freqcap.adapters.gx import EventValidationError, validate_events
from freqcap.adapters.gx.docs import runs_page_path
from freqcap.adapters.gx.errors import DataValidationError
from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.config import SimulationConfig
from freqcap.layout import parse_as_of
from tests.unit.adapters.gx.worlds import settings_for


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("events-gate")
    simulate_to_dir(root / "raw", SimulationConfig(users=150, days=3, seed=5))
    as_of = parse_as_of(load_ground_truth(root / "raw")["window"]["end"])
    newest = duckdb.sql(f"SELECT max(event_ts) FROM read_parquet('{root}/raw/events/**/*.parquet')").fetchall()[0][0]
    return root, as_of, newest


def _validate(root, events_dir, as_of, out, **kw):
    settings = settings_for(root)
    return validate_events(
        events_dir, as_of=as_of, config=settings.validation, out_dir=out, ads_catalog=root / "raw" / "ads.parquet", **kw
    )


def _outcome(report, rule):
    return next(o for o in report.expectations if o.rule == rule)


def test_the_real_feed_passes_and_reports_what_it_saw(world, tmp_path):
    root, as_of, newest = world
    report = _validate(root, root / "raw" / "events", as_of, tmp_path / "ok")
    assert report.passed
    fresh = _outcome(report, "events_fresh")
    assert fresh.success is True and fresh.details["observed"] == newest.isoformat()
    assert _outcome(report, "impressions_present").success is True


def test_a_stalled_feed_stops_the_run_naming_events_fresh(world, tmp_path):
    root, as_of, newest = world
    later = as_of + timedelta(days=2)  # nothing arrived for two days; max_event_staleness is 1d
    assert later - newest > timedelta(days=1)
    with pytest.raises(EventValidationError) as caught:
        _validate(root, root / "raw" / "events", later, tmp_path / "stale", docs_root=tmp_path / "docs")
    assert isinstance(caught.value, DataValidationError)  # one error family for every gate
    message = str(caught.value)
    assert "batch-level expectation(s) failed: events_fresh" in message
    assert f'observed "{newest.isoformat()}"' in message
    report = caught.value.report
    assert [o.rule for o in report.failed_expectations] == ["events_fresh"]
    assert report.invalid_rows == 0 and report.clean_path is None  # nothing is published from a stale feed
    # the failed run is on the Data Docs site
    page = runs_page_path(tmp_path / "docs")
    assert report.data_docs == str(page)
    html = page.read_text()
    assert "freqcap_events" in html and "FAILED" in html and "events_fresh" in html


def test_a_feed_without_impressions_stops_the_run(world, tmp_path):
    root, as_of, _ = world
    events = tmp_path / "feed" / "events"
    events.mkdir(parents=True)
    shutil.copy(root / "raw" / "ads.parquet", tmp_path / "feed" / "ads.parquet")
    duckdb.sql(
        f"COPY (SELECT * FROM read_parquet('{root}/raw/events/**/*.parquet', hive_partitioning = false) "
        f"WHERE event_type <> 'impression') TO '{events}/part-0.parquet' (FORMAT parquet)"
    )
    n_left = duckdb.sql(f"SELECT count(*) FROM read_parquet('{events}/part-0.parquet')").fetchall()[0][0]
    assert n_left > 0, "clicks and conversions remain"
    with pytest.raises(EventValidationError) as caught:
        _validate(root, events, as_of, tmp_path / "noimp")
    assert "batch-level expectation(s) failed: impressions_present" in str(caught.value)
    assert '"missing": ["impression"]' in str(caught.value)
    report = caught.value.report
    assert [o.rule for o in report.failed_expectations] == ["impressions_present"]
    assert report.total_rows == n_left and report.invalid_rows == 0
