"""Policy documents: validation names the offending field; rule resolution; stable round trip."""

from __future__ import annotations

import pytest

from freqcap.domain.policy import PolicyValidationError, dump_policy, load_policy, parse_policy

BASE = {
    "version": "v1",
    "created_at": "2026-10-15T00:00:00Z",
    "defaults": [{"level": "ad", "caps": [{"window": "24h", "max": 5}]}],
    "rules": [
        {
            "match": {"audience": "cold"},
            "level": "ad",
            "caps": [{"window": "24h", "max": 3}, {"window": "7d", "max": 10}],
        },
        {
            "match": {"audience": "cold", "signal_tier": "converter"},
            "level": "ad",
            "caps": [{"window": "24h", "max": 1}],
        },
        {"match": {"signal_tier": "engaged"}, "level": "campaign", "caps": [{"window": "28d", "max": 9}]},
    ],
}


def _with(path: list, value):
    import copy

    doc = copy.deepcopy(BASE)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def test_most_specific_rule_wins_and_defaults_fill_in():
    policy = parse_policy(BASE)
    assert [c.max for c in policy.rules_for("cold", "converter", "ad")[0].caps] == [1]
    assert [c.max for c in policy.rules_for("cold", "engaged", "ad")[0].caps] == [3, 10]
    assert [c.max for c in policy.rules_for("returning", "engaged", "ad")[0].caps] == [5]  # default
    assert policy.rules_for("returning", "engaged", "campaign")[0].caps[0].max == 9
    assert policy.rules_for("returning", "converter", "advertiser") == ()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["rules", 0, "caps", 0, "max"], 0, "rules.0.caps.0.max"),
        (["rules", 0, "caps", 1, "window"], "7 days", "rules.0.caps.1.window"),
        (["rules", 0, "level"], "creative", "rules.0.level"),
        (["rules", 1, "match", "signal_tier"], "vip", "rules.1.match.signal_tier"),
        (["penalty"], {"at_cap": 1.5}, "penalty.at_cap"),
        (["version"], "", "version"),
        (["rules", 0, "min_gap"], "soon", "rules.0.min_gap"),
    ],
)
def test_invalid_documents_name_the_field(path, value, field):
    with pytest.raises(PolicyValidationError) as err:
        parse_policy(_with(path, value))
    assert any(p == field for p, _ in err.value.errors), err.value.errors
    assert field in str(err.value)


def test_structural_errors():
    with pytest.raises(PolicyValidationError, match=r"defaults\.0"):
        parse_policy(_with(["defaults", 0, "match"], {"audience": "cold"}))
    with pytest.raises(PolicyValidationError, match="more than one rule"):
        parse_policy(_with(["rules", 2], BASE["rules"][0]))
    with pytest.raises(PolicyValidationError, match="one cap per window"):
        parse_policy(_with(["rules", 0, "caps"], [{"window": "24h", "max": 3}, {"window": "1d", "max": 4}]))
    with pytest.raises(PolicyValidationError, match="not valid YAML"):
        parse_policy("rules: [unclosed")
    with pytest.raises(PolicyValidationError, match="mapping"):
        parse_policy("- just a list")
    with pytest.raises(PolicyValidationError, match="unknown_key"):
        parse_policy({**BASE, "unknown_key": 1})


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_is_stable(tmp_path, suffix):
    policy = parse_policy(BASE)
    first = dump_policy(policy, tmp_path / f"p{suffix}")
    again = load_policy(first)
    assert again == policy
    second = dump_policy(again, tmp_path / f"q{suffix}")
    assert first.read_text() == second.read_text()


# ------------------------------------------------------------------------------------------ multiplier tables


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ([1.0, 0.6, 0.7], "non-increasing"),  # rises again at count 2
        ([1.2, 0.5], "outside"),
        ([1.0, -0.1], "outside"),
        ([1.0, float("nan")], "outside"),
        ([], "at least one value"),
    ],
)
def test_a_bad_multiplier_table_names_the_field(table, message):
    with pytest.raises(PolicyValidationError, match=message) as err:
        parse_policy(_with(["rules", 0, "caps", 1, "multipliers"], table))
    assert any(p == "rules.0.caps.1.multipliers" for p, _ in err.value.errors), err.value.errors


def test_a_table_needs_a_soft_rule_and_values_at_or_above_the_floor():
    doc = _with(["rules", 1, "caps", 0, "multipliers"], [1.0, 0.5])
    doc["rules"][1]["mode"] = "hard"
    with pytest.raises(PolicyValidationError, match=r"rules\.1: .*caps\.0\.multipliers: a multiplier table needs"):
        parse_policy(doc)
    low = _with(["defaults", 0, "caps", 0, "multipliers"], [1.0, 0.04])
    with pytest.raises(PolicyValidationError, match=r"defaults\.0\.caps\.0\.multipliers: 0\.04 is below penalty"):
        parse_policy(low)
    low["penalty"] = {"floor": 0.0}
    assert parse_policy(low).defaults[0].caps[0].multipliers == (1.0, 0.04)


def test_a_table_is_read_by_count_and_holds_its_last_value():
    cap = parse_policy(_with(["rules", 0, "caps", 0, "multipliers"], [1.0, 0.7, 0.3])).rules[0].caps[0]
    assert [cap.multiplier_at(c) for c in range(6)] == [1.0, 0.7, 0.3, 0.3, 0.3, 0.3]


def test_documents_without_tables_have_no_multipliers_key_and_tables_round_trip(tmp_path):
    from freqcap.domain.policy.schema import policy_document

    doc = policy_document(parse_policy(BASE))
    assert all("multipliers" not in cap for rule in (*doc["rules"], *doc["defaults"]) for cap in rule["caps"])
    policy = parse_policy(_with(["rules", 0, "caps", 1, "multipliers"], [1.0, 0.5, 0.25]))
    assert policy_document(policy)["rules"][0]["caps"][1]["multipliers"] == [1.0, 0.5, 0.25]
    for suffix in (".yaml", ".json"):
        assert load_policy(dump_policy(policy, tmp_path / f"t{suffix}")) == policy
