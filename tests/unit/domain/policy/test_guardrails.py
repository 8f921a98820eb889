"""Guardrails on a proposed policy: each check fails on its own violation, and the projected cap-hit share equals a
row-by-row count."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.guardrails import GuardrailLimits, check_guardrails, count_column, projected_hit_rates
from freqcap.domain.policy.schema import policy_document

H, D7, D28 = 3600, 7 * 86400, 28 * 86400
WINDOWS = {"advertiser": {H, 86400, D7, D28}, "campaign": {H, 86400, D7, D28}, "ad": {H, 86400, D7, D28}}
LIMITS = GuardrailLimits(min_cap=1, max_cap=50, max_cap_ratio=2.0, max_hit_rate_change=0.10)


def policy(version="p", ad_cap=4, campaign_cap=8, sports_ad_cap=2, window="7d"):
    return parse_policy(
        {
            "version": version,
            "created_at": "2026-01-01T00:00:00Z",
            "defaults": [
                {"level": "ad", "caps": [{"window": window, "max": ad_cap}]},
                {"level": "campaign", "caps": [{"window": "28d", "max": campaign_cap}]},
            ],
            "rules": [
                {"match": {"audience": "sports"}, "level": "ad", "caps": [{"window": "7d", "max": sports_ad_cap}]},
            ],
        }
    )


def pairs(n=3000, seed=1) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        level = rng.choice(["advertiser", "campaign", "ad"])
        d28 = rng.randint(1, 15)
        d7 = rng.randint(0, d28)
        rows.append(
            {
                "level": level,
                "audience": rng.choice(["sports", "news", "unknown"]),
                "signal_tier": rng.choice(["impression_only", "engaged", "converter"]),
                count_column(H): rng.randint(0, d7),
                count_column(86400): d7,
                count_column(D7): d7,
                count_column(D28): d28,
            }
        )
    return pd.DataFrame(rows)


def _brute_force_rates(p, frame):
    hits, totals = {}, {}
    for row in frame.to_dict("records"):
        level = row["level"]
        totals[level] = totals.get(level, 0) + 1
        hit = any(
            row[count_column(cap.window_seconds)] >= cap.max
            for rule in p.rules_for(row["audience"], row["signal_tier"], level)
            for cap in rule.caps
        )
        hits[level] = hits.get(level, 0) + hit
    return {lvl: hits[lvl] / totals[lvl] for lvl in totals}


def test_projected_hit_rates_equal_a_row_by_row_count():
    frame = pairs()
    for p in (policy(), policy(ad_cap=2, campaign_cap=3, sports_ad_cap=9)):
        got = projected_hit_rates(p, frame)
        want = _brute_force_rates(p, frame)
        assert got.keys() == want.keys()
        for level in want:
            assert got[level] == pytest.approx(want[level])
    # no caps at the advertiser level: nobody is capped there
    assert projected_hit_rates(policy(), frame)["advertiser"] == 0.0


def test_a_sane_update_passes_every_guardrail():
    report = check_guardrails(
        policy("new", ad_cap=5), policy("old"), limits=LIMITS, windows_by_level=WINDOWS, pairs=pairs()
    )
    assert report.passed, report.summary()
    assert [c.name for c in report.checks] == [
        "windows_known",
        "caps_within_bounds",
        "change_vs_live",
        "projected_hit_change",
    ]


def test_first_publication_has_nothing_to_compare():
    report = check_guardrails(policy("new"), None, limits=LIMITS, windows_by_level=WINDOWS, pairs=pairs())
    assert report.passed
    assert "first publication" in report.checks[2].detail


@pytest.mark.parametrize(
    ("proposed", "failing"),
    [
        (policy("new", window="3d"), "windows_known"),  # no feature counts over 3 days
        (policy("new", campaign_cap=60, ad_cap=30), "caps_within_bounds"),  # > max_cap 50
        (policy("new", sports_ad_cap=5), "change_vs_live"),  # 2 -> 5 is more than x2
        (policy("new", ad_cap=2, campaign_cap=4), "projected_hit_change"),  # within x2 each, but many more hits
    ],
)
def test_each_violation_is_caught_and_named(proposed, failing):
    report = check_guardrails(proposed, policy("old"), limits=LIMITS, windows_by_level=WINDOWS, pairs=pairs())
    assert not report.passed
    assert failing in {c.name for c in report.failures}, report.summary()


def test_projected_change_reports_the_numbers():
    report = check_guardrails(
        policy("new", ad_cap=2, campaign_cap=4), policy("old"), limits=LIMITS, windows_by_level=WINDOWS, pairs=pairs()
    )
    projected = next(c for c in report.checks if c.name == "projected_hit_change")
    frame = pairs()
    before, after = (
        _brute_force_rates(policy("old"), frame),
        _brute_force_rates(policy("new", ad_cap=2, campaign_cap=4), frame),
    )
    for level in ("campaign", "ad"):
        assert projected.values["change"][level] == pytest.approx(after[level] - before[level], abs=1e-4)
    assert projected.values["pairs"] == len(frame)


def _drop(p, *, rule=None, cap=None, default_level=None, version="new"):
    """`p` with one rule (by index), one cap (rule index, cap index) or one default (by level) removed."""
    doc = policy_document(p)
    doc["version"] = version
    if rule is not None:
        del doc["rules"][rule]
    if cap is not None:
        del doc["rules"][cap[0]]["caps"][cap[1]]
    if default_level is not None:
        doc["defaults"] = [d for d in doc["defaults"] if d["level"] != default_level]
    return parse_policy(doc)


def _two_cap_policy(version="old"):
    doc = policy_document(policy(version))
    doc["rules"][0]["caps"].append({"window": "24h", "max": 1})
    doc["rules"][0]["min_gap"] = "30m"
    return parse_policy(doc)


def _brute_force_removal(live, cand, frame, level, cohort):
    """Among the level's pairs in the touched cohorts, the share at or over some cap under live and under the
    candidate (row by row)."""
    rows = [r for r in frame.to_dict("records") if r["level"] == level and cohort(r)]

    def hit(p, row):
        return any(
            row[count_column(c.window_seconds)] >= c.max
            for rule in p.rules_for(row["audience"], row["signal_tier"], level)
            for c in rule.caps
        )

    return len(rows), sum(hit(live, r) for r in rows) / len(rows), sum(hit(cand, r) for r in rows) / len(rows)


@pytest.mark.parametrize(
    ("make", "named", "level", "cohort"),
    [
        (lambda live: _drop(live, rule=0), "rules.0 (sports/*/ad)", "ad", lambda r: r["audience"] == "sports"),
        (lambda live: _drop(live, cap=(0, 1)), "sports/*/ad/86400s", "ad", lambda r: r["audience"] == "sports"),
        (lambda live: _drop(live, default_level="campaign"), "defaults (*/*/campaign)", "campaign", lambda r: True),
    ],
)
def test_a_candidate_that_drops_a_cap_or_a_rule_is_flagged_with_its_projected_effect(make, named, level, cohort):
    """Review finding: change_vs_live compared only caps present in both policies, so dropping one passed."""
    live = _two_cap_policy()
    candidate = make(live)
    frame = pairs()
    report = check_guardrails(candidate, live, limits=LIMITS, windows_by_level=WINDOWS, pairs=frame)
    change = next(c for c in report.checks if c.name == "change_vs_live")
    assert not change.passed, change.detail
    assert any(named in r for r in change.values["removed"]), change.values["removed"]
    n, before, after = _brute_force_removal(live, candidate, frame, level, cohort)
    effect = change.values["removal_effect"][level]
    assert effect["pairs"] == n
    assert effect["live"] == pytest.approx(before, abs=1e-4)
    assert effect["proposed"] == pytest.approx(after, abs=1e-4)
    assert after < before  # dropping a cap releases pairs the live policy held


def test_dropping_a_min_gap_is_flagged():
    live = _two_cap_policy()
    doc = policy_document(live)
    doc["version"] = "new"
    doc["rules"][0]["min_gap"] = None
    change = check_guardrails(parse_policy(doc), live, limits=LIMITS, windows_by_level=WINDOWS).checks[2]
    assert not change.passed
    assert any("min_gap" in r for r in change.values["removed"])


def test_removals_may_be_allowed_and_are_still_reported():
    live = _two_cap_policy()
    limits = GuardrailLimits(**{**LIMITS.__dict__, "allow_removals": True})
    change = check_guardrails(_drop(live, rule=0), live, limits=limits, windows_by_level=WINDOWS).checks[2]
    assert change.passed
    assert change.values["removed"]


def _generic(cap: int, count: int, onset=1.0, at_cap=0.5, floor=0.05) -> float:
    """The generic soft shape written out from its definition (engine docstring), not the engine's function."""
    d = cap - count
    if d >= 1 + onset:
        return 1.0
    if d >= 0:
        return at_cap + (1 - at_cap) * d / (1 + onset)
    return floor + (at_cap - floor) * 2.0**d


