"""The replay: one policy (or a split of users between policies) played on a `Traffic`, step by step (pure numpy).

At every opportunity the auction shows the candidate with the highest score × penalty, where the penalty is the
policy engine's (`freqcap.domain.evaluation.policies.penalties`, equal to `freqcap.domain.policy.engine.decide`) given the
user's frequency state *in this replay so far* — impressions actually shown under this policy, counted per
(user, advertiser / campaign / ad) in the policy's windows — and the user's signal tier as of now (a click or
conversion event of this replay within the lookback; events arrive after their delay). The opportunity stays
empty when the best score × penalty is 0 (every candidate capped by a hard rule) or below the policy's reserve.

What a shown impression yields is the simulator's true model, with its own functions:
p_conv = min(p_max, b_u · φ_format · q · Π_L g_{aud,L}(n_eff_L)) with g = `freqcap.domain.simulate.params.response_multiplier`,
q the (user, ad) relevance of the auction model (`freqcap.domain.evaluation.traffic`; 1 when it is not in the truth)
and n_eff_L = 1 + Σ 2^(−age/h_{aud,L}) over the impressions of the same (user, entity) *shown in this replay*
(the simulator's definition, `freqcap.domain.simulate.fatigue`, kept as a running decayed sum); likewise p_click.
Converted iff the opportunity's common uniform < p_conv (and clicked likewise): every policy faces the same draws.
An impression is *past the true optimal frequency* when, at some level, its n_eff exceeds the true cap of the
user's audience at that level (`freqcap.domain.evaluation.policies.true_caps`).

Users never share state (no budgets or pacing across users), so the r-th opportunities of all users are one
vectorized step (see the rank-major layout in `freqcap.domain.evaluation.traffic`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from freqcap.domain.evaluation.policies import (
    TIER_NAMES,
    CompiledPolicy,
    ReplayPolicy,
    compile_policy,
    penalties,
    true_caps,
)
from freqcap.domain.evaluation.traffic import Traffic
from freqcap.domain.events import LEVELS
from freqcap.domain.simulate.model import DAY_US
from freqcap.domain.simulate.params import response_multiplier

_INF = np.int64(2**62)
_NEG = -_INF


@dataclass(frozen=True)
class ReplayLog:
    """Per opportunity, in the world's impression order (user, time): what was shown and what it yielded."""

    shown_ad: np.ndarray  # int32, −1 when the opportunity stayed empty
    p_conv: np.ndarray  # float64 (0 when empty)
    converted: np.ndarray  # bool
    clicked: np.ndarray  # bool
    conv_ts: np.ndarray  # int64 µs (conversion event time; meaningful where converted)
    click_ts: np.ndarray  # int64 µs
    past_optimal: np.ndarray  # bool
    arm: np.ndarray  # int8 arm of the user (0 without a split)


@dataclass(frozen=True)
class ReplayResult:
    names: tuple[str, ...]  # one per arm
    reserves: tuple[float, ...]
    opportunities: int
    impressions: int
    conversions: int
    clicks: int
    expected_conversions: float
    past_optimal: int
    user_impressions: np.ndarray  # per world user index
    user_conversions: np.ndarray
    user_expected: np.ndarray
    user_opportunities: np.ndarray
    best_value: np.ndarray  # float32 per opportunity (layout order): the best score × penalty, before the reserve
    seconds: float
    log: ReplayLog | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return " | ".join(self.names)

    @property
    def conversions_per_mille(self) -> float:
        return 1000.0 * self.conversions / self.impressions if self.impressions else float("nan")

    @property
    def past_optimal_share(self) -> float:
        return self.past_optimal / self.impressions if self.impressions else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "impressions": float(self.impressions),
            "conversions": float(self.conversions),
            "expected_conversions": self.expected_conversions,
            "clicks": float(self.clicks),
            "conversions_per_mille": self.conversions_per_mille,
            "past_optimal_share": self.past_optimal_share,
            "fill_rate": self.impressions / self.opportunities if self.opportunities else float("nan"),
        }


def _audience_levels(traffic: Traffic, getter) -> np.ndarray:
    """(n_audiences, levels) table of a per-audience, per-level parameter."""
    p = traffic.world.params
    return np.array(
        [[getter(p.audiences[a].levels[lv]) for lv in LEVELS] for a in p.audience_names()], dtype=np.float64
    )


