"""The generative model of the simulated ad world (pure numpy; no I/O).

The story, in the order it is sampled (every random stage has its own stream spawned from the seed):

1. **Ad catalog.** `n_advertisers` advertisers with Zipf popularity (weight ∝ 1/rank^s, ranks randomly
   assigned to ids). Each has a Zipf-distributed number of campaigns (1 … `max_campaigns_per_advertiser`;
   the popular advertisers get the most), each campaign a Zipf-distributed number of ads
   (1 … `max_ads_per_campaign`; `fragmented_campaign_ads` > 0 gives the top advertiser's first campaign that many
   equally weighted ads, a campaign whose delivery is split over many creatives). Within an advertiser, campaigns are chosen with weight ∝ 1/rank^0.8;
   within a campaign, ads likewise. Each advertiser has an average order value (log-normal).

2. **Users.** Each user belongs to an audience (`high_intent` 15 %, `returning` 35 %, `cold` 50 %). A latent
   "appetite" z ~ N(0, 1) sets the mean impressions per day, activity = median_aud · e^(σ_a·z) (log-normal,
   heavy-tailed), and, with correlation ρ = `activity_baseline_corr`, the baseline conversion propensity
   b_u = mean_aud · exp(σ_b(ρz + √(1−ρ²)ε) − σ_b²/2), so E[b_u | audience] = mean_aud. **Survivorship**:
   the heaviest users — the ones who reach high exposure counts — are the more intent-ful ones, so
   conversion rates grouped by a user's final exposure count are biased upwards at high counts, while a
   fixed cohort of users followed through their 1st, 2nd, … exposure shows the true decline. The click
   propensity is c_u ∝ ctr_aud · (b_u/mean_aud)^ν.

3. **Affinity (retargeting).** Each user has 2–6 affinity slots, each an (advertiser, campaign) pair drawn by
   popularity, with Dirichlet(1) weights. An impression comes from a slot with probability `affinity_share` of
   the audience (then its campaign is the slot's with probability `slot_campaign_stickiness`, else another of
   the advertiser's campaigns), otherwise from the open market (advertiser by popularity, then campaign). The
   ad is drawn within the campaign. So the same advertiser, campaign and ad really come back to a user.

4. **Traffic.** Per user and calendar day, impressions ~ Poisson(activity · weekday weight · Gamma noise).
   They are grouped into sessions (about `session_impressions_mean` impressions each); a session starts at an
   hour drawn from the diurnal profile `hourly_weights` (night trough, evening peak), lasts a log-normal
   number of minutes, and has one format (`feed`, `stories`, `reels`, `search`, `video`); its impressions
   are spread uniformly over it. Timestamps are UTC microseconds, strictly increasing per user.

5. **Fatigue.** For each level L ∈ {advertiser, campaign, ad}, the effective exposure count of impression i to
   the entity e_L(i) is n_eff_L(i) = 1 + Σ_{prior impressions j of the same user and entity} 2^(−(t_i−t_j)/h),
   with h = the recovery half-life of (audience, L) (advertiser longest, ad shortest): fresh repetitions add
   up, old ones fade, a long pause restores n_eff → 1.

6. **Responses.** p_conv(i) = min(p_max, b_u · φ_format · Π_L g_{aud,L}(n_eff_L(i))) and
   p_click(i) = min(p_max, c_u · ψ_format · Π_L g_{aud,L}(n_eff_L(i))), where
   g(n) = (1 + α(n−1)e^(−(n−2))) / (1 + ((n−1)/κ)^β): wear-in (a small bump at n = 2 where α > 0), then
   wear-out (halved at n = 1 + κ). Because the levels multiply, the *relative* curve of one level does not
   depend on the state of the others, so "the true cap of audience A at level L for floor R" — the last n
   before g(n) first falls below R·g(1) — is well defined (up to the p_max ceiling, which typical users never
   reach). Clicks and conversions are independent Bernoulli draws given p.

7. **Delays and attribution.** A click follows its impression by a log-normal few seconds (same ad, format).
   A conversion follows its causal impression by a log-normal delay (median `conversion_delay_hours_median`,
   minutes to days) and is reported **last-touch**: attributed to the user's last impression of the same
   advertiser at or before the conversion time (campaign and ad may differ from the causal impression's). A
   conversion (or click) later than the end of the simulated window is not emitted (truncation), but stays in
   the latent truth. Conversion values are log-normal around the advertiser's order value.

Internally users are numbered audience by audience (per-audience work runs on contiguous slices); the public
`user_id` is "u" + a random relabelling, so ids carry no information about the audience.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from freqcap.config import SimulationConfig
from freqcap.domain.events import LEVELS
from freqcap.domain.simulate.fatigue import exposure_counts, group_order
from freqcap.domain.simulate.params import ModelParams, response_multiplier

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
SECOND_US = 1_000_000

# Independent random streams, one per stage: changing one stage's draws does not reshuffle the others.
_STREAMS = ("catalog", "users", "slots", "traffic", "ads", "responses", "delays", "values")


@dataclass(frozen=True)
class Catalog:
    campaign_advertiser: np.ndarray  # int32 [n_campaigns]
    campaign_weight: np.ndarray  # float64 [n_campaigns], normalized within advertiser
    ad_campaign: np.ndarray  # int32 [n_ads]
    ad_weight: np.ndarray  # float64 [n_ads], normalized within campaign
    advertiser_popularity: np.ndarray  # float64 [n_advertisers], sums to 1
    advertiser_value: np.ndarray  # float64 [n_advertisers], average order value

    @property
    def n_advertisers(self) -> int:
        return len(self.advertiser_popularity)

    @property
    def n_campaigns(self) -> int:
        return len(self.campaign_advertiser)

    @property
    def n_ads(self) -> int:
        return len(self.ad_campaign)

    @property
    def ad_advertiser(self) -> np.ndarray:
        return self.campaign_advertiser[self.ad_campaign]


@dataclass(frozen=True)
class World:
    """Every sampled quantity. Impressions are in (user, time) order; clicks and conversions index them."""

    params: ModelParams
    config: SimulationConfig
    start_us: int
    end_us: int
    catalog: Catalog
    # users
    audience: np.ndarray  # int8 code into params.audience_names(); users are numbered audience by audience
    user_label: np.ndarray  # int64 public number of each user (a permutation): user_id = "u" + label
    activity: np.ndarray  # mean impressions per day
    baseline: np.ndarray  # b_u, conversion propensity of a fresh impression
    click_propensity: np.ndarray  # c_u
    # impressions
    imp_user: np.ndarray  # int32
    imp_ts: np.ndarray  # int64 µs since epoch (UTC)
    imp_ad: np.ndarray  # int32
    imp_campaign: np.ndarray  # int32
    imp_advertiser: np.ndarray  # int32
    imp_format: np.ndarray  # int8 code into params.format_names()
    count: dict[str, np.ndarray]  # level -> ordinal exposure index (1-based, all time)
    n_eff: dict[str, np.ndarray]  # level -> effective (decayed) exposure count
    p_conv: np.ndarray
    p_click: np.ndarray
    clicked: np.ndarray  # bool (latent: includes clicks after the end)
    converted: np.ndarray  # bool (latent: includes conversions after the end)
    # clicks (emitted only)
    click_imp: np.ndarray  # int64 index of the impression
    click_ts: np.ndarray  # int64 µs
    # conversions (latent, one per converting impression)
    conv_imp: np.ndarray  # int64 index of the causal impression
    conv_ts: np.ndarray  # int64 µs (may be ≥ end_us: truncated)
    conv_value: np.ndarray  # float64
    conv_emitted: np.ndarray  # bool: conv_ts < end_us
    conv_attributed_imp: np.ndarray  # int64 last-touch impression (-1 when not emitted)
    timings: dict[str, float]  # seconds per sampling stage

    @property
    def n_impressions(self) -> int:
        return len(self.imp_ts)


def parse_start(start: str) -> datetime:
    dt = datetime.fromisoformat(start)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _to_us(dt: datetime) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _zipf_counts(rng: np.random.Generator, a: float, size: int, cap: int) -> np.ndarray:
    return np.minimum(rng.zipf(a, size), cap).astype(np.int64)


def _alias_tables(parent_of_child: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias tables for "child given parent" (children contiguous per parent), global indices."""
    prob = np.ones(len(weight))
    alias = np.arange(len(weight))
    starts = np.flatnonzero(np.r_[True, parent_of_child[1:] != parent_of_child[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], len(weight)], strict=True):
        n = hi - lo
        scaled = weight[lo:hi] * (n / weight[lo:hi].sum())
        small = [i for i in range(n) if scaled[i] < 1.0]
        large = [i for i in range(n) if scaled[i] >= 1.0]
        while small and large:
            s_i, l_i = small.pop(), large.pop()
            prob[lo + s_i], alias[lo + s_i] = scaled[s_i], lo + l_i
            scaled[l_i] -= 1.0 - scaled[s_i]
            (small if scaled[l_i] < 1.0 else large).append(l_i)
        for i in small + large:  # numerical leftovers are certain picks
            prob[lo + i] = 1.0
    return prob, alias