def _with_table(table):
    doc = policy_document(policy(version="q"))
    doc["rules"][0]["caps"][0]["multipliers"] = list(table)
    return parse_policy(doc)


def test_a_changed_penalty_shape_is_reported_with_its_largest_change():
    table = (1.0, 0.9, 0.6, 0.3, 0.1, 0.05)
    result = check_guardrails(_with_table(table), policy(), limits=LIMITS, windows_by_level=WINDOWS)
    change = next(c for c in result.checks if c.name == "change_vs_live")
    assert change.passed, "a reshape is reported, not judged"
    # brute force: the sports ad cap (max 2) under the generic shape vs the table, over counts 0..40
    deltas = [abs((table[c] if c < len(table) else table[-1]) - _generic(2, c)) for c in range(41)]
    (only,) = change.values["reshaped"]
    assert only["cap"] == f"sports/*/ad/{D7}s"
    assert only["largest_change"] == pytest.approx(max(deltas), abs=1e-4)
    assert only["at_count"] == deltas.index(max(deltas))
    assert (only["live"], only["proposed"]) == ("generic", "table")
    assert "change shape" in change.detail
    # back to the generic shape: the same cap, the same size of change
    back = check_guardrails(policy(), _with_table(table), limits=LIMITS, windows_by_level=WINDOWS)
    (again,) = next(c for c in back.checks if c.name == "change_vs_live").values["reshaped"]
    assert again["largest_change"] == only["largest_change"]


def test_a_refit_that_nudges_a_table_is_not_a_reshape():
    live = _with_table((1.0, 0.9, 0.6, 0.3, 0.1, 0.05))
    nudged = _with_table((1.0, 0.89, 0.59, 0.31, 0.1, 0.05))
    change = next(
        c
        for c in check_guardrails(nudged, live, limits=LIMITS, windows_by_level=WINDOWS).checks
        if c.name == "change_vs_live"
    )
    assert change.values["reshaped"] == []
    same = next(
        c
        for c in check_guardrails(policy(), policy(), limits=LIMITS, windows_by_level=WINDOWS).checks
        if c.name == "change_vs_live"
    )
    assert same.values["reshaped"] == []
