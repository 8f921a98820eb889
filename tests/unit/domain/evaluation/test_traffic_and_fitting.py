"""The traffic's layout, candidates and scores; the events handed to the curve fit."""

from __future__ import annotations

import numpy as np

from freqcap.config import load_settings
from freqcap.domain.evaluation.fitting import fit_policy, replay_events
from freqcap.domain.evaluation.policies import no_cap
from freqcap.domain.evaluation.replay import replay
from freqcap.domain.evaluation.traffic import entity_of, hash_normal
from freqcap.domain.events import LEVELS


def test_every_opportunity_is_in_one_step_in_time_order(tiny_traffic):
    tr = tiny_traffic
    w = tr.world
    assert np.array_equal(np.sort(tr.orig), np.arange(w.n_impressions))
    assert tr.offset[-1] == w.n_impressions and (np.diff(tr.live) <= 0).all()
    for r in range(tr.n_steps):
        block = tr.orig[tr.offset[r] : tr.offset[r + 1]]
        # step r holds the r-th opportunity of users at positions 0 … live[r] − 1
        assert np.array_equal(w.imp_user[block], tr.user[: tr.live[r]])
        assert (tr.rank[tr.offset[r] : tr.offset[r + 1]] == r).all()
    assert np.array_equal(tr.n_opps, np.bincount(w.imp_user, minlength=len(w.audience))[tr.user])


def test_candidates_come_from_the_users_own_opportunities(tiny_traffic):
    tr = tiny_traffic
    w = tr.world
    assert np.array_equal(tr.cand_ad[:, 0], w.imp_ad[tr.orig])  # the slot's own ad first
    user_of = w.imp_user[tr.orig]
    for i in range(0, tr.n_opportunities, 7):
        own = set(w.imp_ad[w.imp_user == user_of[i]].tolist())
        assert set(tr.cand_ad[i].tolist()) <= own


def test_pair_ids_identify_user_and_entity(tiny_traffic):
    tr = tiny_traffic
    w = tr.world
    user = np.repeat(w.imp_user[tr.orig][:, None], tr.k, axis=1)
    for j, lv in enumerate(LEVELS):
        ent = entity_of(w, lv, tr.cand_ad)
        ids = tr.pair[:, :, j].ravel()
        key = user.ravel().astype(np.int64) * 100_000 + ent.ravel()
        # one id per (user, entity) and one (user, entity) per id
        assert len(np.unique(ids)) == len(np.unique(key)) == len(np.unique(np.c_[ids, key], axis=0))
        assert ids.min() >= tr.pair_offset[j] and ids.max() < tr.pair_offset[j] + tr.n_pairs[lv]


def test_relevance_is_persistent_and_standard_normal():
    a = np.arange(20_000) % 97
    b = np.arange(20_000) // 97
    z = hash_normal(5, a, b)
    assert np.array_equal(z, hash_normal(5, a, b))
    assert not np.array_equal(z, hash_normal(6, a, b))
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03


def test_lo_rank_is_the_first_opportunity_inside_the_window(tiny_traffic):
    tr = tiny_traffic
    w = tr.world
    window = 6 * 3600 * 10**6
    lo = tr.lo_rank(window)
    for i in range(0, tr.n_opportunities, 5):
        o = tr.orig[i]
        u = w.imp_user[o]
        ts = w.imp_ts[w.imp_user == u]
        assert lo[i] == int(np.argmax(ts > w.imp_ts[o] - window))


def test_replay_events_attribute_last_touch_and_truncate(tiny_traffic):
    tr = tiny_traffic
    w = tr.world
    log = replay(tr, no_cap(), record=True).log
    ev = replay_events(w, log)
    shown = log.shown_ad >= 0
    assert ev.n_impressions == shown.sum()
    conv = np.flatnonzero(log.converted & (log.conv_ts < w.end_us))
    assert len(ev.conv_ts) == len(conv) and (ev.conv_ts < w.end_us).all()
    assert len(ev.click_ts) == int((log.clicked & (log.click_ts < w.end_us)).sum())
    adv_of_shown = entity_of(w, "advertiser", np.maximum(log.shown_ad, 0))
    for c in range(len(ev.conv_ts)):  # brute force: the user's last impression of that advertiser ≤ conv time
        u, t = ev.conv_user[c], ev.conv_ts[c]
        src = conv[np.flatnonzero((w.imp_user[conv] == u) & (log.conv_ts[conv] == t))[0]]
        adv = adv_of_shown[src]
        cand = np.flatnonzero(shown & (w.imp_user == u) & (adv_of_shown == adv) & (w.imp_ts <= t))
        last = cand[-1]
        assert ev.conv_entity["ad"][c] == log.shown_ad[last]
        assert ev.conv_entity["advertiser"][c] == adv


def test_fit_policy_builds_a_valid_personalized_policy(small_traffic):
    tr = small_traffic
    log = replay(tr, no_cap(), record=True).log
    fitted = fit_policy(tr.world, log, load_settings(environ={}).features, floor=0.5)
    assert fitted.policy.version.startswith("curves-")
    assert fitted.events == int((log.shown_ad >= 0).sum())
    assert {r.mode for r in fitted.policy.rules} <= {"soft"}
    audiences = {r.match.audience for r in fitted.policy.rules}
    assert audiences <= set(tr.world.params.audience_names()) and audiences


def test_fit_policy_with_the_curve_shape_writes_each_cohorts_curve_and_the_replay_uses_it(small_traffic):
    from freqcap.domain.curves.shape import curve_multipliers
    from freqcap.domain.evaluation.policies import ReplayPolicy

    tr = small_traffic
    log = replay(tr, no_cap(), record=True).log
    features = load_settings(environ={}).features
    generic = fit_policy(tr.world, log, features, floor=0.5, penalty_shape="generic").policy
    fitted = fit_policy(tr.world, log, features, floor=0.5, penalty_shape="curve")
    curve = fitted.policy
    assert curve.source["penalty_shape"] == "curve" and curve.version != generic.version
    assert [c.max for r in curve.rules for c in r.caps] == [c.max for r in generic.rules for c in r.caps]
    pub = fitted.fit.published
    for rule in curve.rules:
        label = f"{rule.match.audience}/{'all' if rule.match.signal_tier == '*' else rule.match.signal_tier}"
        rates = pub[(pub["cohort"] == label) & (pub["level"] == rule.level)].sort_values("n")["rate_smooth"]
        assert rule.caps[0].multipliers == curve_multipliers(rates.to_numpy(), curve.penalty.floor)
    # the replay ranks by the tables: another set of winners than under the generic shape
    a = replay(tr, ReplayPolicy("g", generic), record=True).log
    b = replay(tr, ReplayPolicy("c", curve), record=True).log
    assert (a.shown_ad != b.shown_ad).any()
