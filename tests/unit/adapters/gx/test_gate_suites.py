"""The declarative gate suites and the pieces around them that need no data: expansion of the feature suite for
any window set, the row-count history, failure messages, and the Data Docs entry point."""

from __future__ import annotations

import copy
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from freqcap.adapters.decision_log import FIELDS
from freqcap.adapters.gx import docs
from freqcap.adapters.gx.decision_log import DERIVED_COLUMNS
from freqcap.adapters.gx.errors import ValidationSuiteError
from freqcap.adapters.gx.features import (
    expand_for_tier,
    load_feature_suite,
    previous_row_counts,
    read_row_counts,
    record_row_counts,
)
from freqcap.adapters.gx.gate import GateReport, RuleOutcome, expectation_columns, read_suite_document
from freqcap.adapters.gx.training import AS_OF_COLUMN, LABELS_COMPLETE_COLUMN, with_leakage_columns
from freqcap.config import TierConfig
from freqcap.domain.features import tier_table
from freqcap.domain.training.config import ConversionModelConfig, LabelConfig
from freqcap.errors import FeatureValidationError
from tests.conftest import REPO_ROOT

GX_DIR = REPO_ROOT / "src" / "freqcap" / "resources" / "gx"
T = datetime(2026, 10, 5, tzinfo=UTC)


def _expanded(windows: tuple[str, ...], level: str = "ad") -> list[dict]:
    tier = TierConfig(level=level, windows=windows, half_life="1d")
    _, doc = load_feature_suite()
    return expand_for_tier(doc["expectations"], tier_table(tier), tier)


@pytest.mark.parametrize("windows", [("1h", "24h", "7d", "28d"), ("2h", "3d", "9d"), ("7d",)])
def test_the_feature_suite_expands_to_the_configured_windows(windows):
    expanded = _expanded(windows)
    text = json.dumps(expanded)
    assert "{" not in text.replace('{"', "").replace("{}", ""), "every placeholder is filled"
    rules = [e["meta"]["rule"] for e in expanded]
    assert len(rules) == len(set(rules))
    counts = [f"{p}_{w}" for p in ("imp", "clk", "conv") for w in windows]
    # written out from the semantics: every count is non-negative and not null; each window holds the shorter one
    want_pairs = {f"{p}_{a}_le_{b}" for p in ("imp", "clk", "conv") for a, b in itertools.pairwise(windows)}
    assert {f"{c}_non_negative" for c in counts} | {f"{c}_not_null" for c in counts} | want_pairs <= set(rules)
    window_pair = re.compile(r"(imp|clk|conv)_[0-9a-z]+_le_[0-9a-z]+")
    assert {r for r in rules if window_pair.fullmatch(r)} == want_pairs
    pairs = {
        e["meta"]["rule"]: (e["kwargs"]["column_A"], e["kwargs"]["column_B"])
        for e in expanded
        if window_pair.fullmatch(e["meta"]["rule"])
    }
    for rule, (longer, shorter) in pairs.items():
        prefix, a, _, b = rule.split("_")
        assert (longer, shorter) == (f"{prefix}_{b}", f"{prefix}_{a}")
    by_rule = {e["meta"]["rule"]: e for e in expanded}
    assert by_rule["key_unique"]["kwargs"]["column_list"] == ["user_id", "ad_id"]
    assert by_rule["decayed_le_raw"]["kwargs"] == {
        "column_A": f"imp_{windows[-1]}",
        "column_B": "imp_decayed",
        "or_equal": True,
    }


def test_malformed_feature_suites_are_refused(tmp_path):
    _, doc = load_feature_suite()
    cases = [
        (lambda d: d["expectations"][0]["meta"].pop("applies_to"), "needs meta.applies_to"),
        (lambda d: d["expectations"][-1]["meta"].update(for_each="count_column"), "only applies to tier"),
        (lambda d: d["expectations"][1]["meta"].update(for_each="every_window"), "for_each must be one of"),
        (lambda d: d["expectations"][2]["meta"].update(rule="user_id_not_null"), "used twice"),
        (lambda d: d["expectations"][3].pop("kwargs"), "needs a 'type' and a 'kwargs'"),
    ]
    for mutate, message in cases:
        bad = copy.deepcopy(doc)
        mutate(bad)
        path = tmp_path / "features.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ValidationSuiteError, match=message):
            load_feature_suite(path)


def test_the_decision_log_suite_only_names_logged_or_derived_columns():
    doc = read_suite_document(GX_DIR / "decision_log.json")
    known = set(FIELDS) | set(DERIVED_COLUMNS)
    for exp in doc["expectations"]:
        cols = set(expectation_columns(exp["kwargs"]))
        cond = exp["kwargs"].get("row_condition")
        stack = [cond] if cond else []
        while stack:
            c = stack.pop()
            stack += c.get("conditions", [])
            if "column" in c:
                cols.add(c["column"]["name"])
        assert cols <= known, (exp["meta"]["rule"], cols - known)
    assert {"hit_means_cap_reached", "under_cap_is_not_hit", "columns_match", "fail_open_no_penalty"} <= {
        e["meta"]["rule"] for e in doc["expectations"]
    }


