"""The vectorized replay against the loop-by-loop replay (the policy engine's `decide` per opportunity)."""

from __future__ import annotations

import numpy as np
import pytest

from freqcap.domain.evaluation.policies import (
    ReplayPolicy,
    global_cap_policy,
    no_cap,
    oracle_penalty,
    oracle_policy,
)
from freqcap.domain.evaluation.replay import replay
from freqcap.domain.policy import parse_policy
from freqcap.domain.simulate.model import DAY_US, HOUR_US

from .bruteforce import brute_replay


def tiered_policy(mode: str = "soft") -> object:
    """Caps that differ by audience, signal tier and level, with short windows (1h, 24h) that expire."""
    rules = [
        {"match": {"audience": "high_intent", "signal_tier": "converter"}, "level": "ad",
         "caps": [{"window": "1h", "max": 1}, {"window": "24h", "max": 3}], "mode": mode},
        {"match": {"audience": "high_intent", "signal_tier": "impression_only"}, "level": "ad",
         "caps": [{"window": "24h", "max": 2}], "mode": mode},
        {"match": {"audience": "returning", "signal_tier": "*"}, "level": "campaign",
         "caps": [{"window": "24h", "max": 2}], "mode": mode},
        {"match": {"audience": "cold", "signal_tier": "engaged"}, "level": "advertiser",
         "caps": [{"window": "28d", "max": 4}], "mode": "hard"},
    ]  # fmt: skip
    return parse_policy(
        {
            "version": f"test-{mode}",
            "created_at": "2026-01-01T00:00:00+00:00",
            "defaults": [{"level": "campaign", "caps": [{"window": "28d", "max": 5}], "mode": mode}],
            "rules": rules,
        }
    )


def curve_policy() -> object:
    """`tiered_policy("soft")` with curve-shaped tables on two caps (what `penalty_shape: curve` writes)."""
    doc = tiered_policy("soft").model_dump(mode="json")
    doc["rules"][0]["caps"][1]["multipliers"] = [1.0, 0.7, 0.4, 0.2, 0.1]
    doc["defaults"][0]["caps"][0]["multipliers"] = [1.0, 0.95, 0.8, 0.5, 0.3, 0.3, 0.15]
    doc["version"] = "test-curve"
    return parse_policy(doc)


def _policies(traffic):
    params = traffic.world.params
    return {
        "no cap": no_cap(),
        "global hard 24h": ReplayPolicy("g", global_cap_policy(2, window="24h")),
        "global soft 1h": ReplayPolicy("g", global_cap_policy(1, window="1h", mode="soft")),
        "global ad hard 28d": ReplayPolicy("g", global_cap_policy(3, level="ad", window="28d")),
        "global advertiser soft 7d": ReplayPolicy(
            "g", global_cap_policy(4, level="advertiser", window="7d", mode="soft")
        ),
        "tiered soft": ReplayPolicy("t", tiered_policy("soft")),
        "tiered hard": ReplayPolicy("t", tiered_policy("hard")),
        "tiered soft + reserve": ReplayPolicy("t", tiered_policy("soft"), reserve=0.02),
        "tiered curve": ReplayPolicy("c", curve_policy()),
        "oracle caps": ReplayPolicy("o", oracle_policy(params, 0.5), counts="effective"),
        "oracle caps soft": ReplayPolicy("o", oracle_policy(params, 0.5, "soft"), counts="effective"),
        "oracle penalty": oracle_penalty(),
    }


