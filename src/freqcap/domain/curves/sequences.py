"""Exposure sequences, signal tiers and conversion credit, vectorized in numpy (pure: no I/O).

Input is an `EventArrays`: integer-coded impressions sorted by (user, time) and the users' clicks and
conversions. For each level of the hierarchy, `level_sequences` gives every impression

- `n`: its rank among the impressions of the same (user, entity) pair within the window (t − W, t] (28 d,
  the features' longest window), itself included: the count serving sees just before it, plus one;
- `entry`: the first impression of that window (the (n − 1)-th previous impression of the pair);
- `tier`: the user's signal tier as of the entry impression (see `signal_tier_codes`).

`conversion_credit` turns conversion events into per-impression outcomes (see its docstring): either
last-touch credit, or an EM deconvolution of the conversion delay that spreads each conversion over the
impressions that could have caused it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from freqcap.domain.curves.smooth import monotone_tail

log = logging.getLogger(__name__)

TIER_NAMES: tuple[str, ...] = ("impression_only", "engaged", "converter")  # code = index
LEVEL_NAMES: tuple[str, ...] = ("advertiser", "campaign", "ad")


@dataclass(frozen=True)
class EventArrays:
    """Integer-coded events. Impressions sorted by (user, ts); clicks and conversions by (user, ts)."""

    imp_user: np.ndarray  # int32 user code
    imp_ts: np.ndarray  # int64 µs
    imp_entity: dict[str, np.ndarray]  # level -> int32 entity code
    imp_format: np.ndarray  # int16 format code
    click_user: np.ndarray
    click_ts: np.ndarray
    conv_user: np.ndarray
    conv_ts: np.ndarray
    conv_entity: dict[str, np.ndarray]  # level -> int32 entity code (the attributed ad, campaign, advertiser)
    conv_value: np.ndarray  # float64, NaN when missing
    user_audience: np.ndarray  # int16 audience code per user code
    audiences: tuple[str, ...]  # audience name per code
    formats: tuple[str, ...]
    n_entities: dict[str, int]
    data_end_us: int  # end of the observed data (latest event time, or as given)

    @property
    def n_users(self) -> int:
        return len(self.user_audience)

    @property
    def n_impressions(self) -> int:
        return len(self.imp_ts)


@dataclass(frozen=True)
class LevelSequences:
    """Per impression (in the original impression order) at one level."""

    level: str
    n: np.ndarray  # int32 rank within the window
    entry: np.ndarray  # int64 index of the entry impression
    tier: np.ndarray  # int8 signal tier code as of the entry impression
    decayed: np.ndarray  # float64 Σ 2^(−age/h) over the window's impressions, itself included (≥ 1)


def grouped_search(
    g_sorted: np.ndarray, t_sorted: np.ndarray, g_q: np.ndarray, t_q: np.ndarray, side: str
) -> np.ndarray:
    """np.searchsorted on (group, time) pairs sorted lexicographically: insertion points of (g_q, t_q).

    Uses one int64 composite key when it fits, else dense time ranks (exact either way).
    """
    if len(g_sorted) == 0:
        return np.zeros(len(g_q), dtype=np.int64)
    t_min = int(min(t_sorted.min(), t_q.min() if len(t_q) else t_sorted.min()))
    t_max = int(max(t_sorted.max(), t_q.max() if len(t_q) else t_sorted.max()))
    g_max = int(max(g_sorted.max(), g_q.max() if len(g_q) else 0))
    span = t_max - t_min + 2
    if (g_max + 1) * span < 2**62:
        key = g_sorted.astype(np.int64) * span + (t_sorted - t_min)
        q = g_q.astype(np.int64) * span + (t_q - t_min)
        return np.searchsorted(key, q, side=side)
    srt = np.sort(t_sorted)
    uniq = srt[np.r_[True, srt[1:] != srt[:-1]]]
    del srt
    m = len(uniq) + 1
    key = g_sorted.astype(np.int64) * m + np.searchsorted(uniq, t_sorted)
    # (g, t_q) sorts before (g, t) iff rank(t_q) < rank(t); `side` decides ties on equal times.
    q = g_q.astype(np.int64) * m + np.searchsorted(uniq, t_q, side="left")
    if side == "right":
        exact = np.searchsorted(uniq, t_q, side="right") > np.searchsorted(uniq, t_q, side="left")
        return np.searchsorted(key, q + exact, side="left")
    return np.searchsorted(key, q, side="left")


def signal_tier_codes(ev: EventArrays, query_user: np.ndarray, query_ts: np.ndarray, lookback_us: int) -> np.ndarray:
    """Signal tier of `query_user` as of `query_ts`: converter (a conversion in (t − lookback, t)), else
    engaged (a click there), else impression_only. Events at t itself do not count (strictly before)."""
    tier = np.zeros(len(query_ts), dtype=np.int8)
    for code, (users, ts) in ((1, (ev.click_user, ev.click_ts)), (2, (ev.conv_user, ev.conv_ts))):
        if len(ts) == 0:
            continue
        pos = grouped_search(users, ts, query_user, query_ts, "left") - 1
        ok = pos >= 0
        p = np.where(ok, pos, 0)
        ok &= (users[p] == query_user) & (query_ts - ts[p] < lookback_us)
        tier[ok] = code  # converter (2) is applied last, so it wins
    return tier


def _group_order(user: np.ndarray, entity: np.ndarray, n_entities: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable order by (user, entity) [time order kept], dense group index in that order, group keys."""
    key = user.astype(np.int64) * max(n_entities, 1) + entity
    order = np.argsort(key, kind="stable")
    sk = key[order]
    start = np.empty(len(sk), dtype=bool)
    if len(sk):
        start[0] = True
        np.not_equal(sk[1:], sk[:-1], out=start[1:])
    g = np.cumsum(start) - 1
    return order, g, sk[start]