def replay(
    traffic: Traffic,
    policies: ReplayPolicy | Sequence[ReplayPolicy],
    *,
    arm_of_user: np.ndarray | None = None,
    floor: float | None = None,
    signal_lookback_us: int = 28 * DAY_US,
    record: bool = False,
) -> ReplayResult:
    """Play `policies` on `traffic`. With several policies, `arm_of_user` (per world user index) says which
    policy each user gets (a holdout split); with one, everyone gets it. `floor` defines "past the true optimal
    frequency" (default: the simulator's default floor)."""
    started = time.perf_counter()
    arms = [policies] if isinstance(policies, ReplayPolicy) else list(policies)
    if not arms:
        raise ValueError("at least one policy is required")
    w = traffic.world
    p = w.params
    aud_names = p.audience_names()
    n_users, n_opp, k = traffic.n_users, traffic.n_opportunities, traffic.k
    n_lv = len(LEVELS)
    if len(arms) > 1:
        if arm_of_user is None or len(arm_of_user) != len(w.audience):
            raise ValueError("several policies need arm_of_user with one arm per user")
        arm_pos = np.asarray(arm_of_user, dtype=np.int64)[traffic.user]
        if arm_pos.min() < 0 or arm_pos.max() >= len(arms):
            raise ValueError("arm_of_user must index the policies")
    else:
        arm_pos = np.zeros(n_users, dtype=np.int64)
    compiled = [compile_policy(rp, aud_names, TIER_NAMES) for rp in arms]
    reserve_pos = np.array([rp.reserve for rp in arms], dtype=np.float64)[arm_pos]

    # ---- per user position: the truth (levels on the last axis) ----------------------------------------
    pos_user = traffic.user
    aud = w.audience[pos_user].astype(np.int64)
    baseline = w.baseline[pos_user]
    click_prop = w.click_propensity[pos_user]
    conv_mult = np.array([f.conv_multiplier for f in p.formats.values()])
    click_mult = np.array([f.click_multiplier for f in p.formats.values()])
    floor = p.default_floor if floor is None else floor
    caps_true = true_caps(p, floor)
    h_us = _audience_levels(traffic, lambda lv: lv.half_life_days * DAY_US)[aud]
    alpha = _audience_levels(traffic, lambda lv: lv.alpha)[aud]
    kappa = _audience_levels(traffic, lambda lv: lv.kappa)[aud]
    beta = _audience_levels(traffic, lambda lv: lv.beta)[aud]
    cap_true = np.array([[caps_true[a][lv] for lv in LEVELS] for a in aud_names], dtype=np.float64)[aud]

    # ---- state -----------------------------------------------------------------------------------------
    span = traffic.span_us
    n_ids = traffic.n_pair_ids
    short = sorted({win for c in compiled if c.counts == "raw" for win in c.windows if win < span})
    count_total = np.zeros(n_ids, dtype=np.int32)
    count_w = {win: np.zeros(n_ids, dtype=np.int32) for win in short}
    exp_ptr = {win: np.zeros(n_users, dtype=np.int64) for win in short}
    lo_rank = {win: traffic.lo_rank(win) for win in short}
    shown_pair = np.full((n_opp, n_lv), -1, dtype=np.int32) if short else None
    # Decayed exposure sum S of each pair, in the log domain: log_s = log2(S) + t_last / h (t in half-lives since
    # the start), so that S now = 2^(log_s − t / h) takes one gather instead of two.
    log_s = np.full(n_ids, -np.inf)
    # signal tier events (click = 0, conversion = 1): last observed, and up to two pending (earliest, latest)
    ev_last = np.full((n_users, 2), _NEG)
    ev_pmin = np.full((n_users, 2), _INF)
    ev_pmax = np.full((n_users, 2), _INF)
    need_tier = any(c.uses_tier for c in compiled)
    need_penalty = any(not c.is_empty or c.counts == "response" for c in compiled)
    relevance = traffic.relevance

    shown_cand = np.full(n_opp, -1, dtype=np.int8)
    p_out = np.zeros(n_opp)
    conv_out = np.zeros(n_opp, dtype=bool)
    click_out = np.zeros(n_opp, dtype=bool)
    past_out = np.zeros(n_opp, dtype=bool)
    best_out = np.zeros(n_opp, dtype=np.float32)
    lookback = np.array([signal_lookback_us, signal_lookback_us])

    offset, live = traffic.offset, traffic.live
    for r in range(traffic.n_steps):
        n = int(live[r])
        lo, hi = int(offset[r]), int(offset[r + 1])
        t = traffic.ts[lo:hi]
        tau = (t - w.start_us)[:, None] / h_us[:n]  # (n, levels): time in half-lives
        pairs = traffic.pair[lo:hi]  # (n, K, levels)

        # -- windows: forget shown impressions that left each short window
        for win in short:
            lr = lo_rank[win][lo:hi]
            ptr = exp_ptr[win][:n]
            cnt = lr - ptr
            total = int(cnt.sum())
            if total:
                rows = np.repeat(np.arange(n), cnt)
                within = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
                gone = shown_pair[offset[np.repeat(ptr, cnt) + within] + rows].ravel()
                np.subtract.at(count_w[win], gone[gone >= 0], 1)
            exp_ptr[win][:n] = lr

        # -- penalties and the auction
        score = traffic.score[lo:hi]
        if need_penalty:
            cohort = aud[:n] * len(TIER_NAMES)
            if need_tier:
                _observe(ev_last, ev_pmin, ev_pmax, n, t)
                since = t[:, None] - ev_last[:n]
                recent = since < lookback
                cohort = cohort + np.where(recent[:, 1], 2, np.where(recent[:, 0], 1, 0))
            counts = _Counts(pairs, count_total, count_w, log_s, tau, span, alpha[:n], kappa[:n], beta[:n])
            eff = score * _arm_penalties(compiled, arm_pos[:n], cohort, counts, (n, k))
        else:
            eff = score
        best = eff.argmax(axis=1)
        best_val = eff[np.arange(n), best]
        best_out[lo:hi] = best_val
        rows = np.flatnonzero((best_val > 0) & (best_val >= reserve_pos[:n]))
        if not len(rows):
            continue
        cand = best[rows]
        pr = pairs[rows, cand]  # (shown, levels)
        tau_r = tau[rows]
        n_eff = np.exp2(log_s[pr] - tau_r) + 1.0
        gain = response_multiplier(n_eff, alpha[rows], kappa[rows], beta[rows]).prod(axis=1)
        past = (n_eff > cap_true[rows]).any(axis=1)
        log_s[pr] = np.log2(n_eff) + tau_r
        count_total[pr] += 1
        for win in short:
            count_w[win][pr] += 1
        at = lo + rows
        if shown_pair is not None:
            shown_pair[at] = pr
        fmt = traffic.fmt[at]
        gain *= relevance[pr[:, -1]]
        p_conv = np.minimum(baseline[rows] * conv_mult[fmt] * gain, p.p_max)
        p_click = np.minimum(click_prop[rows] * click_mult[fmt] * gain, p.p_max)
        conv = traffic.u_conv[at] < p_conv
        click = traffic.u_click[at] < p_click
        shown_cand[at] = cand
        p_out[at] = p_conv
        conv_out[at] = conv
        click_out[at] = click
        past_out[at] = past
        if need_tier and (conv.any() or click.any()):
            tt = t[rows]
            _insert(ev_pmin[:, 1], ev_pmax[:, 1], rows[conv], tt[conv] + traffic.conv_delay_us[at[conv]])
            _insert(ev_pmin[:, 0], ev_pmax[:, 0], rows[click], tt[click] + traffic.click_delay_us[at[click]])

    # ---- results ---------------------------------------------------------------------------------------
    shown = shown_cand >= 0
    layout_pos = np.arange(n_opp) - np.repeat(offset[:-1], live)  # within step r, positions 0..live[r]-1
    n_world_users = len(w.audience)

    def per_user(weights: np.ndarray) -> np.ndarray:
        by_pos = np.bincount(layout_pos, weights=weights, minlength=n_users)
        out = np.zeros(n_world_users)
        out[pos_user] = by_pos
        return out

    log = None
    if record:
        inv = np.empty(n_opp, dtype=np.int64)
        inv[traffic.orig] = np.arange(n_opp)
        shown_ad = np.where(shown, traffic.cand_ad[np.arange(n_opp), np.maximum(shown_cand, 0)], -1)
        log = ReplayLog(
            shown_ad=shown_ad[inv].astype(np.int32),
            p_conv=p_out[inv],
            converted=conv_out[inv],
            clicked=click_out[inv],
            conv_ts=(traffic.ts + traffic.conv_delay_us)[inv],
            click_ts=(traffic.ts + traffic.click_delay_us)[inv],
            past_optimal=past_out[inv],
            arm=arm_pos[layout_pos][inv].astype(np.int8),
        )
    user_opps = np.zeros(n_world_users)
    user_opps[pos_user] = traffic.n_opps
    return ReplayResult(
        names=tuple(rp.name for rp in arms),
        reserves=tuple(rp.reserve for rp in arms),
        opportunities=n_opp,
        impressions=int(shown.sum()),
        conversions=int(conv_out.sum()),
        clicks=int(click_out.sum()),
        expected_conversions=float(p_out.sum()),
        past_optimal=int(past_out.sum()),
        user_impressions=per_user(shown.astype(np.float64)),
        user_conversions=per_user(conv_out.astype(np.float64)),
        user_expected=per_user(p_out),
        user_opportunities=user_opps,
        best_value=best_out,
        seconds=time.perf_counter() - started,
        log=log,
    )


