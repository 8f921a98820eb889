"""Curve fitting end to end on in-memory arrays (pure: no I/O). `fit_curves(EventArrays, FitConfig)`.

Steps, per level (advertiser, campaign, ad):

1. Sequences: the rank n of every impression within its (user, entity) pair's 28-day window, its entry
   impression, the user's signal tier as of that entry, the decayed count (`freqcap.domain.curves.sequences`).
2. Credit: conversions deconvolved over the impressions that could have caused them (EM; or last touch).
   Maturity: an impression counts once its observed window covers `maturity_share` of the delay mass the EM
   learnt (`freqcap.domain.curves.maturity`), with its credit survival-weighted; last touch: the whole window.
3. Curves per cohort (audience/tier), per audience (`<audience>/all`) and for everyone (`all`), with the
   fixed-cohort estimator and its CIs (`freqcap.domain.curves.estimate`), smoothed to a unimodal shape; each
   cohort's within-pair ratio is shrunk towards its audience's as far as its noise warrants (empirical Bayes,
   `freqcap.domain.curves.shrink`).
4. Caps (`freqcap.domain.curves.caps`): a cohort with too little support (first-exposure impressions or conversions
   below the minimum, or fewer than 2 supported points) **falls back** to its audience, and an audience to
   everyone; the fallback is flagged in curves and caps and never produces a cap from its own noise.

Signal tier. The tier is taken as of the *entry* impression of each n-th impression's window (for n = 1, the
impression itself), not of the n-th impression: tier-as-of-each-impression moves a pair from
`impression_only` to `converter` right after it converts, which removes converting pairs from one cohort's
later exposures and adds them to another's — outcome-dependent selection that bends both curves. As of the
entry, a pair's whole sequence stays in one cohort, decided by what happened before it started.

Why not the simulator's `true_cap`: that is defined on g(n), the response to n *fresh* (back-to-back)
exposures of one level with the others at 1. The raw 28-day count under real delivery differs: exposures
spread over days recover (n_eff < n: at the ad level, with half-lives of 0.5–1 day, the 10th raw impression
has n_eff ≈ 3), while the campaign and advertiser counts rise with the ad's. Measured on the default world
(60 000 users, 14 days), the caps by raw count differ from `true_cap` by up to 3 exposures at floor 0.5
(ad/high_intent 5 vs 8, ad/returning 3 vs 5, campaign/cold 3 vs 4); at the advertiser level they agree
within 1–2. `freqcap.adapters.duckdb.truth_raw` computes the truth in the raw-count terms from the latent `p_conv`.

Meaning of the cap (for serving): **at most `cap` impressions of one entity (advertiser, campaign or ad) to
one user within the level's longest feature window (28 d)**: the n-th impression may be served while the
windowed count `imp_28d` before it is < cap. It is a cap on the raw count, estimated under today's delivery
pattern (how impressions are spread in time), which is what a windowed count can enforce.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from freqcap.config import FeaturesConfig, parse_duration
from freqcap.domain.curves.caps import FloorSpec, select_cap
from freqcap.domain.curves.estimate import EstimatorParams, GroupedInput, estimate_curves, smooth_curve
from freqcap.domain.curves.maturity import DelayDistribution, Maturity, fixed_maturity, learned_maturity
from freqcap.domain.curves.sequences import (
    LEVEL_NAMES,
    TIER_NAMES,
    Credit,
    EventArrays,
    LevelSequences,
    em_credit,
    last_touch_credit,
    level_sequences,
    signal_tier_codes,
)
from freqcap.domain.curves.shrink import shrink_cohort_curves

log = logging.getLogger(__name__)

CURVE_COLUMNS = ("cohort", "level", "n", "rate", "ci_low", "ci_high", "support")
CAP_COLUMNS = ("cohort", "level", "cap", "floor", "support", "fallback", "reason")
ALL = "all"
DAY_US = 86_400_000_000


@dataclass(frozen=True)
class FitConfig:
    window_us: dict[str, int]  # per level: the longest feature window (n counts impressions within it)
    window_label: dict[str, str]  # e.g. "28d"
    half_life_us: dict[str, float]  # per level: the feature tier's decay half-life
    signal_lookback_us: int = 28 * DAY_US
    attribution_window_us: int = 7 * DAY_US
    em_candidate_window_us: int = 7 * DAY_US  # how far back the EM looks for a conversion's cause
    attribution: Literal["deconvolved", "last_touch"] = "deconvolved"
    floor: FloorSpec = field(default_factory=FloorSpec)
    estimator: EstimatorParams = field(default_factory=EstimatorParams)
    min_cohort_support: int = 300  # first-exposure impressions a group needs for its own curve
    min_cohort_conversions: float = 30.0  # credited first-exposure conversions a group needs
    max_cap_range: int = 4  # a cap is "determined" when its 95 % range (cap_high − cap_low) is at most this
    levels: tuple[str, ...] = LEVEL_NAMES
    # an impression counts once its observed window covers this share of the learned delay mass (1: the whole
    # attribution window must have passed); see freqcap.domain.curves.maturity
    maturity_share: float = 0.99
    # cohort curves borrow strength from their audience's as far as their noise warrants (empirical Bayes, see
    # freqcap.domain.curves.shrink); False: every cohort's own estimates as they are
    shrink_to_audience: bool = True
    # count only impressions with a time in [start, end) µs as n-th impressions and entries (None: all). The EM,
    # the maturity and n itself still see every event: for the curves of a training set's span, the like-for-like
    # reference of the model's implied curve (`freqcap.domain.training.curve`)
    span_us: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.maturity_share <= 1.0:
            raise ValueError(f"maturity_share must be in (0, 1], got {self.maturity_share}")


@dataclass
class CurveFit:
    curves: pd.DataFrame  # every group's own curve (cohorts with support, audiences, everyone)
    published: pd.DataFrame  # one curve per cohort/audience/all × level: own, or the parent's when it fell back
    caps: pd.DataFrame
    credit: Credit
    mature_impressions: int
    mean_conversion_value: float | None
    audiences: tuple[str, ...]
    config: FitConfig
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    maturity_horizon_s: float | None = None  # age from which an impression counts (see curves.maturity)
    maturity: Maturity | None = None  # which impressions count, and their credit's survival weight

    def with_floor(self, floor: FloorSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(published curves, caps) for another floor, without refitting."""
        cfg = replace(self.config, floor=floor)
        return propose_caps(self.curves, self.audiences, cfg, self.mean_conversion_value)


