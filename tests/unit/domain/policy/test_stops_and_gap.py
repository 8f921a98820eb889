"""Review findings on the engine: stop after click (and conversion) with a cool-down, per level, and the soft
minimum gap without a cliff at its boundary. Expected values are worked out by hand from the documented rules."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from freqcap.domain.policy import PolicyValidationError, parse_policy
from freqcap.domain.policy.engine import Candidate, EntityState, decide, decide_reference

NOW = datetime(2026, 10, 15, 12, tzinfo=UTC)
H, D = 3600, 86400
PEN = {"onset": 1.0, "at_cap": 0.5, "floor": 0.05}
AD = Candidate("a1", "c1", "v1")


def _policy(**rule):
    base = {"level": "ad", "caps": [{"window": "7d", "max": 50}]}
    return parse_policy(
        {"version": "t", "created_at": "2026-10-15T00:00:00Z", "penalty": PEN, "defaults": [{**base, **rule}]}
    )


def _state(clicks_1d=0, clicks_7d=0, convs_1d=0, convs_7d=0, last=None):
    return EntityState(
        counts={D: 0, 7 * D: 0},
        last_imp_ts=last,
        conversions=convs_7d,
        clicks=clicks_7d,
        click_counts={D: clicks_1d, 7 * D: clicks_7d},
        conversion_counts={D: convs_1d, 7 * D: convs_7d},
    )


def _both(policy, state, now=NOW, level="ad"):
    entity = {"ad": "a1", "campaign": "c1", "advertiser": "v1"}[level]
    states = {(level, entity): state}
    (fast,) = decide(policy, "any", "engaged", [AD], states, now)
    (ref,) = decide_reference(policy, "any", "engaged", [AD], states, now)
    assert fast == ref
    return fast


def test_stop_after_click_hard_makes_the_ad_ineligible_after_a_click():
    p = _policy(stop_after_click=True, mode="hard")
    assert _both(p, _state()).eligible
    d = _both(p, _state(clicks_7d=1))
    assert (d.eligible, d.penalty, d.binding.kind) == (False, 0.0, "stop_after_click")


def test_stop_after_click_soft_drops_to_the_floor():
    d = _both(_policy(stop_after_click=True), _state(clicks_7d=2))
    assert (d.eligible, d.penalty, d.binding.kind, d.binding.count) == (True, 0.05, "stop_after_click", 2)


def test_cooldown_counts_only_clicks_and_conversions_inside_it():
    p = _policy(stop_after_click=True, stop_after_conversion=True, stop_cooldown="24h", mode="hard")
    # a click 3 days ago: outside the 24h cool-down, the ad is back
    assert _both(p, _state(clicks_7d=1, convs_7d=1)).eligible
    assert not _both(p, _state(clicks_1d=1, clicks_7d=1)).eligible
    d = _both(p, _state(convs_1d=1, convs_7d=1))
    assert (d.eligible, d.binding.kind, d.binding.window) == (False, "stop_after_conversion", "24h")


def test_stop_after_click_is_per_level():
    p = parse_policy(
        {
            "version": "t",
            "created_at": "2026-10-15T00:00:00Z",
            "defaults": [
                {"level": "campaign", "caps": [{"window": "7d", "max": 50}], "stop_after_click": True, "mode": "hard"},
                {"level": "ad", "caps": [{"window": "7d", "max": 50}]},
            ],
        }
    )
    # a click on the ad only (the campaign's state has none): the campaign-level stop does not fire
    assert _both(p, _state(clicks_7d=1), level="ad").eligible
    assert not _both(p, _state(clicks_7d=1), level="campaign").eligible


def test_a_cooldown_without_a_stop_is_refused_naming_the_field():
    with pytest.raises(PolicyValidationError, match=r"defaults\.0\.stop_cooldown|defaults\.0: .*stop_cooldown"):
        _policy(stop_cooldown="24h")
    with pytest.raises(PolicyValidationError, match="stop_cooldown"):
        _policy(stop_after_click=True, stop_cooldown="-1h")


def test_soft_min_gap_has_no_cliff_at_the_gap_boundary():
    p = _policy(min_gap="30m")
    gap = 1800.0

    def at(elapsed: float) -> float:
        return _both(p, EntityState({D: 0, 7 * D: 0}, NOW - timedelta(seconds=elapsed))).penalty

    eps = 1e-3
    # continuous at the boundary: just inside and just outside the gap differ by (almost) nothing
    assert at(gap - eps) == pytest.approx(at(gap + eps), abs=1e-4)
    # monotone from the floor right after an impression up to 1 at the gap
    values = [at(x) for x in range(0, 1801, 60)]
    assert values == sorted(values)
    assert values[0] == pytest.approx(PEN["floor"])
    assert values[-1] == pytest.approx(1.0)
    # bounded change: a minute moves the multiplier by at most (1 - floor) * 60 / gap
    step = max(b - a for a, b in itertools.pairwise(values))
    assert step <= (1 - PEN["floor"]) * 60 / gap + 1e-6  # decisions round to 6 places


def test_a_calendar_cap_reads_the_count_of_its_period_in_the_policy_zone():
    p = parse_policy(
        {
            "version": "t",
            "created_at": "2026-10-15T00:00:00Z",
            "penalty": PEN,
            "time_zone": "Europe/Berlin",
            "defaults": [
                {"level": "ad", "mode": "hard", "caps": [{"window": "day", "max": 2}, {"window": "7d", "max": 9}]}
            ],
        }
    )
    base = {7 * D: 3}
    assert _both(p, EntityState({**base, ("day", "Europe/Berlin"): 1})).eligible
    d = _both(p, EntityState({**base, ("day", "Europe/Berlin"): 2}))
    assert (d.eligible, d.binding.window, d.binding.cap, d.binding.count) == (False, "day", 2, 2)
    # counts in another zone are not this policy's day: no count, the decision fails (serving fails open)
    with pytest.raises(KeyError):
        _both(p, EntityState({**base, ("day", "UTC"): 5}))


def test_a_calendar_cap_in_a_zone_the_features_do_not_count_is_caught_before_publication():
    from freqcap.config import load_settings
    from freqcap.domain.policy.guardrails import check_windows, feature_windows

    features = load_settings(environ={}).features  # calendar_time_zone UTC
    doc = {
        "version": "t",
        "created_at": "2026-10-15T00:00:00Z",
        "defaults": [{"level": "ad", "caps": [{"window": "week", "max": 5}]}],
    }
    assert check_windows(parse_policy(doc), feature_windows(features)).passed
    check = check_windows(parse_policy({**doc, "time_zone": "Asia/Tokyo"}), feature_windows(features))
    assert not check.passed
    assert "defaults.0.caps.0.window: 'week' in Asia/Tokyo" in check.detail


def test_an_unknown_window_or_zone_is_refused_naming_the_field():
    with pytest.raises(PolicyValidationError, match=r"time_zone: .*Mars/Olympus"):
        parse_policy({"version": "t", "created_at": "2026-10-15T00:00:00Z", "time_zone": "Mars/Olympus"})
    with pytest.raises(PolicyValidationError, match=r"defaults\.0\.caps\.0\.window"):
        _policy(caps=[{"window": "fortnight", "max": 2}])


def test_a_cooldown_that_is_not_a_feature_window_fails_windows_known():
    from freqcap.domain.policy.guardrails import check_windows

    known = {"ad": {D, 7 * D}}
    assert check_windows(_policy(stop_after_click=True, stop_cooldown="24h"), known).passed
    check = check_windows(_policy(stop_after_click=True, stop_cooldown="3d"), known)
    assert not check.passed and "defaults.0.stop_cooldown: '3d'" in check.detail