NAMES = [
    "no cap", "global hard 24h", "global soft 1h", "global ad hard 28d", "global advertiser soft 7d", "tiered soft", "tiered hard", "tiered soft + reserve",
    "tiered curve",
    "oracle caps", "oracle caps soft", "oracle penalty",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_replay_equals_the_loop_by_loop_replay(tiny_traffic, name):
    policy = _policies(tiny_traffic)[name]
    fast = replay(tiny_traffic, policy, record=True).log
    slow = brute_replay(tiny_traffic, policy)
    assert fast is not None
    shown_fast = np.where(fast.shown_ad >= 0, 1, 0)
    assert np.array_equal(shown_fast, (slow["shown_cand"] >= 0).astype(int)), "which opportunities are filled"
    world_layout = np.empty(len(tiny_traffic.orig), dtype=np.int64)
    world_layout[tiny_traffic.orig] = np.arange(len(tiny_traffic.orig))
    cand_ad = tiny_traffic.cand_ad[world_layout]
    slow_ad = np.where(slow["shown_cand"] >= 0, cand_ad[np.arange(len(cand_ad)), np.maximum(slow["shown_cand"], 0)], -1)
    assert np.array_equal(fast.shown_ad, slow_ad), "which ad is shown"
    np.testing.assert_allclose(fast.p_conv, slow["p_conv"], rtol=1e-10, atol=0)
    assert np.array_equal(fast.converted, slow["converted"])
    assert np.array_equal(fast.clicked, slow["clicked"])
    assert np.array_equal(fast.past_optimal, slow["past"])


def test_the_tiny_world_exercises_tiers_windows_and_empty_slots(tiny_traffic):
    """Guards the brute-force comparison: the policies above really depend on tiers, windows and hard caps."""
    slow = brute_replay(tiny_traffic, ReplayPolicy("t", tiered_policy("soft")))
    assert np.bincount(slow["tier"], minlength=3).min() > 20  # every tier occurs
    hard = replay(tiny_traffic, ReplayPolicy("t", tiered_policy("hard")))
    assert 0 < hard.impressions < tiny_traffic.n_opportunities  # hard caps leave some slots empty
    day = replay(tiny_traffic, ReplayPolicy("g", global_cap_policy(2, window="24h")))
    month = replay(tiny_traffic, ReplayPolicy("g", global_cap_policy(2, window="28d")))
    assert day.impressions > month.impressions  # the 24h window expires within a 3-day world
    reserve = replay(tiny_traffic, _policies(tiny_traffic)["tiered soft + reserve"])
    assert 0 < reserve.impressions < tiny_traffic.n_opportunities  # the reserve binds
    # the curve-shaped tables change which ads win (so the comparison above exercises them)
    soft = replay(tiny_traffic, ReplayPolicy("t", tiered_policy("soft")), record=True).log
    curve = replay(tiny_traffic, ReplayPolicy("c", curve_policy()), record=True).log
    assert (soft.shown_ad != curve.shown_ad).sum() > 10


def test_short_signal_lookback_matches_the_definition(tiny_traffic):
    """Tiers expire after the lookback: with 12 h the tier logic is exercised in both directions."""
    policy = ReplayPolicy("t", tiered_policy("soft"))
    fast = replay(tiny_traffic, policy, record=True, signal_lookback_us=12 * HOUR_US).log
    slow = brute_replay(tiny_traffic, policy, lookback_us=12 * HOUR_US)
    assert np.array_equal(fast.shown_ad >= 0, slow["shown_cand"] >= 0)
    assert np.array_equal(fast.converted, slow["converted"])
    long = brute_replay(tiny_traffic, policy, lookback_us=28 * DAY_US)
    assert (slow["tier"] != long["tier"]).any()


def test_a_split_replay_gives_each_user_their_arms_outcome(tiny_traffic):
    """Users share no state: in a split, each user's results equal those of their arm's policy played for all."""
    a = ReplayPolicy("t", tiered_policy("soft"), reserve=0.01)
    b = ReplayPolicy("g", global_cap_policy(2, window="24h"))
    n = len(tiny_traffic.world.audience)
    arm = (np.arange(n) % 3 == 0).astype(np.int64)
    split = replay(tiny_traffic, [a, b], arm_of_user=arm)
    full_a, full_b = replay(tiny_traffic, a), replay(tiny_traffic, b)
    expected = np.where(arm == 0, full_a.user_conversions, full_b.user_conversions)
    assert np.array_equal(split.user_conversions, expected)
    expected_imps = np.where(arm == 0, full_a.user_impressions, full_b.user_impressions)
    assert np.array_equal(split.user_impressions, expected_imps)
    with pytest.raises(ValueError):
        replay(tiny_traffic, [a, b])


def test_counts_sum_to_the_totals(tiny_traffic):
    r = replay(tiny_traffic, ReplayPolicy("t", tiered_policy("hard")))
    assert r.user_impressions.sum() == r.impressions
    assert r.user_conversions.sum() == r.conversions
    assert r.user_opportunities.sum() == r.opportunities == tiny_traffic.n_opportunities
    assert np.isclose(r.user_expected.sum(), r.expected_conversions)


def test_pending_signal_events_become_observed_at_the_right_time():
    """The per-user bookkeeping of delayed click/conversion events (two pending slots) against a list of every
    event: at each query time the last observed event is the latest one strictly before it (exact while at
    most two events are pending at once, which the generator guarantees)."""
    from freqcap.domain.evaluation.replay import _INF, _NEG, _insert, _observe

    rng = np.random.default_rng(0)
    n = 60
    last = np.full((n, 1), _NEG)
    pmin = np.full((n, 1), _INF)
    pmax = np.full((n, 1), _INF)
    events: list[list[int]] = [[] for _ in range(n)]
    t = np.zeros(n, dtype=np.int64)
    checked_pairs = 0
    for _ in range(150):
        t = t + rng.integers(1, 50, n)
        _observe(last, pmin, pmax, n, t)
        for u in range(n):
            before = [e for e in events[u] if e < t[u]]
            assert last[u, 0] == (max(before) if before else _NEG)
        pending = np.array([sum(e >= t[u] for e in events[u]) for u in range(n)])
        add = np.flatnonzero((pending < 2) & (rng.random(n) < 0.4))
        when = t[add] + rng.integers(1, 120, len(add))  # delays longer than the gaps: events overlap
        _insert(pmin[:, 0], pmax[:, 0], add, when)
        for u, e in zip(add, when, strict=True):
            events[u].append(int(e))
        checked_pairs += int((pending == 1).sum())
    assert checked_pairs > 500  # two pending events at once happened often