def _labels(audience_names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    cohorts = [f"{a}/{t}" for a in audience_names for t in TIER_NAMES]
    audiences = [f"{a}/{ALL}" for a in audience_names]
    return cohorts, audiences


def group_curves(
    ev: EventArrays,
    seq: LevelSequences,
    y: np.ndarray,
    usable: np.ndarray,
    params: EstimatorParams,
    y_var: np.ndarray | None = None,
) -> pd.DataFrame:
    """Own curves of every cohort, audience and everyone at one level (smoothed), labelled."""
    aud = ev.user_audience[ev.imp_user].astype(np.int64)
    # the window's entry is a fresh exposure and usable too (always, by maturity: it is older; not by a span)
    use = usable & usable[seq.entry] & (seq.n[seq.entry] == 1)
    user, n, yy, ye = ev.imp_user[use], seq.n[use], y[use], y[seq.entry[use]]
    vy = ve = None
    if y_var is not None:
        vy, ve = y_var[use], y_var[seq.entry[use]]
    cohorts, audiences = _labels(ev.audiences)
    frames = []
    groupings = (
        ("cohort", aud[use] * len(TIER_NAMES) + seq.tier[use], cohorts),
        ("audience", aud[use], audiences),
        ("global", np.zeros(int(use.sum()), dtype=np.int64), [ALL]),
    )
    for kind, group, labels in groupings:
        est = estimate_curves(GroupedInput(user, group, n, yy, ye, len(labels), vy, ve), params)
        for g, curve in est.groupby("group", sort=True):
            c = smooth_curve(curve)
            c.insert(0, "cohort", labels[int(g)])
            c["kind"] = kind
            frames.append(c.drop(columns="group"))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _sufficient(curve: pd.DataFrame, cfg: FitConfig) -> tuple[bool, str]:
    if curve.empty:
        return False, "no exposure with enough support"
    first = curve.iloc[0]
    if first["support"] < cfg.min_cohort_support:
        return False, f"{int(first['support'])} first exposures < {cfg.min_cohort_support}"
    if first["conversions"] < cfg.min_cohort_conversions:
        return False, f"{first['conversions']:.0f} first-exposure conversions < {cfg.min_cohort_conversions:g}"
    if len(curve) < 2:
        return False, "support for n = 1 only"
    return True, ""


def fit_curves(ev: EventArrays, cfg: FitConfig, *, given_credit: np.ndarray | None = None) -> CurveFit:
    """Sequences, credit, curves and caps for every cohort × level (see the module docstring).

    `given_credit` (per impression) replaces the credit the attribution computes, keeping its maturity (the
    learned delays): for a benchmark's oracle, the simulator's causal conversions
    (`freqcap.adapters.duckdb.truth_raw.causal_credit`)."""
    stages: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name] = round(now - clock, 3)
        clock = now

    tier_imp = signal_tier_codes(ev, ev.imp_user, ev.imp_ts, cfg.signal_lookback_us)
    seqs = {lv: level_sequences(ev, lv, cfg.window_us[lv], tier_imp, cfg.half_life_us[lv]) for lv in LEVEL_NAMES}
    lap("sequences")
    log.info("sequences: %d impressions × %d levels", ev.n_impressions, len(seqs))
    window = cfg.attribution_window_us
    maturity = fixed_maturity(ev.imp_ts, ev.data_end_us, window)
    notes: list[str] = []
    if cfg.attribution == "deconvolved":
        credit = em_credit(ev, window, maturity.mature, seqs, candidate_window_us=cfg.em_candidate_window_us)
        if cfg.maturity_share < 1.0 and len(credit.delay_edges_s):
            # maturity from the learned delays; the EM runs again so that its rate model sees those impressions
            delays = DelayDistribution(credit.delay_edges_s, credit.delay_density)
            learned = learned_maturity(ev.imp_ts, ev.data_end_us, window, delays, cfg.maturity_share)
            if learned.count > maturity.count:
                maturity = learned
                credit = em_credit(ev, window, maturity.mature, seqs, candidate_window_us=cfg.em_candidate_window_us)
    else:
        credit = last_touch_credit(ev, window)
    if given_credit is not None:
        if len(given_credit) != ev.n_impressions:
            raise ValueError(f"given_credit has {len(given_credit)} values for {ev.n_impressions} impressions")
        y = np.asarray(given_credit, dtype=np.float64)
        credit = replace(credit, y=y, y_var=np.zeros_like(y), method=f"given ({credit.method} maturity)")
    if not maturity.mature.any():
        notes.append("no impression is mature: the data are shorter than the conversion delays need")
    lap("credit")
    log.info(
        "credit (%s): %.0f of %d conversions credited to impressions; %d of %d impressions mature (horizon %.1f h)",
        credit.method,
        credit.y.sum(),
        credit.conversions,
        maturity.count,
        ev.n_impressions,
        maturity.horizon_s / 3600,
    )
    # survival weight: a mature impression younger than the window gets its credit scaled up to a whole window's
    y = credit.y * maturity.weight
    y_var = credit.y_var * maturity.weight**2
    counted = maturity.mature
    if cfg.span_us is not None:
        counted = counted & (ev.imp_ts >= cfg.span_us[0]) & (ev.imp_ts < cfg.span_us[1])
    own = []
    for lv in cfg.levels:
        c = group_curves(ev, seqs[lv], y, counted, cfg.estimator, y_var)
        if not c.empty:
            c.insert(1, "level", lv)
            own.append(c)
        log.info("curves at %s level: %d groups", lv, 0 if c.empty else c["cohort"].nunique())
    curves = pd.concat(own, ignore_index=True) if own else pd.DataFrame(columns=[*CURVE_COLUMNS, "kind"])
    if cfg.shrink_to_audience:
        curves = shrink_cohort_curves(curves, cfg.estimator.confidence)
    lap("curves")
    values = ev.conv_value[np.isfinite(ev.conv_value)]
    mean_value = float(values.mean()) if len(values) else None
    published, caps = propose_caps(curves, ev.audiences, cfg, mean_value)
    lap("caps")
    return CurveFit(
        curves,
        published,
        caps,
        credit,
        maturity.count,
        mean_value,
        ev.audiences,
        cfg,
        stages,
        notes,
        maturity.horizon_s,
        maturity,
    )