def level_sequences(
    ev: EventArrays, level: str, window_us: int, tier_of_impression: np.ndarray, half_life_us: float
) -> LevelSequences:
    """Rank within the rolling window, entry impression, tier at entry and decayed count (half-life
    `half_life_us`, the feature tier's), for every impression at `level`."""
    order, g, _ = _group_order(ev.imp_user, ev.imp_entity[level], ev.n_entities[level])
    t = ev.imp_ts[order]
    pos = np.arange(len(t), dtype=np.int64)
    if len(t) == 0 or int(t.max()) - int(t.min()) < window_us:
        # the whole data fits in one window: the entry is the pair's first impression
        first = np.r_[True, g[1:] != g[:-1]] if len(g) else np.zeros(0, dtype=bool)
        entry_pos = np.maximum.accumulate(np.where(first, pos, 0))
    else:
        # first impression of the pair with ts > t - W, i.e. ts >= t - W + 1 µs
        entry_pos = grouped_search(g, t, g, t - window_us + 1, "left")
    n_sorted = (pos - entry_pos + 1).astype(np.int32)
    n = np.empty(len(t), dtype=np.int32)
    n[order] = n_sorted
    entry = np.empty(len(t), dtype=np.int64)
    entry[order] = order[entry_pos]
    decayed = np.empty(len(t))
    decayed[order] = _decayed_in_window(g, t, entry_pos, half_life_us)
    return LevelSequences(level=level, n=n, entry=entry, tier=tier_of_impression[entry], decayed=decayed)


def _decayed_in_window(g: np.ndarray, t: np.ndarray, entry_pos: np.ndarray, half_life_us: float) -> np.ndarray:
    """Σ_{entry ≤ j ≤ i} 2^(−(t_i − t_j)/h) in grouped order, by prefix sums of x_j = 2^((t_j − t_first)/h).

    The running sum is reset at each group start (the previous group's total is subtracted there), so rounding
    stays local to a group. Terms older than the window are exponentially smaller than those inside it, so the
    difference of prefix sums keeps full precision; exponents stay below 2^1000 for groups spanning fewer than
    1000 half-lives (1000 days at a 1-day half-life).
    """
    if len(t) == 0:
        return np.zeros(0)
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    lengths = np.diff(np.r_[starts, len(t)])
    start_of = np.repeat(starts, lengths)
    e = (t - t[start_of]) / half_life_us
    if e.max() > 1000:
        raise ValueError("a (user, entity) pair spans more than 1000 half-lives: shorten the data")
    x = np.exp2(e)
    xx = x.copy()
    totals = np.add.reduceat(x, starts)
    xx[starts[1:]] -= totals[:-1]
    running = np.cumsum(xx)
    running -= np.repeat(running[starts] - x[starts], lengths)  # inclusive within-group prefix sums
    before = np.where(entry_pos > start_of, running[np.maximum(entry_pos - 1, 0)], 0.0)
    return np.maximum((running - before) / x, 1.0)