class _AliasSampler:
    """Draw a child of each given parent with the parent's weights: O(1) per draw, one uniform each."""

    def __init__(self, parent_of_child: np.ndarray, weight: np.ndarray, n_parents: int) -> None:
        self.prob, self.alias = _alias_tables(parent_of_child, weight)
        counts = np.bincount(parent_of_child, minlength=n_parents)
        self.first = (np.cumsum(counts) - counts).astype(np.int64)
        self.count = counts.astype(np.float64)

    def sample(self, parent: np.ndarray, u: np.ndarray) -> np.ndarray:
        x = u * self.count[parent]
        j = x.astype(np.int64)
        x -= j  # the fractional part is again uniform on [0, 1)
        k = self.first[parent] + j
        return np.where(x < self.prob[k], k, self.alias[k]).astype(np.int32)


def _weights_by_rank(parent_of_child: np.ndarray, exponent: float) -> np.ndarray:
    starts = np.flatnonzero(np.r_[True, parent_of_child[1:] != parent_of_child[:-1]])
    lengths = np.diff(np.r_[starts, len(parent_of_child)])
    rank = np.arange(len(parent_of_child)) - np.repeat(starts, lengths)
    w = 1.0 / np.power(rank + 1.0, exponent)
    return w / np.repeat(np.add.reduceat(w, starts), lengths)