def propose_caps(
    curves: pd.DataFrame, audience_names: tuple[str, ...], cfg: FitConfig, mean_value: float | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From every group's own curves: the published curve and the cap of each cohort, audience and everyone
    × level, with fallback to the parent where a group lacks support (see `_sufficient`)."""
    cohorts, audiences = _labels(audience_names)
    by_key = {k: g.sort_values("n") for k, g in curves.groupby(["cohort", "level"])} if len(curves) else {}
    rows, published = [], []
    for lv in cfg.levels:
        targets = [(c, "cohort", [f"{c.split('/')[0]}/{ALL}", ALL]) for c in cohorts]
        targets += [(a, "audience", [ALL]) for a in audiences] + [(ALL, "global", [])]
        for label, kind, parents in targets:
            curve = by_key.get((label, lv), pd.DataFrame())
            ok, why = _sufficient(curve, cfg)
            own_support = int(curve["support"].iloc[0]) if len(curve) else 0
            source, fallback = label, "none"
            if not ok:
                for parent in parents:
                    pc = by_key.get((parent, lv), pd.DataFrame())
                    if _sufficient(pc, cfg)[0]:
                        curve, source = pc, parent
                        fallback = "audience" if parent != ALL else "global"
                        break
                else:
                    curve = pd.DataFrame()
            audience, tier = [*label.split("/"), ALL][:2] if label != ALL else (ALL, ALL)
            base = {
                "cohort": label,
                "level": lv,
                "kind": kind,
                "audience": audience,
                "signal_tier": tier,
                "window": cfg.window_label[lv],
                "floor": cfg.floor.value if cfg.floor.kind != "economic" else np.nan,
                "floor_kind": cfg.floor.kind,
                "own_support": own_support,
                "source": source,
            }
            if curve.empty:
                rows.append(
                    {
                        **base,
                        "cap": 0,
                        "support": own_support,
                        "fallback": "none",
                        "reason": f"no usable curve ({why}) and no parent with support: no cap proposed",
                        "floor_rate": np.nan,
                        "first_rate": np.nan,
                        "censored": True,
                        "cap_low": 0,
                        "cap_high": 0,
                        "cap_naive": 0,
                        "n_max": 0,
                        "usable": False,
                        "determined": False,
                    }
                )
                continue
            first_rate = float(curve["first_rate"].iloc[0])
            floor_rate = cfg.floor.rate(first_rate, mean_value)
            decision = select_cap(curve["rate_smooth"].to_numpy(), floor_rate)
            low = select_cap(curve["ci_low_smooth"].to_numpy(), floor_rate).cap
            high = select_cap(curve["ci_high_smooth"].to_numpy(), floor_rate).cap
            naive = curve["naive_rate"].to_numpy()
            naive_floor = cfg.floor.rate(float(naive[0]), mean_value)
            naive_cap = select_cap(smooth_curve(curve.assign(rate=naive))["rate_smooth"].to_numpy(), naive_floor).cap
            reason = decision.reason if fallback == "none" else f"fell back to {source} ({why}); {decision.reason}"
            determined = (not decision.censored) and high < len(curve) and high - low <= cfg.max_cap_range
            if not determined and not decision.censored:
                reason += f"; uncertain: 95 % range {low}–{high}"
            rows.append(
                {
                    **base,
                    "cap": decision.cap,
                    "support": int(curve["support"].iloc[0]),
                    "fallback": fallback,
                    "reason": reason,
                    "floor_rate": floor_rate,
                    "first_rate": first_rate,
                    "censored": decision.censored,
                    "cap_low": low,
                    "cap_high": high,
                    "cap_naive": naive_cap,
                    "n_max": len(curve),
                    "usable": True,
                    "determined": determined,
                }
            )
            pub = curve.drop(columns=["cohort", "kind"]).assign(
                cohort=label, kind=kind, fallback=fallback, source=source, audience=audience, signal_tier=tier
            )
            published.append(pub)
    caps = pd.DataFrame(rows)
    caps = caps[[*CAP_COLUMNS, *[c for c in caps.columns if c not in CAP_COLUMNS]]]
    pub = pd.concat(published, ignore_index=True) if published else pd.DataFrame(columns=list(CURVE_COLUMNS))
    extra = [c for c in pub.columns if c not in CURVE_COLUMNS]
    pub = pub[[*CURVE_COLUMNS, *extra]].sort_values(["level", "cohort", "n"], kind="stable").reset_index(drop=True)
    return pub, caps


def fit_config_from_features(
    features: FeaturesConfig,
    *,
    floor: FloorSpec,
    attribution_window: str = "7d",
    attribution: Literal["deconvolved", "last_touch"] = "deconvolved",
    estimator: EstimatorParams | None = None,
    min_cohort_support: int = 300,
    min_cohort_conversions: float = 30.0,
    maturity_share: float = 0.99,
) -> FitConfig:
    """Windows and half-lives from the features config: n counts within each level's longest window."""
    levels = ("advertiser", "campaign", "ad")
    us = 1_000_000
    return FitConfig(
        window_us={lv: int(features.tier(lv).window_seconds[features.tier(lv).longest_window]) * us for lv in levels},
        window_label={lv: features.tier(lv).longest_window for lv in levels},
        half_life_us={lv: features.tier(lv).half_life_seconds * us for lv in levels},
        signal_lookback_us=int(parse_duration(features.signal_lookback).total_seconds() * us),
        attribution_window_us=int(parse_duration(attribution_window).total_seconds() * us),
        attribution=attribution,
        floor=floor,
        estimator=estimator or EstimatorParams(),
        min_cohort_support=min_cohort_support,
        min_cohort_conversions=min_cohort_conversions,
        maturity_share=maturity_share,
    )
