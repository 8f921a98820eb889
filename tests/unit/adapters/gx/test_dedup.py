"""Duplicates by event_id: removed (first by event_ts kept), counted apart from bad rows, quarantined as `duplicate`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from freqcap.adapters.gx import validate_events
from tests.unit.adapters.gx.builders import AS_OF, config, ev, key, read_rows, valid_batch, write_rows


def _run(events: Path, out: Path, **kwargs):
    cfg = kwargs.pop("cfg", config(max_bad_share=0.0))
    report = validate_events(events, as_of=AS_OF, config=cfg, out_dir=out, **kwargs)
    return report, read_rows(report.clean_path), read_rows(report.quarantine_path)


def test_exact_duplicates_are_removed_counted_and_not_bad(tmp_path: Path) -> None:
    batch = valid_batch()
    write_rows(tmp_path / "ev" / "a.parquet", batch)
    write_rows(tmp_path / "ev" / "b.parquet", batch[:3] + batch[:1])  # 3 events resent, one of them twice
    # max_bad_share=0: duplicates must not count as bad data
    report, clean, quarantine = _run(tmp_path / "ev", tmp_path / "out")
    assert report.passed and report.bad_share == 0 and report.invalid_rows == 0
    assert report.duplicates_removed == 4 and report.duplicates_differing == 0
    assert sorted(map(key, clean)) == sorted(map(key, batch))
    assert Counter(q["reason"] for q in quarantine) == {"duplicate": 4}
    assert Counter(q["event_id"] for q in quarantine) == {
        batch[0]["event_id"]: 2,
        batch[1]["event_id"]: 1,
        batch[2]["event_id"]: 1,
    }
    assert report.total_rows == report.clean_rows + report.invalid_rows + report.duplicates_removed
    unique = next(e for e in report.expectations if e.rule == "event_id_unique")
    assert unique.success is False and unique.unexpected_count == 7  # every copy of the 3 repeated ids
    assert "event_id_unique" not in report.invalid_by_rule


def test_the_earliest_copy_is_kept_whatever_the_file_order(tmp_path: Path) -> None:
    early = ev("dup", minutes_ago=120, user_id="u-early")
    late = ev("dup", minutes_ago=30, user_id="u-late")
    write_rows(tmp_path / "ev" / "a.parquet", [late])  # the later event sits in the first file
    write_rows(tmp_path / "ev" / "b.parquet", [early])
    report, clean, quarantine = _run(tmp_path / "ev", tmp_path / "out")
    assert [key(r) for r in clean] == [key(early)]
    assert [(key(q), q["reason"]) for q in quarantine] == [(key(late), "duplicate_differs")]
    assert report.duplicates_removed == 1 and report.duplicates_differing == 1


def test_same_timestamp_copies_keep_the_first_file(tmp_path: Path) -> None:
    first = ev("tie", minutes_ago=10, user_id="u-first")
    second = ev("tie", minutes_ago=10, user_id="u-second")
    write_rows(tmp_path / "ev" / "a.parquet", [first])
    write_rows(tmp_path / "ev" / "b.parquet", [second])
    _, clean, quarantine = _run(tmp_path / "ev", tmp_path / "out")
    assert [r["user_id"] for r in clean] == ["u-first"]
    assert [q["user_id"] for q in quarantine] == ["u-second"]


def test_an_invalid_copy_does_not_shadow_a_valid_one(tmp_path: Path) -> None:
    invalid_early = ev("e2", minutes_ago=120, format="tv")
    valid_late = ev("e2", minutes_ago=30)
    write_rows(tmp_path / "ev" / "a.parquet", [invalid_early, valid_late])
    report, clean, quarantine = _run(tmp_path / "ev", tmp_path / "out", cfg=config(max_bad_share=1.0))
    assert [key(r) for r in clean] == [key(valid_late)]
    assert [(key(q), q["reason"]) for q in quarantine] == [(key(invalid_early), "format_in_set")]
    assert report.duplicates_removed == 0 and report.invalid_rows == 1


@pytest.mark.parametrize("chunk_rows", [8, 1000])
def test_chunked_validation_matches_one_chunk(tmp_path: Path, chunk_rows: int) -> None:
    batch = valid_batch()
    resent = [
        ev(
            r["event_id"],
            r["event_type"],
            ts=r["event_ts"],
            user_id=r["user_id"],
            ad_id=r["ad_id"],
            format=r["format"],
            conversion_value=r["conversion_value"],
        )
        for r in batch[::3]
    ]
    bad = [ev("x1", format="tv"), ev("x2", "click", ad_id="a9"), ev(None, user_id="no-id")]
    write_rows(tmp_path / "ev" / "a.parquet", batch + bad[:2])
    write_rows(tmp_path / "ev" / "b.parquet", resent + bad[2:])
    cfg = config(max_bad_share=1.0)
    report, clean, quarantine = _run(tmp_path / "ev", tmp_path / "out", cfg=cfg, chunk_rows=chunk_rows)
    assert sorted(map(key, clean)) == sorted(map(key, batch))
    reasons = Counter(q["reason"] for q in quarantine)
    assert reasons == {"duplicate": len(resent), "format_in_set": 1, "ad_known": 1, "event_id_not_null": 1}
    unique = next(e for e in report.expectations if e.rule == "event_id_unique")
    assert unique.unexpected_count == 2 * len(resent)  # exact across chunks: copies share a chunk
