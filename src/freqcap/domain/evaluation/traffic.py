"""The traffic every policy is replayed on: opportunities, candidate ads, ranking scores and common random numbers.

Built from a simulated `World` (pure numpy, no I/O), deterministic given (world, `AuctionConfig`, seed):

- **Opportunities** are the simulator's impressions: (user, time, format). The simulator's traffic model decides
  when a user has an ad slot; which ad fills it is now the auction's choice.
- **Candidates.** Each opportunity has `candidates` = K ads: the simulator's own ad for that slot, plus the
  ads of K − 1 other, randomly chosen opportunities of the same user. In the simulator every impression's ad is
  an independent draw from the user's ad demand (affinity slots and open market, `freqcap.domain.simulate.model`),
  so the candidates are draws from the very distribution that generated the world, and the same advertisers,
  campaigns and ads come back to a user as they do in the simulated logs.
- **Relevance.** Each (user, ad) pair has a persistent relevance q = exp(σ_r · z(u, ad) − σ_r²/2) (E[q] = 1;
  z a hash of seed, user and ad: the same pair always gets the same value, with no dense users × ads table).
  With `relevance_in_truth` (default) it is real: the replay's conversion and click probabilities are the
  simulator's times q, so showing a less relevant ad costs something. The exposure response (g per level,
  n_eff) is the simulator's, untouched; q is constant per pair, so it cancels in the fixed-cohort curves.
- **Scores.** The ranker is *fatigue-blind*: score = b_u · φ_format · q(u, ad) · exp(σ_n · z(o, c)), with b_u
  and φ_format the simulator's fresh-impression conversion propensity and format multiplier — a ranker that
  knows who converts, in which format and with which ad, but not how tired the user is of that ad — and z(o, c)
  per-opportunity prediction noise. Ranking by relevance makes an uncapped auction show a user's favourite ads
  again and again: the over-delivery frequency policies correct, at some cost in relevance.
- **Common random numbers.** One uniform per opportunity decides a conversion (converted iff u < p_conv of
  whatever is shown), one a click, and one normal each the conversion and click delays: every policy faces the
  same draws, so differences between policies are not sampling noise of the draws.

Arrays are stored in a *rank-major* layout: users sorted by number of opportunities (most first); step r holds
the r-th opportunity of every user that has more than r, i.e. a prefix of that user order. The replay walks the
steps; within a step the users are independent, so each step is one vectorized update.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtri

from freqcap.domain.events import LEVELS
from freqcap.domain.simulate.model import HOUR_US, SECOND_US, World

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class AuctionConfig:
    """The auction model every policy is replayed under (see the module docstring)."""

    candidates: int = 5  # K candidate ads per opportunity
    relevance_sigma: float = 0.5  # σ_r: log-sd of the persistent (user, ad) relevance q
    noise_sigma: float = 0.5  # σ_n: log-sd of the ranker's per-opportunity prediction noise
    relevance_in_truth: bool = True  # q multiplies the true conversion / click probabilities
    propensity_in_score: bool = True  # the ranker knows b_u · φ_format (fatigue-blind, not propensity-blind)

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ValueError("candidates must be ≥ 1")
        if self.relevance_sigma < 0 or self.noise_sigma < 0:
            raise ValueError("score sigmas must be ≥ 0")


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, vectorized on uint64 (wrapping arithmetic): a well-mixed 64-bit hash."""
    z = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _MASK64