def sample_catalog(rng: np.random.Generator, p: ModelParams) -> Catalog:
    n_adv = p.n_advertisers
    popularity = 1.0 / np.power(np.arange(1, n_adv + 1, dtype=np.float64), p.advertiser_popularity_exponent)
    popularity /= popularity.sum()
    # Popular advertisers run the most campaigns (sizes sorted by popularity rank, with ids permuted).
    n_campaigns = np.sort(_zipf_counts(rng, p.campaigns_zipf_a, n_adv, p.max_campaigns_per_advertiser))[::-1]
    perm = rng.permutation(n_adv)  # perm[rank] = advertiser id
    adv_popularity = np.empty(n_adv)
    adv_popularity[perm] = popularity
    adv_campaigns = np.empty(n_adv, dtype=np.int64)
    adv_campaigns[perm] = n_campaigns
    campaign_advertiser = np.repeat(np.arange(n_adv), adv_campaigns).astype(np.int32)
    ads_per_campaign = _zipf_counts(rng, p.ads_zipf_a, len(campaign_advertiser), p.max_ads_per_campaign)
    fragmented = int(np.flatnonzero(campaign_advertiser == perm[0])[0])  # the top advertiser's first campaign
    if p.fragmented_campaign_ads:  # after every draw: the rest of the world is the same as without it
        ads_per_campaign[fragmented] = p.fragmented_campaign_ads
    ad_campaign = np.repeat(np.arange(len(campaign_advertiser)), ads_per_campaign).astype(np.int32)
    ad_weight = _weights_by_rank(ad_campaign, p.ad_weight_exponent)
    if p.fragmented_campaign_ads:
        ad_weight[ad_campaign == fragmented] = 1.0 / p.fragmented_campaign_ads
    value = p.value_median * np.exp(p.advertiser_value_sigma * rng.standard_normal(n_adv))
    return Catalog(
        campaign_advertiser=campaign_advertiser,
        campaign_weight=_weights_by_rank(campaign_advertiser, p.campaign_weight_exponent),
        ad_campaign=ad_campaign,
        ad_weight=ad_weight,
        advertiser_popularity=adv_popularity,
        advertiser_value=np.round(value, 2),
    )