@dataclass(frozen=True)
class Credit:
    """Per-impression conversion outcome and how it was obtained."""

    y: np.ndarray  # float64 expected conversions credited to each impression (0/1 under last touch)
    y_var: np.ndarray  # float64 assignment variance Σ_c w_ci (1 − w_ci) of that credit (0 under last touch)
    method: str
    delay_edges_s: np.ndarray  # delay bins (seconds) of the fitted delay density (EM only)
    delay_density: np.ndarray  # relative density per second in each bin (EM only)
    iterations: int
    conversions_matched: int  # conversions with at least one candidate impression
    conversions: int


def _candidates(
    ev: EventArrays, window_us: int, level: str = "advertiser"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (conversion, impression) pairs of the same user and `level` entity with 0 ≤ conv_ts − imp_ts ≤ W.

    Returns (conversion index, impression index, delay µs), grouped by conversion in time order.
    """
    order, g, keys = _group_order(ev.imp_user, ev.imp_entity[level], ev.n_entities[level])
    t = ev.imp_ts[order]
    conv_key = ev.conv_user.astype(np.int64) * max(ev.n_entities[level], 1) + ev.conv_entity[level]
    gc = np.searchsorted(keys, conv_key)
    found = gc < len(keys)
    found[found] = keys[gc[found]] == conv_key[found]
    gc = np.where(found, gc, 0)
    lo = grouped_search(g, t, gc, ev.conv_ts - window_us, "left")
    hi = grouped_search(g, t, gc, ev.conv_ts, "right")
    hi = np.where(found, hi, lo)
    counts = np.maximum(hi - lo, 0)
    conv_idx = np.repeat(np.arange(len(counts)), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.repeat(lo, counts) + offsets
    imp_idx = order[pos]
    delay = ev.conv_ts[conv_idx] - ev.imp_ts[imp_idx]
    return conv_idx, imp_idx, delay


def last_touch_credit(ev: EventArrays, window_us: int) -> Credit:
    """Each conversion credited to the user's last impression of its attributed ad at or before it (within W)."""
    conv_idx, imp_idx, _ = _candidates(ev, window_us, "ad")
    y = np.zeros(ev.n_impressions)
    if len(conv_idx):
        last = np.r_[conv_idx[1:] != conv_idx[:-1], True]  # candidates are in time order per conversion
        np.add.at(y, imp_idx[last], 1.0)
    matched = len(np.unique(conv_idx))
    return Credit(y, np.zeros_like(y), "last_touch", np.zeros(0), np.zeros(0), 0, matched, len(ev.conv_ts))


def _delay_edges(window_us: int, bins: int) -> np.ndarray:
    """Delay bin edges in seconds: [0, 1 s) then log-spaced up to the window."""
    top = max(window_us / 1e6, 2.0)
    return np.r_[0.0, np.geomspace(1.0, top * (1 + 1e-9), bins)]


def em_credit(
    ev: EventArrays,
    window_us: int,
    mature: np.ndarray,
    sequences: dict[str, LevelSequences],
    *,
    candidate_window_us: int | None = None,
    iterations: int = 40,
    bins: int = 40,
    max_n: int = 60,
    tol: float = 1e-4,
    settled_share: float = 0.25,
) -> Credit:
    """Deconvolve conversions over the impressions that could have caused them (EM).

    Last-touch attribution credits a conversion to the last impression before it; with conversion delays of
    hours and repeated impressions within hours, that moves credit from earlier to later exposures and makes
    the n-th impression look better than it is (measured on the simulator: flat or rising curves where the
    truth falls by half). Instead, each conversion of user u attributed to advertiser A is treated as a
    mixture over u's impressions i of A in [t_conv − R, t_conv], R = max(W, `candidate_window_us`) (looking
    further back than the attribution window W lets a conversion that came late from an old impression go
    to that impression, instead of being forced onto a recent one; only credit within W counts in y):

        P(conversion came from i) ∝ λ_i · f(t_conv − t_i)

    with f the conversion delay density (a histogram on log-spaced delay bins; on young data learnt under
    right censoring, each bin from the impressions observed for longer than it) and λ_i the impression's
    relative conversion rate, modelled as λ_i = φ_format(i) · Π_L h_{audience,L}(d_i^L) — one factor per
    level's *decayed* exposure count d (the serving feature `imp_decayed`, tier half-lives from the features
    config, in steps of 0.5) and one per format. (Raw counts are not enough here: among one conversion's
    candidates, a burst of impressions minutes apart is more fatigued than the same count spread over days,
    and a raw-count λ left the curves visibly flattened.) EM alternates the responsibilities (E) with f (from the credit
    that lands on impressions observed for the whole reach, or per bin for at least that delay) and with λ, fitted as a Poisson model of
    the credit with one fixed effect per (user, advertiser) pair (so a user's own propensity cancels, as it does
    among one conversion's candidates: no survivorship in λ either), by cyclic proportional fitting, each h
    unimodal-smoothed. The result, y_i = Σ credit, is the expected number of conversions caused by
    impression i that were observed within the window, and y_var_i = Σ w(1 − w) the variance of that
    assignment (a multiple-imputation view), which the CIs add to the sampling variance. On the simulator, the curves from y match the curves
    from the latent causal conversions; last touch does not (see benchmarks/results/curves.md).
    """
    reach = max(window_us, candidate_window_us or 0)
    conv_idx, imp_idx, delay = _candidates(ev, reach, "advertiser")
    edges = _delay_edges(reach, bins)
    b = np.clip(np.searchsorted(edges, delay / 1e6, side="right") - 1, 0, len(edges) - 2)
    widths = np.diff(edges)
    f = 1.0 / np.maximum(np.sqrt(edges[:-1] * edges[1:]), 0.5)  # start: flat in log-delay
    n_conv = len(ev.conv_ts)
    # The delay density: when at least `settled_share` of the impressions have been observed for the whole reach,
    # from those alone (no censoring). Otherwise (young data: days, not the reach) under right censoring: delay
    # bin b counts only the candidates whose impression has been observed for at least the bin's upper edge,
    # divided by how many impressions that is (those "at risk" of a delay in b), so every bin estimates the same
    # per-impression quantity; a bin longer than the data has none at risk and keeps only the regularizing floor.
    observed_s = (ev.data_end_us - ev.imp_ts) / 1e6
    settled = observed_s >= reach / 1e6
    if settled.sum() >= settled_share * len(settled) and settled.any():
        # enough impressions observed for the whole reach: every bin from those alone (no censoring at all)
        observed_s = np.where(settled, np.inf, -np.inf)
    at_risk = len(observed_s) - np.searchsorted(np.sort(observed_s), edges[1:], side="left")
    cand_observed = observed_s[imp_idx] >= edges[1:][b]
    in_window = delay <= window_us
    lam_model = _RateModel(ev, mature, sequences, imp_idx, max_n)
    y = np.zeros(ev.n_impressions)
    w = np.zeros(0)
    it = 0
    for it in range(1, iterations + 1):  # noqa: B007 - reported below
        w = lam_model.rate(imp_idx) * f[b]
        total = np.bincount(conv_idx, weights=w, minlength=n_conv)
        w /= np.where(total > 0, total, 1.0)[conv_idx]
        y_new = np.bincount(imp_idx, weights=np.where(in_window, w, 0.0), minlength=ev.n_impressions)
        mass = np.bincount(b[cand_observed], weights=w[cand_observed], minlength=len(widths))
        per_imp = np.where(at_risk > 0, mass / np.maximum(at_risk, 1), 0.0)
        f = (per_imp + 1e-3 * max(per_imp.sum(), 1e-12) / len(widths)) / widths
        lam_model.update(y_new)
        change = np.abs(y_new - y).sum() / max(y_new.sum(), 1.0)
        y = y_new
        if change < tol:
            break
    log.info("EM credit: %d iterations, %d candidate pairs for %d conversions", it, len(conv_idx), n_conv)
    matched = len(np.unique(conv_idx))
    y_var = (
        np.bincount(imp_idx, weights=np.where(in_window, w * (1.0 - w), 0.0), minlength=ev.n_impressions)
        if len(w)
        else np.zeros_like(y)
    )
    return Credit(y, y_var, "em_deconvolution", edges, f / f.sum(), it, matched, n_conv)


class _RateModel:
    """λ_i = φ_format · Π_L h_{aud,L}(decayed count bin), fitted with (user, advertiser) fixed effects."""

    def __init__(
        self,
        ev: EventArrays,
        mature: np.ndarray,
        sequences: dict[str, LevelSequences],
        cand_imp: np.ndarray,
        max_n: int,
    ) -> None:
        self.max_n = max_n
        self.n_aud = len(ev.audiences)
        aud = ev.user_audience[ev.imp_user].astype(np.int64)
        # decayed exposure count in steps of 0.5 (1, 1.5, 2, ...), the last bin open-ended
        self.cell_all = {
            lv: aud * max_n + np.minimum(((s.decayed - 1.0) * 2.0).astype(np.int64), max_n - 1)
            for lv, s in sequences.items()
        }
        self.fmt_all = ev.imp_format.astype(np.int64)
        self.h = {lv: np.ones(self.n_aud * max_n) for lv in sequences}
        self.phi = np.ones(max(len(ev.formats), 1))
        # rows that can inform the fit: mature impressions in (user, advertiser) pairs with a candidate
        order, g, _ = _group_order(ev.imp_user, ev.imp_entity["advertiser"], ev.n_entities["advertiser"])
        group_of = np.empty(ev.n_impressions, dtype=np.int64)
        group_of[order] = g
        has = np.zeros(int(g[-1]) + 1 if len(g) else 0, dtype=bool)
        has[group_of[cand_imp]] = True
        rows = np.flatnonzero(mature & has[group_of])
        self.rows = rows
        _, self.group = np.unique(group_of[rows], return_inverse=True)
        self.n_groups = int(self.group.max()) + 1 if len(rows) else 0
        self.cell = {lv: c[rows] for lv, c in self.cell_all.items()}
        self.fmt = self.fmt_all[rows]

    def rate(self, idx: np.ndarray) -> np.ndarray:
        lam = self.phi[self.fmt_all[idx]].copy()
        for lv, h in self.h.items():
            lam *= h[self.cell_all[lv][idx]]
        return lam

    def _mu(self) -> np.ndarray:
        mu = self.phi[self.fmt].copy()
        for lv, h in self.h.items():
            mu *= h[self.cell[lv]]
        return mu

    def update(self, y_all: np.ndarray, cycles: int = 2) -> None:
        if len(self.rows) == 0:
            return
        y = y_all[self.rows]
        size = self.n_aud * self.max_n
        for _ in range(cycles):
            for lv in self.h:
                mu = self._mu()
                alpha = np.bincount(self.group, weights=y, minlength=self.n_groups) / np.maximum(
                    np.bincount(self.group, weights=mu, minlength=self.n_groups), 1e-300
                )
                expected = alpha[self.group] * mu
                obs = np.bincount(self.cell[lv], weights=y, minlength=size)
                exp_ = np.bincount(self.cell[lv], weights=expected, minlength=size)
                h = self.h[lv] * np.where(exp_ > 0, obs / np.where(exp_ > 0, exp_, 1.0), 1.0)
                self.h[lv] = self._smooth(h, obs)
            mu = self._mu()
            alpha = np.bincount(self.group, weights=y, minlength=self.n_groups) / np.maximum(
                np.bincount(self.group, weights=mu, minlength=self.n_groups), 1e-300
            )
            expected = alpha[self.group] * mu
            obs = np.bincount(self.fmt, weights=y, minlength=len(self.phi))
            exp_ = np.bincount(self.fmt, weights=expected, minlength=len(self.phi))
            phi = self.phi * np.where(exp_ > 0, obs / np.where(exp_ > 0, exp_, 1.0), 1.0)
            self.phi = phi / max(phi.max(), 1e-300)

    def _smooth(self, h: np.ndarray, obs: np.ndarray) -> np.ndarray:
        h = h.reshape(self.n_aud, self.max_n).copy()
        w = obs.reshape(self.n_aud, self.max_n)
        for a in range(self.n_aud):
            if h[a, 0] <= 0 or w[a].sum() <= 0:
                h[a] = 1.0
                continue
            h[a] = monotone_tail(h[a] / h[a, 0], w[a] + 1e-3)
        return np.clip(h, 1e-3, 10.0).ravel()
