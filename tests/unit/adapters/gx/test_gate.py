"""The bad-share gate: raises above `max_bad_share` (not at it), after writing the quarantine and the report."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.gx import EventValidationError, validate_events
from freqcap.errors import FreqcapError
from tests.unit.adapters.gx.builders import AS_OF, config, ev, read_rows, write_rows


def _batch(n_total: int, n_bad: int) -> list[dict]:
    good = [ev(f"g{i}", minutes_ago=i + 1, user_id=f"u{i % 7}") for i in range(n_total - n_bad)]
    bad = [ev(f"b{i}", minutes_ago=i + 1, format="tv") for i in range(n_bad)]
    return good + bad


def test_at_the_threshold_the_run_passes(tmp_path: Path) -> None:
    write_rows(tmp_path / "ev" / "e.parquet", _batch(100, 5))
    report = validate_events(tmp_path / "ev", as_of=AS_OF, config=config(max_bad_share=0.05), out_dir=tmp_path / "out")
    assert report.passed and report.bad_share == 0.05
    assert report.clean_rows == 95 and Path(report.clean_path).exists()


def test_above_the_threshold_the_run_raises_after_writing_everything(tmp_path: Path) -> None:
    write_rows(tmp_path / "ev" / "e.parquet", _batch(100, 6))
    with pytest.raises(EventValidationError) as info:
        validate_events(tmp_path / "ev", as_of=AS_OF, config=config(max_bad_share=0.05), out_dir=tmp_path / "out")
    err = info.value
    assert isinstance(err, FreqcapError)
    message = str(err)
    assert "6 of 100 rows invalid (6.00%)" in message
    assert "max_bad_share 5.00%" in message
    assert "format_in_set (expect_column_values_to_be_in_set on format): 6 rows" in message
    assert err.report is not None and not err.report.passed and err.report.invalid_rows == 6
    quarantine = read_rows(tmp_path / "out" / "quarantine.parquet")
    assert sorted(q["event_id"] for q in quarantine) == sorted(f"b{i}" for i in range(6))
    on_disk = json.loads((tmp_path / "out" / "validation_report.json").read_text())
    assert on_disk["passed"] is False and on_disk["failure"] == message and on_disk["clean_path"] is None
    assert on_disk["failed_expectations"][0]["rule"] == "format_in_set"
    assert not (tmp_path / "out" / "clean" / "events.parquet").exists()


def test_a_failed_run_removes_the_clean_output_of_an_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_rows(tmp_path / "ev1" / "e.parquet", _batch(20, 0))
    first = validate_events(tmp_path / "ev1", as_of=AS_OF, config=config(), out_dir=out)
    assert Path(first.clean_path).exists()
    write_rows(tmp_path / "ev2" / "e.parquet", _batch(20, 10))
    with pytest.raises(EventValidationError):
        validate_events(tmp_path / "ev2", as_of=AS_OF, config=config(), out_dir=out)
    assert not Path(first.clean_path).exists()


def test_rows_of_a_wrongly_typed_file_count_toward_the_gate(tmp_path: Path) -> None:
    write_rows(tmp_path / "ev" / "good.parquet", _batch(10, 0))
    pq.write_table(
        pa.table({"event_id": [1, 2], "event_ts": ["2026-10-15", "2026-10-15"]}), tmp_path / "ev" / "x.parquet"
    )
    with pytest.raises(EventValidationError, match=r"schema \(parquet_file_schema\): 2 rows"):
        validate_events(tmp_path / "ev", as_of=AS_OF, config=config(max_bad_share=0.1), out_dir=tmp_path / "out")


def test_an_unreadable_file_fails_the_run_naming_it_and_leaves_no_old_verdict(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_rows(tmp_path / "ev" / "good.parquet", _batch(10, 0))
    validate_events(tmp_path / "ev", as_of=AS_OF, config=config(), out_dir=out)  # an earlier, passing run
    (tmp_path / "ev" / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(EventValidationError, match=r"cannot read 1 events file\(s\).*broken\.parquet") as info:
        validate_events(tmp_path / "ev", as_of=AS_OF, config=config(), out_dir=out)
    on_disk = json.loads((out / "validation_report.json").read_text())
    assert on_disk["passed"] is False and "broken.parquet" in on_disk["failure"]
    assert on_disk["files"]["schema_failures"][0]["file"] == "broken.parquet"
    assert info.value.report is not None and info.value.report.clean_path is None
    assert not (out / "clean" / "events.parquet").exists() and not (out / "quarantine.parquet").exists()


def test_totals_reconcile_over_bad_rows_duplicates_and_a_bad_file(tmp_path: Path) -> None:
    good = _batch(30, 0)
    bad = [ev("bad1", "view"), ev("bad2", format=None), ev("bad3", "click", ad_id="a7")]
    dups = [good[0], good[1], good[1]]
    write_rows(tmp_path / "ev" / "a.parquet", good + bad)
    write_rows(tmp_path / "ev" / "b.parquet", dups)
    pq.write_table(pa.table({"event_id": ["s1"], "event_ts": ["2026-10-15"]}), tmp_path / "ev" / "c.parquet")
    written = len(good) + len(bad) + len(dups) + 1
    report = validate_events(tmp_path / "ev", as_of=AS_OF, config=config(max_bad_share=0.2), out_dir=tmp_path / "out")
    assert report.total_rows == written
    assert (report.clean_rows, report.invalid_rows, report.duplicates_removed) == (len(good), len(bad) + 1, len(dups))
    assert report.clean_rows + report.invalid_rows + report.duplicates_removed == written
    clean, quarantine = read_rows(report.clean_path), read_rows(report.quarantine_path)
    assert len(clean) + len(quarantine) == written


def test_naive_as_of_and_empty_directories_are_refused(tmp_path: Path) -> None:
    write_rows(tmp_path / "ev" / "e.parquet", _batch(3, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_events(tmp_path / "ev", as_of=datetime(2026, 10, 15), config=config(), out_dir=tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EventValidationError, match="no Parquet files"):
        validate_events(tmp_path / "empty", as_of=AS_OF, config=config(), out_dir=tmp_path / "out")


def test_progress_is_logged_and_great_expectations_is_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_rows(tmp_path / "ev" / "e.parquet", _batch(10, 1))
    with caplog.at_level(logging.DEBUG):
        validate_events(tmp_path / "ev", as_of=AS_OF, config=config(max_bad_share=0.5), out_dir=tmp_path / "out")
    ours = [r for r in caplog.records if r.name.startswith("freqcap.adapters.gx")]
    assert any("validated 10 rows" in r.getMessage() for r in ours)
    noisy = [r for r in caplog.records if r.name.startswith("great_expectations") and r.levelno < logging.WARNING]
    assert noisy == []
    # GX pins some of its module loggers to INFO at import (data_context.types.base does): all must be quiet.
    gx_loggers = [
        logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("great_expectations")
    ]
    assert gx_loggers and all(lg.getEffectiveLevel() >= logging.WARNING for lg in gx_loggers)