def hash_normal(seed: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A standard normal that depends only on (seed, a, b): the persistent relevance z(u, ad)."""
    with np.errstate(over="ignore"):
        key = splitmix64(np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x100000001B3) + np.asarray(a, dtype=np.uint64))
        key = splitmix64(key ^ (np.asarray(b, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)))
    u = ((key >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53  # in (0, 1)
    return ndtri(u)


@dataclass
class Traffic:
    """Opportunities with candidates, scores and common random numbers, in the rank-major layout.

    Per opportunity (layout order, length N): `orig` (index into the world's impressions), `rank` (its index
    within the user's opportunities), `ts`, `fmt`, `cand_ad` (N, K), `pair` (N, K, 3): dense (user, entity) pair
    ids of each candidate at each level (`LEVELS` order), numbered across levels (level j's ids start at
    `pair_offset[j]`, so one state array holds every level), `score` (N, K), `u_conv`, `u_click`,
    `conv_delay_us`, `click_delay_us`. Per pair id: `relevance` (q for ad-level pairs, 1 elsewhere and when
    relevance is not in the truth). Per user position (length
    U): `user` (the world's user index), `n_opps`. Step r covers layout `offset[r]:offset[r+1]`, the first
    `live[r]` user positions.
    """

    world: World
    config: AuctionConfig
    seed: int
    live: np.ndarray
    offset: np.ndarray
    user: np.ndarray
    n_opps: np.ndarray
    orig: np.ndarray
    rank: np.ndarray
    ts: np.ndarray
    fmt: np.ndarray
    cand_ad: np.ndarray
    pair: np.ndarray
    pair_offset: np.ndarray
    n_pairs: dict[str, int]
    relevance: np.ndarray
    score: np.ndarray
    u_conv: np.ndarray
    u_click: np.ndarray
    conv_delay_us: np.ndarray
    click_delay_us: np.ndarray
    _lo_rank: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_opportunities(self) -> int:
        return len(self.ts)

    @property
    def n_users(self) -> int:
        return len(self.user)

    @property
    def n_steps(self) -> int:
        return len(self.live)

    @property
    def k(self) -> int:
        return self.cand_ad.shape[1]

    @property
    def n_pair_ids(self) -> int:
        return int(self.pair_offset[-1] + self.n_pairs[LEVELS[-1]])

    @property
    def span_us(self) -> int:
        return int(self.world.end_us - self.world.start_us)

    def entity(self, level: str, ads: np.ndarray) -> np.ndarray:
        """The level-`level` entity of ad codes."""
        return entity_of(self.world, level, ads)

    def lo_rank(self, window_us: int) -> np.ndarray:
        """Per opportunity (layout order): the rank of the user's first opportunity with ts > ts − window."""
        if window_us not in self._lo_rank:
            w = self.world
            orig_lo = np.empty(len(w.imp_ts), dtype=np.int64)
            starts = np.searchsorted(w.imp_user, np.arange(len(w.audience)), side="left")
            span = int(w.end_us - w.start_us) + window_us + 2
            key = w.imp_user.astype(np.int64) * span + (w.imp_ts - w.start_us + window_us)
            q = w.imp_user.astype(np.int64) * span + (w.imp_ts - w.start_us)  # = key of (ts − window)
            orig_lo[:] = np.searchsorted(key, q, side="right") - starts[w.imp_user]
            self._lo_rank[window_us] = orig_lo[self.orig]
        return self._lo_rank[window_us]


def entity_of(world: World, level: str, ads: np.ndarray) -> np.ndarray:
    """The advertiser, campaign or ad code of ad codes `ads`."""
    if level == "ad":
        return ads
    camp = world.catalog.ad_campaign[ads]
    return camp if level == "campaign" else world.catalog.campaign_advertiser[camp]


def _rank_major(n_opps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users by position, live per step, offset per step) for per-user opportunity counts `n_opps`."""
    by_len = np.argsort(-n_opps, kind="stable")
    max_len = int(n_opps.max()) if len(n_opps) else 0
    counts = np.bincount(n_opps, minlength=max_len + 1)  # users with exactly n opportunities
    live = (len(n_opps) - np.cumsum(counts))[:max_len]  # users with more than r opportunities
    offset = np.concatenate(([0], np.cumsum(live)))
    return by_len, live.astype(np.int64), offset.astype(np.int64)


def build_traffic(world: World, config: AuctionConfig | None = None, seed: int | None = None) -> Traffic:
    """Candidates, scores and common random numbers for every opportunity of `world` (module docstring)."""
    config = config or AuctionConfig()
    seed = int(world.config.seed if seed is None else seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED_E7A1]))
    p = world.params
    n_users = len(world.audience)
    m = world.n_impressions
    k = config.candidates
    n_opps = np.bincount(world.imp_user, minlength=n_users).astype(np.int64)
    starts = np.cumsum(n_opps) - n_opps

    # Candidates: the slot's own ad, then the ads of K − 1 other opportunities of the same user.
    user = world.imp_user.astype(np.int64)
    own_rank = np.arange(m, dtype=np.int64) - starts[user]
    cand_orig = np.empty((m, k), dtype=np.int64)
    cand_orig[:, 0] = np.arange(m)
    if k > 1:
        others = np.maximum(n_opps[user] - 1, 0)
        jump = 1 + (rng.random((m, k - 1)) * others[:, None]).astype(np.int64)  # 1 … n−1: never itself
        r = (own_rank[:, None] + jump) % np.maximum(n_opps[user], 1)[:, None]
        cand_orig[:, 1:] = starts[user][:, None] + r
    cand_ad = world.imp_ad[cand_orig].astype(np.int32)

    # Dense (user, entity) pair ids per level: every candidate is the ad of one of the user's opportunities, so
    # the pairs of the world's impressions are all there are. Numbered across levels (one state array for all).
    n_ent = {
        "advertiser": world.catalog.n_advertisers,
        "campaign": world.catalog.n_campaigns,
        "ad": world.catalog.n_ads,
    }
    pair = np.empty((m, k, len(LEVELS)), dtype=np.int32)
    n_pairs: dict[str, int] = {}
    pair_offset = np.zeros(len(LEVELS), dtype=np.int64)
    start = 0
    for j, level in enumerate(LEVELS):
        key = user * n_ent[level] + entity_of(world, level, world.imp_ad)
        uniq, inv = np.unique(key, return_inverse=True)
        pair_offset[j] = start
        pair[:, :, j] = (inv + start).astype(np.int32)[cand_orig]
        n_pairs[level] = len(uniq)
        if level == "ad":  # the persistent relevance, one value per (user, ad) pair
            z_pair = hash_normal(seed, uniq // n_ent["ad"], uniq % n_ent["ad"])
            ad_level = j
        start += len(uniq)
        del key, uniq, inv
    del cand_orig

    # Scores: fatigue-blind propensity × persistent (user, ad) relevance × per-opportunity noise.
    log_q = config.relevance_sigma * z_pair - config.relevance_sigma**2 / 2.0
    log_score = log_q[pair[:, :, ad_level] - pair_offset[ad_level]]
    log_score += config.noise_sigma * rng.standard_normal((m, k))
    if config.propensity_in_score:
        conv_mult = np.array([f.conv_multiplier for f in p.formats.values()])
        log_score += np.log(world.baseline[user] * conv_mult[world.imp_format])[:, None]
    score = np.exp(log_score)
    del log_score
    relevance = np.ones(start)
    if config.relevance_in_truth:
        relevance[pair_offset[ad_level] : pair_offset[ad_level] + n_pairs["ad"]] = np.exp(log_q)

    u_conv = rng.random(m)
    u_click = rng.random(m)
    conv_delay_h = np.exp(np.log(p.conversion_delay_hours_median) + p.conversion_delay_sigma * rng.standard_normal(m))
    click_delay_s = np.exp(np.log(p.click_delay_seconds_median) + p.click_delay_sigma * rng.standard_normal(m))
    conv_delay_us = np.maximum(np.round(conv_delay_h * HOUR_US).astype(np.int64), 1)
    click_delay_us = np.maximum(np.round(click_delay_s * SECOND_US).astype(np.int64), 1)

    # Rank-major layout.
    pos_user, live, offset = _rank_major(n_opps)
    position = np.empty(n_users, dtype=np.int64)
    position[pos_user] = np.arange(n_users)
    layout = offset[own_rank] + position[user]  # layout index of each original opportunity
    orig = np.empty(m, dtype=np.int64)
    orig[layout] = np.arange(m)
    return Traffic(
        world=world,
        config=config,
        seed=seed,
        live=live,
        offset=offset,
        user=pos_user.astype(np.int64),
        n_opps=n_opps[pos_user],
        orig=orig,
        rank=own_rank[orig],
        ts=world.imp_ts[orig],
        fmt=world.imp_format[orig],
        cand_ad=cand_ad[orig],
        pair=pair[orig],
        pair_offset=pair_offset,
        n_pairs=n_pairs,
        relevance=relevance,
        score=score[orig],
        u_conv=u_conv[orig],
        u_click=u_click[orig],
        conv_delay_us=conv_delay_us[orig],
        click_delay_us=click_delay_us[orig],
    )