class _Counts:
    """The (n, K, levels) exposure counts of one step's candidates, computed once per kind and window."""

    def __init__(self, pairs, count_total, count_w, log_s, tau, span, alpha, kappa, beta) -> None:
        self.pairs, self.count_total, self.count_w, self.log_s = pairs, count_total, count_w, log_s
        self.tau, self.span, self.alpha, self.kappa, self.beta = tau, span, alpha, kappa, beta
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def raw(self, window_us: int) -> np.ndarray:
        key = ("raw", window_us if window_us < self.span else 0)
        if key not in self._cache:
            src = self.count_total if window_us >= self.span else self.count_w[window_us]
            self._cache[key] = src[self.pairs]
        return self._cache[key]

    def effective(self, _window_us: int = 0) -> np.ndarray:
        """S = n_eff − 1: the decayed sum of the pair's earlier impressions (windows do not apply)."""
        if ("effective", 0) not in self._cache:
            self._cache[("effective", 0)] = np.exp2(self.log_s[self.pairs] - self.tau[:, None, :])
        return self._cache[("effective", 0)]

    def response(self) -> np.ndarray:
        """Π_L g(n_eff_L) of each candidate's next impression: (n, K)."""
        g = response_multiplier(
            self.effective() + 1.0, self.alpha[:, None, :], self.kappa[:, None, :], self.beta[:, None, :]
        )
        return g.prod(axis=2)