def test_the_training_leakage_rules_use_the_columns_the_gate_derives():
    doc = read_suite_document(GX_DIR / "training.json")
    rules = {e["meta"]["rule"]: e for e in doc["expectations"]}
    for rule in ("features_not_after_as_of", "labels_complete_by_as_of"):
        assert rules[rule]["meta"]["optional"] is True  # other runners without the derived columns skip them
    assert rules["labels_complete_by_as_of"]["kwargs"]["column_B"] == LABELS_COMPLETE_COLUMN
    config = ConversionModelConfig(label=LabelConfig(attribution_window="2d", click_window="3h"))
    impressions = pd.Series(pd.to_datetime(["2026-10-01T10:00:00Z", "2026-10-02T23:30:00Z"], utc=True))
    frame = pd.DataFrame({"impression_ts": impressions})
    out = with_leakage_columns(frame, T, timedelta(seconds=config.label.horizon_seconds))
    assert list(frame.columns) == ["impression_ts"]  # the input is left alone
    assert (out[AS_OF_COLUMN] == pd.Timestamp(T)).all()
    assert list(out[LABELS_COMPLETE_COLUMN]) == [
        pd.Timestamp("2026-10-03T10:00:00Z"),  # + 2 days: the longer of the attribution and click windows
        pd.Timestamp("2026-10-04T23:30:00Z"),
    ]


def test_row_count_history_gives_the_newest_earlier_run(tmp_path):
    path = tmp_path / "offline" / "row_counts.json"
    assert previous_row_counts(path, T) == {}
    record_row_counts(path, T - timedelta(days=2), {"user_ad": 100, "user": 10})
    record_row_counts(path, T - timedelta(days=1), {"user_ad": 120})
    record_row_counts(path, T, {"user_ad": 130})
    record_row_counts(path, T - timedelta(days=1), {"user_ad": 125})  # a rerun replaces its own entry
    assert previous_row_counts(path, T) == {
        "user_ad": (T - timedelta(days=1), 125),
        "user": (T - timedelta(days=2), 10),
    }
    assert previous_row_counts(path, T - timedelta(days=2)) == {}
    assert [e["rows"] for e in read_row_counts(path)["user_ad"]] == [100, 125, 130]
    path.write_text("{not json")
    with pytest.raises(FeatureValidationError, match=str(path)):
        previous_row_counts(path, T)


def test_the_failure_message_names_every_failed_rule_with_what_was_observed():
    outcomes = (
        RuleOutcome(
            "imp_24h_le_7d",
            "expect_column_pair_values_a_to_be_greater_than_b",
            ("imp_7d", "imp_24h"),
            False,
            table="user_ad",
            unexpected_count=2,
            element_count=50,
            sample=((3, 5), (1, 2)),
        ),
        RuleOutcome(
            "row_count_change_bounded",
            "expect_table_row_count_to_be_between",
            (),
            False,
            table="user",
            observed=7,
            expected={"min_value": 50, "max_value": 200},
        ),
        RuleOutcome("key_unique", "expect_compound_columns_to_be_unique", ("user_id", "ad_id"), True, table="user_ad"),
        RuleOutcome(
            "row_count_change_bounded",
            "expect_table_row_count_to_be_between",
            (),
            None,
            table="user_ad",
            skipped="no previous run recorded",
        ),
    )
    report = GateReport(
        "feature",
        "freqcap_features",
        "features.json",
        {"user_ad": 50, "user": 7},
        outcomes,
        context={"as_of": T.isoformat()},
        data_docs="/x/freqcap_runs.html",
    )
    message = report.failure_message()
    assert message.startswith("feature validation failed (suite 'freqcap_features', as_of=2026-10-05T00:00:00+00:00)")
    assert "2 of 3 expectations failed" in message
    assert (
        "user_ad.imp_24h_le_7d (expect_column_pair_values_a_to_be_greater_than_b on imp_7d, imp_24h): "
        "2 of 50 rows unexpected; e.g. [3, 5], [1, 2]" in message
    )
    assert "user.row_count_change_bounded (expect_table_row_count_to_be_between): observed 7; expected " in message
    assert "min_value=50, max_value=200" in message and message.endswith("Data Docs: /x/freqcap_runs.html")
    assert "key_unique" not in message
    assert report.to_dict()["skipped"] == ["user_ad.row_count_change_bounded"]
    passed = GateReport("feature", "s", "p", {}, outcomes[2:])
    assert passed.success and passed.failure_message() is None


def test_make_docs_entry_point_builds_an_empty_site_and_never_needs_a_display(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert docs.open_in_browser(tmp_path / "x.html") is False  # headless: nothing is launched
    assert docs.main(["--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    page = docs.runs_page_path(tmp_path)
    assert str(page) in out and "no display" in out
    assert page.is_file() and "no gate has run yet" in page.read_text()
    assert docs.index_path(tmp_path).is_file()
    assert Path(tmp_path / "gx" / "great_expectations.yml").is_file()
