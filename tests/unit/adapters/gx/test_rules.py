"""Each kind of bad row lands in the quarantine with its reason and is absent from the clean output.

The expected outcome of every row is decided here, by construction, not by asking the code under test.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.gx import QUARANTINE_SCHEMA, EventValidationReport, validate_events
from freqcap.domain.events import EVENT_SCHEMA
from tests.unit.adapters.gx.builders import (
    AS_OF,
    HIERARCHY,
    TOLERANCE,
    config,
    ev,
    key,
    read_rows,
    valid_batch,
    write_catalog,
    write_rows,
)

US = timedelta(microseconds=1)

# (identity, row, reasons): identity is the event_id, or "user:<user_id>" for the row without an event_id.
BAD: list[tuple[str, dict[str, Any], set[str]]] = [
    ("bad-event-type", ev("bad-event-type", "impresion"), {"event_type_in_set"}),
    ("bad-format", ev("bad-format", format="tv"), {"format_in_set"}),
    ("user:u-no-id", ev(None, user_id="u-no-id"), {"event_id_not_null"}),
    ("null-event-type", ev("null-event-type", None), {"event_type_not_null"}),
    ("null-event-ts", {**ev("null-event-ts"), "event_ts": None}, {"event_ts_not_null"}),
    ("null-user", ev("null-user", user_id=None), {"user_id_not_null"}),
    ("null-advertiser", ev("null-advertiser", advertiser_id=None), {"advertiser_id_not_null"}),
    ("null-campaign", ev("null-campaign", campaign_id=None), {"campaign_id_not_null"}),
    ("null-ad", ev("null-ad", ad_id=None), {"ad_id_not_null"}),
    # a click without an ad is a null key, not an unknown ad
    ("null-ad-click", ev("null-ad-click", "click", ad_id=None), {"ad_id_not_null"}),
    ("null-format", ev("null-format", format=None), {"format_not_null"}),
    (
        "conv-negative",
        ev("conv-negative", "conversion", ad_id="a3", conversion_value=-5.0),
        {"conversion_value_non_negative"},
    ),
    ("conv-missing", ev("conv-missing", "conversion", ad_id="a3", conversion_value=None), {"conversion_value_present"}),
    ("conv-nan", ev("conv-nan", "conversion", ad_id="a3", conversion_value=math.nan), {"conversion_value_present"}),
    ("imp-negative", ev("imp-negative", conversion_value=-1.0), {"conversion_value_non_negative"}),
    ("future", ev("future", ts=AS_OF + TOLERANCE + US), {"event_ts_not_future"}),
    ("far-future", ev("far-future", ts=AS_OF + timedelta(days=400)), {"event_ts_not_future"}),
    ("click-unknown-ad", ev("click-unknown-ad", "click", ad_id="a9"), {"ad_known"}),
    ("conv-unknown-ad", ev("conv-unknown-ad", "conversion", ad_id="a9", conversion_value=3.0), {"ad_known"}),
    (
        "several",
        ev("several", "conversion", ad_id="a9", format="tv", conversion_value=-1.0),
        {"format_in_set", "conversion_value_non_negative", "ad_known"},
    ),
]
# Rows on the valid side of each rule's edge.
EDGE_VALID = [
    ev("at-tolerance", ts=AS_OF + TOLERANCE),  # exactly as_of + tolerance is not in the future
    ev("imp-new-ad", ad_id="a8"),  # without a catalog, an impression makes its ad known...
    ev("click-new-ad", "click", ad_id="a8"),  # ...so a click on it is fine
    ev("conv-zero", "conversion", ad_id="a1", conversion_value=0.0),
    ev("click-with-value", "click", ad_id="a1", conversion_value=2.0),
]


def identity(row: dict[str, Any]) -> str:
    return row["event_id"] if row["event_id"] is not None else f"user:{row['user_id']}"


@dataclass
class Run:
    report: EventValidationReport
    clean: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    out: Path


def run(events: Path, out: Path, **kwargs: Any) -> Run:
    cfg = kwargs.pop("cfg", config(max_bad_share=1.0))
    report = validate_events(events, as_of=AS_OF, config=cfg, out_dir=out, **kwargs)
    return Run(report, read_rows(report.clean_path), read_rows(report.quarantine_path), out)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("mixed")
    write_rows(root / "events" / "part-0.parquet", valid_batch())
    write_rows(root / "events" / "part-1.parquet", [row for _, row, _ in BAD] + EDGE_VALID)
    return run(root / "events", root / "out")


@pytest.mark.parametrize("ident, reasons", [(i, r) for i, _, r in BAD], ids=[i for i, _, _ in BAD])
def test_bad_row_is_quarantined_with_its_reasons(mixed: Run, ident: str, reasons: set[str]) -> None:
    hits = [q for q in mixed.quarantine if identity(q) == ident]
    assert len(hits) == 1, f"{ident}: {len(hits)} quarantine rows"
    assert set(hits[0]["reason"].split(";")) == reasons
    assert hits[0]["as_of"] == AS_OF
    assert hits[0]["source_file"] == "part-1.parquet"
    assert ident not in {identity(c) for c in mixed.clean}


def test_reasons_follow_suite_order(mixed: Run) -> None:
    (row,) = [q for q in mixed.quarantine if q["event_id"] == "several"]
    assert row["reason"] == "format_in_set;conversion_value_non_negative;ad_known"


def test_quarantine_keeps_the_original_values(mixed: Run) -> None:
    written = {i: row for i, row, _ in BAD}
    for q in mixed.quarantine:
        original = written[identity(q)]
        for col, value in original.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(q[col])
            else:
                assert q[col] == value, (identity(q), col)


def test_only_bad_rows_are_quarantined_and_every_valid_row_is_clean(mixed: Run) -> None:
    assert {identity(q) for q in mixed.quarantine} == {i for i, _, _ in BAD}
    assert len(mixed.quarantine) == len(BAD)
    expected_clean = valid_batch() + EDGE_VALID
    assert sorted(map(key, mixed.clean)) == sorted(map(key, expected_clean))


def test_report_counts_match_the_constructed_batch(mixed: Run) -> None:
    r = mixed.report
    n_valid = len(valid_batch()) + len(EDGE_VALID)
    assert r.total_rows == n_valid + len(BAD)
    assert r.clean_rows == n_valid
    assert r.invalid_rows == len(BAD)
    assert r.duplicates_removed == 0
    assert r.bad_share == pytest.approx(len(BAD) / (n_valid + len(BAD)))
    assert r.invalid_by_rule == dict(Counter(reason for _, _, reasons in BAD for reason in reasons))
    failed = {e.rule: e.unexpected_count for e in r.failed_expectations}
    assert failed == r.invalid_by_rule
    on_disk = json.loads((mixed.out / "validation_report.json").read_text())
    assert on_disk == json.loads(json.dumps(r.to_dict()))
    assert on_disk["passed"] is True and on_disk["clean_path"] == str(mixed.out / "clean" / "events.parquet")


def test_outputs_have_the_contract_schema_and_clean_is_sorted(mixed: Run) -> None:
    assert pq.read_schema(mixed.report.clean_path) == EVENT_SCHEMA
    assert pq.read_schema(mixed.report.quarantine_path) == QUARANTINE_SCHEMA
    ts = [row["event_ts"] for row in mixed.clean]
    assert ts == sorted(ts)


def test_hierarchy_rules_are_skipped_without_a_catalog(mixed: Run) -> None:
    skipped = {e.rule: e.skipped for e in mixed.report.expectations if e.skipped}
    assert set(skipped) == {"campaign_matches_catalog", "advertiser_matches_catalog"}


def test_a_backfill_leaves_later_events_out_instead_of_quarantining_them(tmp_path: Path) -> None:
    """A run whose wall clock is days after its as-of time (a backfill) reads a lake holding later, real events:
    those are set aside and counted; only events after the wall clock (+ tolerance) are future-stamped."""
    now = AS_OF + timedelta(days=3)
    later = [ev(f"later-{i}", ts=AS_OF + TOLERANCE + timedelta(hours=1 + 10 * i)) for i in range(6)]
    future = ev("future", ts=now + TOLERANCE + US)
    write_rows(tmp_path / "events" / "e.parquet", valid_batch() + later + [future])
    result = run(tmp_path / "events", tmp_path / "out", now=now)
    assert result.report.after_as_of_rows == len(later)
    assert [identity(q) for q in result.quarantine] == ["future"]
    assert sorted(map(key, result.clean)) == sorted(map(key, valid_batch()))
    assert result.report.total_rows == len(valid_batch()) + 1
    # Without the wall clock, the same later events are quarantined as future-stamped.
    strict = run(tmp_path / "events", tmp_path / "strict")
    assert strict.report.after_as_of_rows == 0
    assert {identity(q) for q in strict.quarantine} == {"future", *(r["event_id"] for r in later)}


# ------------------------------------------------------------------------------------------ with an ads catalog


def test_with_a_catalog_known_ads_and_hierarchy_come_from_it(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "ads.parquet", {**HIERARCHY, "a5": ("c3", "v2")})
    bad = [
        # impressed in this batch, but not in the catalog: the catalog decides
        ("click-a9", ev("click-a9", "click", ad_id="a9"), {"ad_known"}),
        ("imp-wrong-campaign", ev("imp-wrong-campaign", ad_id="a1", campaign_id="c2"), {"campaign_matches_catalog"}),
        (
            "click-wrong-advertiser",
            ev("click-wrong-advertiser", "click", ad_id="a4", advertiser_id="v1"),
            {"advertiser_matches_catalog"},
        ),
        (
            "conv-wrong-both",
            ev("conv-wrong-both", "conversion", ad_id="a2", campaign_id="c3", advertiser_id="v2", conversion_value=1.0),
            {"campaign_matches_catalog", "advertiser_matches_catalog"},
        ),
    ]
    valid = [
        *valid_batch(),
        ev("imp-a9", ad_id="a9"),  # impressions are not required to be in the catalog
        # in the catalog, never impressed in this batch: known
        ev("click-a5", "click", ad_id="a5", campaign_id="c3", advertiser_id="v2"),
    ]
    write_rows(tmp_path / "events" / "e.parquet", valid + [row for _, row, _ in bad])
    result = run(tmp_path / "events", tmp_path / "out", ads_catalog=catalog)
    got = {identity(q): set(q["reason"].split(";")) for q in result.quarantine}
    assert got == {i: r for i, _, r in bad}
    assert sorted(map(key, result.clean)) == sorted(map(key, valid))
    assert not any(e.skipped for e in result.report.expectations)


# ------------------------------------------------------------------------------------------------ file schemas


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA]))


def _schema_case(tmp_path: Path, bad_table: pa.Table, name: str = "bad.parquet") -> tuple[Run, list[dict[str, Any]]]:
    good = valid_batch()
    write_rows(tmp_path / "events" / "good.parquet", good)
    pq.write_table(bad_table, tmp_path / "events" / name)
    return run(tmp_path / "events", tmp_path / "out"), good


def test_file_with_string_timestamps_is_quarantined_as_schema(tmp_path: Path) -> None:
    rows = [ev("s1"), ev("s2", "click")]
    table = _table(rows).set_column(2, "event_ts", pa.array(["2026-10-15 10:00:00+00", "not a time"]))
    result, good = _schema_case(tmp_path, table)
    assert sorted(q["event_id"] for q in result.quarantine) == ["s1", "s2"]
    assert {q["reason"] for q in result.quarantine} == {"schema"}
    assert {q["source_file"] for q in result.quarantine} == {"bad.parquet"}
    raw = {json.loads(q["raw"])["event_ts"] for q in result.quarantine}
    assert raw == {"2026-10-15 10:00:00+00", "not a time"}  # the original values survive in `raw`
    assert sorted(map(key, result.clean)) == sorted(map(key, good))
    (failure,) = result.report.schema_failures
    assert failure["file"] == "bad.parquet" and failure["rows"] == 2
    assert any(p.startswith("event_ts: string") for p in failure["problems"])
    assert result.report.invalid_by_rule == {"schema": 2}


def test_file_with_integer_ids_is_quarantined_as_schema(tmp_path: Path) -> None:
    table = _table([ev("x"), ev("y")])
    table = table.set_column(0, "event_id", pa.array([42, 43], pa.int64()))
    table = table.set_column(3, "user_id", pa.array([7, 8], pa.int32()))
    result, good = _schema_case(tmp_path, table, "ints.parquet")
    assert sorted(q["event_id"] for q in result.quarantine) == ["42", "43"]  # cast for readability, reason schema
    assert {q["reason"] for q in result.quarantine} == {"schema"}
    assert sorted(map(key, result.clean)) == sorted(map(key, good))
    problems = result.report.schema_failures[0]["problems"]
    assert "event_id: int64, expected string" in problems and "user_id: int32, expected string" in problems


def test_file_missing_a_column_or_with_naive_timestamps_is_quarantined(tmp_path: Path) -> None:
    missing = _table([ev("m1")]).drop_columns(["format"])
    naive = _table([ev("n1")])
    naive = naive.set_column(2, "event_ts", naive.column("event_ts").cast(pa.timestamp("us")))
    write_rows(tmp_path / "events" / "good.parquet", valid_batch())
    pq.write_table(missing, tmp_path / "events" / "missing.parquet")
    pq.write_table(naive, tmp_path / "events" / "naive.parquet")
    result = run(tmp_path / "events", tmp_path / "out")
    assert {(q["event_id"], q["reason"], q["source_file"]) for q in result.quarantine} == {
        ("m1", "schema", "missing.parquet"),
        ("n1", "schema", "naive.parquet"),
    }
    problems = {f["file"]: f["problems"] for f in result.report.schema_failures}
    assert problems == {
        "missing.parquet": ["format: missing"],
        "naive.parquet": ["event_ts: timestamp[us], expected timestamp[us, tz=UTC]"],
    }
    assert len(result.clean) == len(valid_batch())


def test_lossless_representations_and_extra_columns_are_accepted(tmp_path: Path) -> None:
    rows = [ev("r1"), ev("r2", "conversion", ad_id="a1", conversion_value=1.5)]
    t = _table(rows)
    paris = pa.timestamp("ms", tz="Europe/Paris")
    variant = pa.table(
        {
            "event_id": t.column("event_id").cast(pa.large_string()),
            "event_type": t.column("event_type").dictionary_encode(),
            "event_ts": t.column("event_ts").cast(paris),  # same instants, another unit and zone
            "user_id": t.column("user_id"),
            "advertiser_id": t.column("advertiser_id"),
            "campaign_id": t.column("campaign_id"),
            "ad_id": t.column("ad_id"),
            "format": t.column("format"),
            "conversion_value": t.column("conversion_value").cast(pa.float32()),
            "debug": pa.array([1, 2]),
        }
    )
    nanos = _table([ev("r3")])
    nanos = nanos.set_column(2, "event_ts", nanos.column("event_ts").cast(pa.timestamp("ns", tz="UTC")))
    nanos = nanos.set_column(8, "conversion_value", pa.nulls(1))  # an all-null column has Arrow type null
    (tmp_path / "events").mkdir()
    pq.write_table(variant, tmp_path / "events" / "variant.parquet")
    pq.write_table(nanos, tmp_path / "events" / "nanos.parquet")
    result = run(tmp_path / "events", tmp_path / "out")
    assert result.quarantine == []
    assert sorted(map(key, result.clean)) == sorted(map(key, [*rows, ev("r3")]))
    assert pq.read_schema(result.report.clean_path) == EVENT_SCHEMA  # no `debug`, UTC microseconds


def test_hive_partitions_feed_missing_string_columns_and_are_not_kept(tmp_path: Path) -> None:
    write_rows(tmp_path / "events" / "date=2026-10-15" / "part-0.parquet", valid_batch())
    clicks = _table([ev("h1", "click", ad_id="a1"), ev("h2", "click", ad_id="a2")]).drop_columns(["event_type"])
    (tmp_path / "events" / "event_type=click").mkdir(parents=True)
    pq.write_table(clicks, tmp_path / "events" / "event_type=click" / "part-0.parquet")
    result = run(tmp_path / "events", tmp_path / "out")
    assert result.quarantine == []
    assert "date" not in pq.read_schema(result.report.clean_path).names
    by_id = {row["event_id"]: row for row in result.clean}
    assert by_id["h1"]["event_type"] == "click" and by_id["h2"]["event_type"] == "click"
    assert len(result.clean) == len(valid_batch()) + 2