def _arm_penalties(
    compiled: list[CompiledPolicy], arm: np.ndarray, cohort: np.ndarray, counts: _Counts, shape: tuple[int, int]
) -> np.ndarray:
    """Penalty (n, K) of each row under its arm's policy."""
    out = None
    for i, c in enumerate(compiled):
        rows = arm == i if len(compiled) > 1 else None
        if rows is not None and not rows.any():
            continue
        if c.counts == "response":
            pen = counts.response()
        elif c.is_empty:
            pen = np.ones(shape)
        else:
            _, pen = penalties(c, cohort, counts.effective if c.counts == "effective" else counts.raw, shape)
        if rows is None:
            return pen
        if out is None:
            out = np.ones(shape)
        out[rows] = pen[rows]
    return out if out is not None else np.ones(shape)


def _observe(last: np.ndarray, pmin: np.ndarray, pmax: np.ndarray, n: int, t: np.ndarray) -> None:
    """Pending click/conversion events (columns) that happened before `t` become observed (users 0..n−1).

    Each user keeps up to two pending event times per kind (the earliest and the latest); a third one pending
    at the same time, in between, is dropped. That only matters for worlds longer than the lookback (28 d):
    within one lookback the tier depends on the earliest event alone, which is always kept.
    """
    lo, hi = pmin[:n], pmax[:n]
    tc = t[:, None]
    m1 = lo < tc
    if not m1.any():
        return
    m2 = hi < tc
    cur = last[:n]
    last[:n] = np.where(m2, np.maximum(cur, hi), np.where(m1, np.maximum(cur, lo), cur))
    pmin[:n] = np.where(m2, _INF, np.where(m1, hi, lo))
    pmax[:n] = np.where(m1, _INF, hi)


def _insert(pmin: np.ndarray, pmax: np.ndarray, pos: np.ndarray, when: np.ndarray) -> None:
    """Add one pending event time per user position `pos` (unique)."""
    if not len(pos):
        return
    lo, hi = pmin[pos], pmax[pos]
    empty = lo == _INF
    one = ~empty & (hi == _INF)
    pmin[pos] = np.where(empty, when, np.minimum(lo, when))
    pmax[pos] = np.where(empty, _INF, np.where(one, np.maximum(lo, when), np.maximum(hi, when)))
