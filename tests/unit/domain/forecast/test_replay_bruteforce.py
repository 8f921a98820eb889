"""The forecast's counterfactual replay against a plain per-impression loop over the policy document."""

from __future__ import annotations

import numpy as np
import pytest

from freqcap.domain.curves.sequences import TIER_NAMES, EventArrays
from freqcap.domain.events import LEVELS
from freqcap.domain.forecast.replay import policy_tiers, replay_policy
from freqcap.domain.policy import parse_policy

HOUR = 3_600_000_000
DAY = 24 * HOUR
AUDIENCES = ("high_intent", "returning", "cold")


def _events(seed: int) -> EventArrays:
    rng = np.random.default_rng(seed)
    users, m = 25, 700
    ad_campaign = rng.integers(0, 6, 14)  # 14 ads in 6 campaigns in 3 advertisers
    campaign_adv = np.array([0, 0, 1, 1, 2, 2])
    user = np.sort(rng.integers(0, users, m)).astype(np.int32)
    ts = np.zeros(m, dtype=np.int64)
    for u in range(users):
        sel = user == u
        ts[sel] = np.sort(rng.integers(0, 6 * DAY, sel.sum()))
    ad = rng.integers(0, 3, m) + (user % 5) * 2  # a few ads per user, so counts build up
    conv_user = np.array([3, 7, 7, 12], dtype=np.int32)
    conv_ts = np.array([2 * DAY, 1 * DAY, 4 * DAY, 3 * DAY], dtype=np.int64)
    ent = {"ad": ad.astype(np.int32), "campaign": ad_campaign[ad].astype(np.int32)}
    ent["advertiser"] = campaign_adv[ent["campaign"]].astype(np.int32)
    return EventArrays(
        imp_user=user,
        imp_ts=ts,
        imp_entity=ent,
        imp_format=np.zeros(m, dtype=np.int16),
        click_user=np.zeros(0, dtype=np.int32),
        click_ts=np.zeros(0, dtype=np.int64),
        conv_user=conv_user,
        conv_ts=conv_ts,
        conv_entity={lv: np.zeros(4, dtype=np.int32) for lv in LEVELS},
        conv_value=np.full(4, np.nan),
        user_audience=(np.arange(users) % 3).astype(np.int16),
        audiences=AUDIENCES,
        formats=("feed",),
        n_entities={"advertiser": 3, "campaign": 6, "ad": 14},
        data_end_us=int(6 * DAY),
    )


POLICY = parse_policy(
    {
        "version": "bf-1",
        "created_at": "2026-01-01T00:00:00Z",
        "defaults": [
            {"level": "ad", "caps": [{"window": "24h", "max": 2}, {"window": "28d", "max": 5}], "mode": "hard"},
            {"level": "campaign", "caps": [{"window": "28d", "max": 9}]},
        ],
        "rules": [
            {"match": {"audience": "cold"}, "level": "advertiser", "caps": [{"window": "2d", "max": 4}]},
            {"match": {"signal_tier": "converter"}, "level": "ad", "caps": [{"window": "28d", "max": 1}]},
        ],
    }
)


def _brute_force(ev: EventArrays, policy, start: int, tiers: np.ndarray):
    shown = np.ones(ev.n_impressions, dtype=bool)
    past = np.zeros((ev.n_impressions, 3), dtype=bool)
    for i in range(ev.n_impressions):  # impressions are in (user, time) order
        u, t = ev.imp_user[i], ev.imp_ts[i]
        aud, tier = AUDIENCES[ev.user_audience[u]], TIER_NAMES[tiers[i]]
        earlier = [k for k in range(i) if ev.imp_user[k] == u and shown[k]]
        for j, lv in enumerate(LEVELS):
            same = [k for k in earlier if ev.imp_entity[lv][k] == ev.imp_entity[lv][i]]
            for rule in policy.rules_for(aud, tier, lv):
                for cap in rule.caps:
                    w = cap.window_seconds * 1_000_000
                    if sum(1 for k in same if ev.imp_ts[k] > t - w) >= cap.max:
                        past[i, j] = True
        if t >= start:
            shown[i] = not past[i].any()
        else:
            past[i] = False
    return shown, past


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replay_policy_matches_brute_force(seed: int) -> None:
    ev = _events(seed)
    tiers = policy_tiers(ev, 28 * DAY)
    assert (tiers == 2).any()  # the converter rule is exercised
    start = 2 * DAY  # the first two days are history
    got = replay_policy(ev, POLICY, start, tiers, 28 * DAY)
    shown, past = _brute_force(ev, POLICY, start, tiers)
    assert past.any(axis=0).all() and not shown.all()
    np.testing.assert_array_equal(got.shown, shown)
    np.testing.assert_array_equal(got.past_cap, past)


def test_no_cap_shows_everything_and_ranks_are_window_counts() -> None:
    ev = _events(4)
    tiers = policy_tiers(ev, 28 * DAY)
    got = replay_policy(ev, None, 0, tiers, 28 * DAY)
    assert got.shown.all() and not got.past_cap.any()
    for i in range(0, ev.n_impressions, 37):
        u = ev.imp_user[i]
        for j, lv in enumerate(LEVELS):
            n = sum(1 for k in range(i + 1) if ev.imp_user[k] == u and ev.imp_entity[lv][k] == ev.imp_entity[lv][i])
            assert got.rank[i, j] == n
