"""Which recent impressions a policy would have let through: a counterfactual replay of logged traffic (pure numpy).

The opportunities are the recorded impressions of the forecast period (each with its user, time and ad, in
time order); the impressions before the period (up to the longest cap window back) are history, counted as
recorded. Under a policy, an opportunity is **past the cap** at a level when, for some cap of the rule that
applies to the user's cohort there, the impressions of that (user, entity) the policy *let through* within the
cap's window (before it) already number `max` or more — the engine's distance `max − count` ≤ 0. An opportunity
past any level's cap is **not shown**, and a shown impression counts towards the later ones.

Soft rules are treated like hard ones at the cap: past it the penalty (at most `at_cap`, falling to `floor`)
makes the impression unlikely to win, and the forecast counts it as lost. The slot is not refilled with
another ad: the logs hold only the ad that won, not the ranker's other candidates — projected impressions are
what the capped ads keep, a lower bound on the fill. The user's cohort is audience × signal tier as of the
impression (what serving sees), from the recorded clicks and conversions.

Users never share state, so the r-th impressions of all users are one vectorized step (like the evaluation
replay's rank-major layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freqcap.domain.curves.sequences import TIER_NAMES, EventArrays, grouped_search
from freqcap.domain.evaluation.policies import INACTIVE, ReplayPolicy, compile_policy
from freqcap.domain.events import LEVELS
from freqcap.domain.policy import Policy


@dataclass(frozen=True)
class PolicyReplay:
    """Per impression (EventArrays order): shown under the policy (history: always), past the cap per level."""

    shown: np.ndarray  # bool
    past_cap: np.ndarray  # bool (impressions, levels in LEVELS order)
    rank: np.ndarray  # int (impressions, levels): 1 + shown impressions of the pair within the longest window


@dataclass(frozen=True)
class _PairIndex:
    """One level's (user, entity) pairs in pair-sorted order (time order kept within a pair)."""

    pos: np.ndarray  # pair-sorted position of each impression
    pair_start: np.ndarray  # per impression: pair-sorted position of its pair's first impression
    window_start: dict[int, np.ndarray]  # per window (µs): pair-sorted position of the first impression in the window


def _pair_index(ev: EventArrays, level: str, windows: list[int]) -> _PairIndex:
    key = ev.imp_user.astype(np.int64) * max(ev.n_entities[level], 1) + ev.imp_entity[level]
    order = np.argsort(key, kind="stable")
    k, t = key[order], ev.imp_ts[order]
    start = np.r_[True, k[1:] != k[:-1]] if len(k) else np.zeros(0, dtype=bool)
    g = np.cumsum(start) - 1
    first = np.flatnonzero(start)[g] if len(k) else np.zeros(0, dtype=np.int64)
    pos = np.empty(len(k), dtype=np.int64)
    pos[order] = np.arange(len(k))
    ws = {}
    for w in windows:
        s = grouped_search(g, t, g, t - w + 1, "left")  # first impression with ts > t − w, in the same pair
        ws[w] = np.empty(len(k), dtype=np.int64)
        ws[w][order] = s
    ps = np.empty(len(k), dtype=np.int64)
    ps[order] = first
    return _PairIndex(pos, ps, ws)


def policy_tiers(ev: EventArrays, lookback_us: int) -> np.ndarray:
    """Signal tier code of each impression's user as of the impression (what serving's features say)."""
    from freqcap.domain.curves.sequences import signal_tier_codes

    return signal_tier_codes(ev, ev.imp_user, ev.imp_ts, lookback_us)


def replay_policy(
    ev: EventArrays, policy: Policy | None, period_start_us: int, tiers: np.ndarray, longest_window_us: int
) -> PolicyReplay:
    """Shown / past-the-cap per impression of `ev` under `policy` (None: no cap) from `period_start_us` on."""
    m = ev.n_impressions
    in_period = ev.imp_ts >= period_start_us
    compiled = compile_policy(ReplayPolicy("forecast", policy), ev.audiences, TIER_NAMES)
    windows = sorted({c.window_us for c in compiled.constraints} | {longest_window_us})
    index = {lv: _pair_index(ev, lv, windows) for lv in LEVELS}
    cohort = ev.user_audience[ev.imp_user].astype(np.int64) * len(TIER_NAMES) + tiers.astype(np.int64)
    shown = np.ones(m, dtype=bool)
    past = np.zeros((m, len(LEVELS)), dtype=bool)
    rank = np.zeros((m, len(LEVELS)), dtype=np.int64)
    # cumulative shown count within the pair, at each pair-sorted position (filled as the steps advance)
    cum = {lv: np.zeros(m, dtype=np.int64) for lv in LEVELS}

    # rank-major steps: the r-th impression of every user (impressions are sorted by (user, time))
    starts = np.searchsorted(ev.imp_user, np.arange(ev.n_users), side="left")
    r_of = np.arange(m) - starts[ev.imp_user]
    order = np.lexsort((ev.imp_user, r_of))
    bounds = np.r_[0, np.cumsum(np.bincount(r_of, minlength=int(r_of.max()) + 1 if m else 0))]
    for r in range(len(bounds) - 1):
        idx = order[bounds[r] : bounds[r + 1]]
        counts = {}
        for lv in LEVELS:
            pi = index[lv]
            pos = pi.pos[idx]
            before = np.where(pos > pi.pair_start[idx], cum[lv][np.maximum(pos - 1, 0)], 0)
            counts[lv] = {}
            for w in windows:
                s = pi.window_start[w][idx]
                out = np.where(s > pi.pair_start[idx], cum[lv][np.maximum(s - 1, 0)], 0)
                counts[lv][w] = before - out  # shown impressions of the pair in (t − w, t)
            rank[idx, LEVELS.index(lv)] = counts[lv][longest_window_us] + 1
        for j, lv in enumerate(LEVELS):
            hit = np.zeros(len(idx), dtype=bool)
            for c in compiled.constraints:
                mx = c.max_by_cohort[cohort[idx], j]
                hit |= (mx < INACTIVE) & (counts[lv][c.window_us] >= mx)
            past[idx, j] = hit
        ok = ~past[idx].any(axis=1) | ~in_period[idx]
        shown[idx] = ok
        for lv in LEVELS:
            pi = index[lv]
            pos = pi.pos[idx]
            before = np.where(pos > pi.pair_start[idx], cum[lv][np.maximum(pos - 1, 0)], 0)
            cum[lv][pos] = before + ok
    past[~in_period] = False
    return PolicyReplay(shown, past, rank)
