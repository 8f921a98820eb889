"""The declarative suite file: it matches the event contract, and malformed suites are refused with a clear message."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from freqcap.adapters.gx import EventValidationError, ValidationSuiteError, load_suite, validate_events
from freqcap.adapters.gx.suite import default_suite_path
from freqcap.domain.events import EVENT_COLUMNS, EVENT_TYPES
from tests.conftest import REPO_ROOT
from tests.unit.adapters.gx.builders import AS_OF, config, ev, read_rows, valid_batch, write_rows

SUITE = REPO_ROOT / "src" / "freqcap" / "resources" / "gx" / "events.json"
NOT_NULL_KEYS = {"event_id", "event_type", "event_ts", "user_id", "advertiser_id", "campaign_id", "ad_id", "format"}


def _doc() -> dict:
    return json.loads(SUITE.read_text())


def _write(tmp_path: Path, doc: dict, name: str = "suite.json") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if name.endswith(".yaml") else json.dumps(doc))
    return path


def test_the_committed_suite_is_the_default_and_matches_the_contract() -> None:
    assert default_suite_path() == SUITE
    suite = load_suite()
    by_type: dict[str, list] = {}
    for rule in suite.rules:
        by_type.setdefault(rule.expectation_type, []).append(rule)
    assert {r.kwargs["column"] for r in by_type["expect_column_values_to_not_be_null"]} >= NOT_NULL_KEYS
    (columns,) = by_type["expect_table_columns_to_match_set"]
    assert columns.kwargs["column_set"] == list(EVENT_COLUMNS)
    event_type = suite.rule("event_type_in_set")
    assert event_type.kwargs["value_set"] == list(EVENT_TYPES)
    assert suite.rule("format_in_set").kwargs["value_set"] == {"$PARAMETER": "allowed_formats"}
    assert suite.rule("event_ts_not_future").kwargs["max_value"] == {"$PARAMETER": "max_event_ts"}
    assert suite.rule("event_id_unique").on_failure == "dedup"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["expectations"][1]["meta"].pop("rule"), "needs meta.rule"),
        (lambda d: d["expectations"][2]["meta"].update(rule="event_id_not_null"), "used twice"),
        (lambda d: d["expectations"][1]["meta"].update(rule="duplicate"), "reserved"),
        (lambda d: d["expectations"][1]["meta"].update(on_failure="ignore"), "on_failure must be one of"),
        (lambda d: d["expectations"][1]["meta"].update(requires="users"), "requires must be one of"),
        (lambda d: d["expectations"][1].pop("kwargs"), "needs a 'type' and a 'kwargs'"),
        (lambda d: d.update(expectations=[]), "no expectations"),
    ],
)
def test_malformed_suites_are_refused(tmp_path: Path, mutate, message: str) -> None:
    doc = copy.deepcopy(_doc())
    mutate(doc)
    with pytest.raises(ValidationSuiteError, match=message):
        load_suite(_write(tmp_path, doc))


def test_unparsable_suite_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValidationSuiteError, match=r"broken\.json"):
        load_suite(path)


def test_an_expectation_great_expectations_rejects_is_an_error(tmp_path: Path) -> None:
    doc = _doc()
    doc["expectations"].append(
        {"type": "expect_column_values_to_be_purple", "kwargs": {"column": "format"}, "meta": {"rule": "purple"}}
    )
    write_rows(tmp_path / "ev" / "e.parquet", valid_batch())
    with pytest.raises(ValidationSuiteError, match="purple"):
        validate_events(
            tmp_path / "ev", as_of=AS_OF, config=config(), out_dir=tmp_path / "out", suite_path=_write(tmp_path, doc)
        )


def test_an_expectation_that_errors_at_run_time_fails_loudly(tmp_path: Path) -> None:
    doc = _doc()  # GX catches the error and answers "unsuccessful, empty result": that must not pass as zero bad rows
    doc["expectations"].append(
        {
            "type": "expect_column_values_to_not_be_null",
            "kwargs": {"column": "no_such_column"},
            "meta": {"rule": "ghost"},
        }
    )
    write_rows(tmp_path / "ev" / "e.parquet", valid_batch())
    with pytest.raises(ValidationSuiteError, match=r"rule ghost.*raised"):
        validate_events(
            tmp_path / "ev", as_of=AS_OF, config=config(), out_dir=tmp_path / "out", suite_path=_write(tmp_path, doc)
        )


def test_a_row_rule_must_give_per_row_results(tmp_path: Path) -> None:
    doc = _doc()
    doc["expectations"].append(
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}, "meta": {"rule": "has_rows"}}
    )  # on_failure: quarantine
    write_rows(tmp_path / "ev" / "e.parquet", valid_batch())
    with pytest.raises(ValidationSuiteError, match=r"has_rows.*no per-row results"):
        validate_events(
            tmp_path / "ev", as_of=AS_OF, config=config(), out_dir=tmp_path / "out", suite_path=_write(tmp_path, doc)
        )


def test_a_failing_batch_level_rule_fails_the_run_whatever_the_bad_share(tmp_path: Path) -> None:
    doc = _doc()
    doc["expectations"].append(
        {
            "type": "expect_table_row_count_to_be_between",
            "kwargs": {"min_value": 1000},
            "meta": {"rule": "enough_rows", "on_failure": "error"},
        }
    )
    write_rows(tmp_path / "ev" / "e.parquet", valid_batch())
    with pytest.raises(EventValidationError, match=r"batch-level expectation.*enough_rows") as info:
        validate_events(
            tmp_path / "ev",
            as_of=AS_OF,
            config=config(max_bad_share=1.0),
            out_dir=tmp_path / "out",
            suite_path=_write(tmp_path, doc),
        )
    assert info.value.report.invalid_rows == 0


def test_a_yaml_suite_works_and_its_rules_drive_the_reasons(tmp_path: Path) -> None:
    doc = _doc()
    rule = next(e for e in doc["expectations"] if e["meta"]["rule"] == "event_type_in_set")
    rule["kwargs"]["value_set"] = ["impression", "conversion"]  # clicks become invalid under this suite
    rule["meta"]["rule"] = "event_type_allowed"
    write_rows(tmp_path / "ev" / "e.parquet", [*valid_batch(), ev("c1", "click", ad_id="a1")])
    report = validate_events(
        tmp_path / "ev",
        as_of=AS_OF,
        config=config(max_bad_share=1.0),
        out_dir=tmp_path / "out",
        suite_path=_write(tmp_path, doc, "suite.yaml"),
    )
    clicks = [r for r in valid_batch() if r["event_type"] == "click"] + [ev("c1", "click")]
    quarantine = read_rows(report.quarantine_path)
    assert sorted(q["event_id"] for q in quarantine) == sorted(c["event_id"] for c in clicks)
    assert {q["reason"] for q in quarantine} == {"event_type_allowed"}
    assert report.suite_path.endswith("suite.yaml")


def test_allowed_formats_come_from_the_config(tmp_path: Path) -> None:
    rows = [ev("f1", format="feed"), ev("f2", format="video"), ev("f3", format="reels")]
    write_rows(tmp_path / "ev" / "e.parquet", rows)
    report = validate_events(
        tmp_path / "ev",
        as_of=AS_OF,
        config=config(max_bad_share=1.0, allowed_formats=("feed",)),
        out_dir=tmp_path / "out",
    )
    assert sorted((q["event_id"], q["reason"]) for q in read_rows(report.quarantine_path)) == [
        ("f2", "format_in_set"),
        ("f3", "format_in_set"),
    ]