class _Sampler:
    """Vectorized draws of advertiser, campaign-given-advertiser and ad-given-campaign."""

    def __init__(self, cat: Catalog) -> None:
        one_parent = np.zeros(cat.n_advertisers, dtype=np.int64)
        self._adv = _AliasSampler(one_parent, cat.advertiser_popularity, 1)
        self._camp = _AliasSampler(cat.campaign_advertiser, cat.campaign_weight, cat.n_advertisers)
        self._ad = _AliasSampler(cat.ad_campaign, cat.ad_weight, cat.n_campaigns)

    def advertiser(self, u: np.ndarray) -> np.ndarray:
        x = u * self._adv.count[0]
        k = x.astype(np.int64)
        x -= k
        return np.where(x < self._adv.prob[k], k, self._adv.alias[k]).astype(np.int32)

    def campaign(self, advertiser: np.ndarray, u: np.ndarray) -> np.ndarray:
        return self._camp.sample(advertiser, u)

    def ad(self, campaign: np.ndarray, u: np.ndarray) -> np.ndarray:
        return self._ad.sample(campaign, u)


def _audience_table(p: ModelParams, getter) -> np.ndarray:
    return np.array([getter(p.audiences[a]) for a in p.audience_names()], dtype=np.float64)


def simulate_world(config: SimulationConfig, params: ModelParams | None = None) -> World:
    """Sample a whole world. Deterministic given (config, params)."""
    p = params or ModelParams()
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        timings[stage] = now - clock[0]
        clock[0] = now

    streams = dict(
        zip(
            _STREAMS,
            (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(len(_STREAMS))),
            strict=True,
        )
    )
    start = parse_start(config.start)
    start_us = _to_us(start)
    end_us = start_us + config.days * DAY_US

    catalog = sample_catalog(streams["catalog"], p)
    sampler = _Sampler(catalog)

    lap("catalog")
    # ---- users -----------------------------------------------------------------------------------
    rng = streams["users"]
    n_users = config.users
    aud_names = p.audience_names()
    shares = _audience_table(p, lambda a: a.share)
    # Internally users are numbered audience by audience (so per-audience work is on contiguous slices); the
    # public user_id is a random relabelling, so ids say nothing about the audience.
    aud_users = rng.multinomial(n_users, shares / shares.sum())
    audience = np.repeat(np.arange(len(aud_names)), aud_users).astype(np.int8)
    user_label = rng.permutation(n_users)
    z = rng.standard_normal(n_users)
    eps = rng.standard_normal(n_users)
    activity = np.minimum(
        _audience_table(p, lambda a: a.activity_median)[audience] * np.exp(p.activity_sigma * z),
        p.activity_max_per_day,
    )
    sb, rho = p.baseline_sigma, p.activity_baseline_corr
    log_dev = sb * (rho * z + np.sqrt(1.0 - rho * rho) * eps)
    baseline_mean = _audience_table(p, lambda a: a.baseline_mean)[audience]
    baseline = baseline_mean * np.exp(log_dev - sb * sb / 2.0)
    nu = p.click_baseline_elasticity
    click_propensity = (
        _audience_table(p, lambda a: a.ctr_mean)[audience]
        * np.exp(nu * (log_dev - sb * sb / 2.0))
        / np.exp(sb * sb * nu * (nu - 1.0) / 2.0)
    )

    lap("users")
    # ---- affinity slots --------------------------------------------------------------------------
    rng = streams["slots"]
    k_max = p.max_affinity_slots
    n_slots = rng.integers(p.min_affinity_slots, k_max + 1, size=n_users)
    slot_adv = sampler.advertiser(rng.random((n_users, k_max)))
    slot_camp = sampler.campaign(slot_adv.ravel(), rng.random(n_users * k_max)).reshape(n_users, k_max)
    slot_w = rng.standard_exponential((n_users, k_max)) * (np.arange(k_max) < n_slots[:, None])
    slot_cdf = np.cumsum(slot_w, axis=1) / slot_w.sum(axis=1, keepdims=True)
    slot_cdf[np.arange(k_max) >= (n_slots - 1)[:, None]] = 1.0

    lap("slots")
    # ---- traffic: user-days -> sessions -> impressions -------------------------------------------
    rng = streams["traffic"]
    day0 = datetime(start.year, start.month, start.day, tzinfo=UTC)
    day0_us = _to_us(day0)
    n_days = -(-(end_us - day0_us) // DAY_US)
    weekday = (day0.weekday() + np.arange(n_days)) % 7
    wd = np.asarray(p.weekday_weights)
    day_factor = wd[weekday] / wd.mean()
    k = p.day_noise_shape
    lam = activity[:, None] * day_factor[None, :] * rng.gamma(k, 1.0 / k, size=(n_users, n_days))
    n_ud = rng.poisson(lam).ravel()
    n_sess = np.where(
        n_ud > 0,
        np.minimum(n_ud, 1 + rng.poisson(np.maximum(n_ud - 1, 0) / p.session_impressions_mean)),
        0,
    )
    sess_ud = np.repeat(np.arange(len(n_ud)), n_sess)
    hw = np.asarray(p.hourly_weights)
    sess_hour = rng.choice(24, size=len(sess_ud), p=hw / hw.sum())
    sess_start = (sess_ud % n_days) + (sess_hour + rng.random(len(sess_ud))) / 24.0  # days since day0
    sess_len = (
        np.exp(np.log(p.session_minutes_median) + p.session_minutes_sigma * rng.standard_normal(len(sess_ud))) / 1440.0
    )
    fmt_share = np.array([f.share for f in p.formats.values()])
    sess_format = rng.choice(len(fmt_share), size=len(sess_ud), p=fmt_share / fmt_share.sum()).astype(np.int8)

    imp_ud = np.repeat(np.arange(len(n_ud)), n_ud)
    first_sess = np.cumsum(n_sess) - n_sess
    sess = first_sess[imp_ud] + (rng.random(len(imp_ud)) * n_sess[imp_ud]).astype(np.int64)
    t_rel = sess_start[sess] + rng.random(len(imp_ud)) * sess_len[sess]
    imp_ts = day0_us + np.round(t_rel * DAY_US).astype(np.int64)
    imp_user = (imp_ud // n_days).astype(np.int32)
    imp_format = sess_format[sess]
    keep = (imp_ts >= start_us) & (imp_ts < end_us)
    imp_ts, imp_user, imp_format = imp_ts[keep], imp_user[keep], imp_format[keep]
    del imp_ud, sess, t_rel, keep

    # Sort by (user, time); make each user's timestamps strictly increasing (a µs bump on rare ties).
    span = int(n_days) * DAY_US
    if n_users * span < 2**62:
        order = np.argsort(imp_user.astype(np.int64) * span + (imp_ts - day0_us), kind="stable")
    else:  # pragma: no cover - astronomically large worlds
        order = np.lexsort((imp_ts, imp_user))
    imp_ts, imp_user, imp_format = imp_ts[order], imp_user[order], imp_format[order]
    del order
    while True:
        tie = (imp_user[1:] == imp_user[:-1]) & (imp_ts[1:] <= imp_ts[:-1])
        if not tie.any():
            break
        idx = np.flatnonzero(tie) + 1
        imp_ts[idx] = imp_ts[idx - 1] + 1

    lap("traffic")
    # ---- which ad --------------------------------------------------------------------------------
    rng = streams["ads"]
    m = len(imp_ts)
    # Impressions are sorted by user, users by audience: audience a owns impressions bounds[a]:bounds[a+1].
    bounds = np.searchsorted(imp_user, np.r_[0, np.cumsum(aud_users)]).astype(np.int64)
    imps_per_aud = np.diff(bounds)
    u_from_slot, u_slot, u_adv, u_sticky, u_camp, u_ad = (rng.random(m) for _ in range(6))
    imp_advertiser = sampler.advertiser(u_adv)  # the open market ...
    from_slot = u_from_slot < np.repeat(_audience_table(p, lambda a: a.affinity_share), imps_per_aud)
    del u_from_slot, u_adv
    aff = np.flatnonzero(from_slot)  # ... unless the impression comes from an affinity slot
    aff_user = imp_user[aff]
    slot = np.zeros(len(aff), dtype=np.int64)
    u_aff = u_slot[aff]
    for j in range(k_max - 1):  # slot = number of cumulative slot weights below u
        slot += np.ascontiguousarray(slot_cdf[:, j])[aff_user] < u_aff
    flat_slot = aff_user.astype(np.int64) * k_max + slot
    imp_advertiser[aff] = slot_adv.ravel()[flat_slot]
    sticky = u_sticky[aff] < p.slot_campaign_stickiness
    imp_campaign = np.empty(m, dtype=np.int32)
    imp_campaign[aff[sticky]] = slot_camp.ravel()[flat_slot[sticky]]
    free = np.ones(m, dtype=bool)
    free[aff[sticky]] = False
    free_idx = np.flatnonzero(free)
    imp_campaign[free_idx] = sampler.campaign(imp_advertiser[free_idx], u_camp[free_idx])
    imp_ad = sampler.ad(imp_campaign, u_ad)
    del (
        from_slot,
        aff,
        aff_user,
        slot,
        u_aff,
        flat_slot,
        sticky,
        free,
        free_idx,
        u_slot,
        u_sticky,
        u_camp,
        u_ad,
    )

    lap("ads")
    # ---- fatigue per level -----------------------------------------------------------------------
    t_days = (imp_ts - start_us) / DAY_US
    entity = {"advertiser": imp_advertiser, "campaign": imp_campaign, "ad": imp_ad}
    n_entities = {"advertiser": catalog.n_advertisers, "campaign": catalog.n_campaigns, "ad": catalog.n_ads}
    count: dict[str, np.ndarray] = {}
    n_eff: dict[str, np.ndarray] = {}
    gain = np.ones(m)
    adv_order = adv_starts = None
    for level in LEVELS:
        key = imp_user.astype(np.int64) * n_entities[level] + entity[level]
        order, starts = group_order(key)  # user-major, so audience blocks keep their positions
        half_life = np.repeat(_audience_table(p, lambda a, lv=level: a.levels[lv].half_life_days), imps_per_aud)
        c_sorted, n_sorted = exposure_counts(t_days[order], half_life, starts)
        del half_life
        count[level] = np.empty(m, dtype=np.int32)
        count[level][order] = c_sorted
        n_eff[level] = np.empty(m)
        n_eff[level][order] = n_sorted
        del c_sorted, n_sorted
        if level == "advertiser":
            adv_order, adv_starts = order, starts
        for code, aud in enumerate(aud_names):
            lv = p.audiences[aud].levels[level]
            lo, hi = bounds[code], bounds[code + 1]
            gain[lo:hi] *= response_multiplier(n_eff[level][lo:hi], lv.alpha, lv.kappa, lv.beta)
    del t_days

    lap("fatigue")
    # ---- responses -------------------------------------------------------------------------------
    rng = streams["responses"]
    conv_mult = np.array([f.conv_multiplier for f in p.formats.values()])[imp_format]
    click_mult = np.array([f.click_multiplier for f in p.formats.values()])[imp_format]
    p_conv = np.minimum(baseline[imp_user] * conv_mult * gain, p.p_max)
    p_click = np.minimum(click_propensity[imp_user] * click_mult * gain, p.p_max)
    del gain, conv_mult, click_mult
    converted = rng.random(m) < p_conv
    clicked = rng.random(m) < p_click

    lap("responses")
    # ---- delays, truncation, values, attribution -------------------------------------------------
    rng = streams["delays"]
    click_imp = np.flatnonzero(clicked)
    click_delay = np.exp(
        np.log(p.click_delay_seconds_median) + p.click_delay_sigma * rng.standard_normal(len(click_imp))
    )
    click_ts = imp_ts[click_imp] + np.maximum(np.round(click_delay * SECOND_US).astype(np.int64), 1)
    click_ok = click_ts < end_us
    click_imp, click_ts = click_imp[click_ok], click_ts[click_ok]

    conv_imp = np.flatnonzero(converted)
    conv_delay = np.exp(
        np.log(p.conversion_delay_hours_median) + p.conversion_delay_sigma * rng.standard_normal(len(conv_imp))
    )
    conv_ts = imp_ts[conv_imp] + np.maximum(np.round(conv_delay * HOUR_US).astype(np.int64), 1)
    conv_emitted = conv_ts < end_us

    rng = streams["values"]
    vs = p.conversion_value_sigma
    conv_value = catalog.advertiser_value[imp_advertiser[conv_imp]] * np.exp(
        vs * rng.standard_normal(len(conv_imp)) - vs * vs / 2.0
    )
    conv_value = np.maximum(np.round(conv_value, 2), 0.01)

    conv_attributed = np.full(len(conv_imp), -1, dtype=np.int64)
    assert adv_order is not None and adv_starts is not None
    conv_attributed[conv_emitted] = _last_touch(
        adv_order, adv_starts, imp_ts, conv_imp[conv_emitted], conv_ts[conv_emitted]
    )

    lap("delays_attribution")
    return World(
        params=p,
        config=config,
        start_us=start_us,
        end_us=end_us,
        catalog=catalog,
        audience=audience,
        user_label=user_label,
        activity=activity,
        baseline=baseline,
        click_propensity=click_propensity,
        imp_user=imp_user,
        imp_ts=imp_ts,
        imp_ad=imp_ad,
        imp_campaign=imp_campaign,
        imp_advertiser=imp_advertiser,
        imp_format=imp_format,
        count=count,
        n_eff=n_eff,
        p_conv=p_conv,
        p_click=p_click,
        clicked=clicked,
        converted=converted,
        click_imp=click_imp,
        click_ts=click_ts,
        conv_imp=conv_imp,
        conv_ts=conv_ts,
        conv_value=conv_value,
        conv_emitted=conv_emitted,
        conv_attributed_imp=conv_attributed,
        timings=timings,
    )


def _last_touch(
    adv_order: np.ndarray, adv_starts: np.ndarray, imp_ts: np.ndarray, causal: np.ndarray, conv_ts: np.ndarray
) -> np.ndarray:
    """For each conversion, the user's last impression of the causal advertiser at or before the conversion.

    Vectorized binary search inside the (user, advertiser) group of the causal impression (grouped order).
    """
    m = len(adv_order)
    position = np.empty(m, dtype=np.int64)
    position[adv_order] = np.arange(m)
    group_end = np.r_[adv_starts[1:], m]
    group_of_position = np.repeat(np.arange(len(adv_starts)), np.diff(np.r_[adv_starts, m]))
    ts_sorted = imp_ts[adv_order]
    lo = position[causal]  # ts_sorted[lo] <= conv_ts holds (the causal impression precedes its conversion)
    hi = group_end[group_of_position[lo]]  # exclusive
    while True:
        open_ = hi - lo > 1
        if not open_.any():
            break
        mid = (lo + hi) // 2
        ok = open_ & (ts_sorted[np.minimum(mid, m - 1)] <= conv_ts)
        lo = np.where(ok, mid, lo)
        hi = np.where(open_ & ~ok, mid, hi)
    return adv_order[lo]
