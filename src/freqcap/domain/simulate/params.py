"""Behavioural parameters of the simulated world and the exposure–response function.

`SimulationConfig` (freqcap.config) says how big the world is (users, days, seed, start); `ModelParams`
says how people in it behave. Every number here is recorded in `ground_truth.json`, so a run can be
reproduced and checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from freqcap.domain.events import AUDIENCES, LEVELS


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LevelResponse(_Frozen):
    """Fatigue of one audience at one level of the hierarchy.

    g(n) = (1 + alpha·(n−1)·e^(−(n−2))) / (1 + ((n−1)/kappa)^beta), with g(1) = 1.

    The numerator is wear-in: a bump that peaks at n = 2 (g(2) ≈ 1 + alpha) and fades. The denominator is
    wear-out: the response halves when n − 1 = kappa (the larger kappa, the more tolerant), beta sets how
    sharply.
    `half_life_days` is the recovery half-life: a past exposure of age a counts as 2^(−a/half_life) exposures.
    """

    alpha: float = Field(ge=0.0, description="wear-in: g(2) ≈ 1 + alpha before wear-out")
    kappa: float = Field(gt=0.0, description="wear-out scale: g halves (ignoring wear-in) at n = 1 + kappa")
    beta: float = Field(ge=1.0, description="wear-out steepness")
    half_life_days: float = Field(gt=0.0, description="recovery half-life of a past exposure")


class AudienceParams(_Frozen):
    share: float = Field(gt=0.0, le=1.0)
    activity_median: float = Field(gt=0.0, description="median of the user's mean impressions per day")
    affinity_share: float = Field(ge=0.0, le=1.0, description="share of impressions from the user's affinity slots")
    baseline_mean: float = Field(gt=0.0, lt=1.0, description="mean conversion propensity b_u of a fresh impression")
    ctr_mean: float = Field(gt=0.0, lt=1.0, description="mean click propensity of a fresh impression")
    levels: dict[str, LevelResponse]

    @model_validator(mode="after")
    def _all_levels(self) -> AudienceParams:
        if sorted(self.levels) != sorted(LEVELS):
            raise ValueError(f"levels must be exactly {list(LEVELS)}")
        h = {lv: self.levels[lv].half_life_days for lv in LEVELS}
        if not h["advertiser"] >= h["campaign"] >= h["ad"]:
            raise ValueError("recovery half-life must be longest for advertiser and shortest for ad")
        return self


class FormatParams(_Frozen):
    share: float = Field(gt=0.0)
    conv_multiplier: float = Field(gt=0.0)
    click_multiplier: float = Field(gt=0.0)


def _lv(alpha: float, kappa: float, beta: float, half_life_days: float) -> LevelResponse:
    return LevelResponse(alpha=alpha, kappa=kappa, beta=beta, half_life_days=half_life_days)


DEFAULT_AUDIENCES: dict[str, AudienceParams] = {
    # Retargeting pools: active, intent-ful, tolerant of repetition, recover fast; wear-in at campaign/ad.
    "high_intent": AudienceParams(
        share=0.15,
        activity_median=4.0,
        affinity_share=0.85,
        baseline_mean=0.04,
        ctr_mean=0.03,
        levels={
            "advertiser": _lv(0.00, 14.0, 2.0, 4.0),
            "campaign": _lv(0.10, 10.0, 2.0, 1.5),
            "ad": _lv(0.05, 7.0, 2.0, 0.5),
        },
    ),
    "returning": AudienceParams(
        share=0.35,
        activity_median=3.2,
        affinity_share=0.75,
        baseline_mean=0.016,
        ctr_mean=0.022,
        levels={
            "advertiser": _lv(0.00, 9.0, 2.0, 5.0),
            "campaign": _lv(0.06, 6.0, 2.0, 2.0),
            "ad": _lv(0.03, 4.5, 2.0, 0.75),
        },
    ),
    # Prospecting: the first impression converts best, fatigue sets in fast and lingers.
    "cold": AudienceParams(
        share=0.50,
        activity_median=2.2,
        affinity_share=0.55,
        baseline_mean=0.0065,
        ctr_mean=0.015,
        levels={
            "advertiser": _lv(0.00, 5.0, 1.6, 7.0),
            "campaign": _lv(0.00, 3.5, 1.6, 3.0),
            "ad": _lv(0.00, 2.5, 1.6, 1.0),
        },
    ),
}

DEFAULT_FORMATS: dict[str, FormatParams] = {
    "feed": FormatParams(share=0.45, conv_multiplier=1.0, click_multiplier=1.0),
    "stories": FormatParams(share=0.20, conv_multiplier=0.8, click_multiplier=0.7),
    "reels": FormatParams(share=0.20, conv_multiplier=0.6, click_multiplier=0.55),
    "search": FormatParams(share=0.05, conv_multiplier=1.8, click_multiplier=2.2),
    "video": FormatParams(share=0.10, conv_multiplier=0.9, click_multiplier=0.8),
}

# Relative traffic by UTC hour of day (users are treated as living in one time zone): a night trough around
# 03–04h, a lunch shoulder and an evening peak around 20h.
DEFAULT_HOURLY_WEIGHTS: tuple[float, ...] = (
    0.45, 0.30, 0.20, 0.15, 0.14, 0.18, 0.35, 0.65, 0.85, 0.90, 0.92, 0.98,
    1.05, 1.00, 0.95, 0.95, 1.00, 1.10, 1.25, 1.45, 1.55, 1.45, 1.10, 0.75,
)  # fmt: skip

# Relative traffic by day of week, Monday first.
DEFAULT_WEEKDAY_WEIGHTS: tuple[float, ...] = (0.95, 0.95, 0.97, 1.0, 1.05, 1.10, 1.08)


class ModelParams(_Frozen):
    """Everything about behaviour; the defaults make the demo world."""

    # --- ad catalog: advertiser -> campaign -> ad, uneven (Zipf-like) sizes -----------------------
    n_advertisers: int = Field(40, gt=0)
    advertiser_popularity_exponent: float = Field(1.0, ge=0.0)
    campaigns_zipf_a: float = Field(1.7, gt=1.0)
    max_campaigns_per_advertiser: int = Field(15, gt=0)
    ads_zipf_a: float = Field(1.6, gt=1.0)
    max_ads_per_campaign: int = Field(12, gt=0)
    campaign_weight_exponent: float = Field(0.8, ge=0.0)
    ad_weight_exponent: float = Field(0.8, ge=0.0)
    # Signal fragmentation (freqcap.domain.monitoring.fragmentation): when > 0, the most popular advertiser's
    # first campaign runs this many ads with equal weight, its delivery split evenly over them. 0: off (the
    # catalog is then exactly what the draws above give).
    fragmented_campaign_ads: int = Field(0, ge=0)

    # --- users ------------------------------------------------------------------------------------
    audiences: dict[str, AudienceParams] = DEFAULT_AUDIENCES
    activity_sigma: float = Field(1.1, ge=0.0, description="log-sd of the user's mean impressions per day")
    activity_max_per_day: float = Field(100.0, gt=0.0)
    day_noise_shape: float = Field(3.0, gt=0.0, description="gamma shape of day-to-day activity noise")
    baseline_sigma: float = Field(0.7, ge=0.0, description="log-sd of the conversion propensity b_u")
    activity_baseline_corr: float = Field(
        0.7, ge=-1.0, le=1.0, description="corr(log activity, log b_u): survivorship in the data"
    )
    click_baseline_elasticity: float = Field(0.5, ge=0.0, description="p_click ∝ (b_u / mean b)^elasticity")
    min_affinity_slots: int = Field(2, gt=0)
    max_affinity_slots: int = Field(6, gt=0)
    slot_campaign_stickiness: float = Field(0.85, ge=0.0, le=1.0)

    # --- traffic shape ----------------------------------------------------------------------------
    formats: dict[str, FormatParams] = DEFAULT_FORMATS
    hourly_weights: tuple[float, ...] = DEFAULT_HOURLY_WEIGHTS
    weekday_weights: tuple[float, ...] = DEFAULT_WEEKDAY_WEIGHTS
    session_impressions_mean: float = Field(6.0, gt=0.0)
    session_minutes_median: float = Field(8.0, gt=0.0)
    session_minutes_sigma: float = Field(0.7, ge=0.0)

    # --- responses --------------------------------------------------------------------------------
    p_max: float = Field(0.5, gt=0.0, le=1.0, description="ceiling of any per-impression probability")
    click_delay_seconds_median: float = Field(4.0, gt=0.0)
    click_delay_sigma: float = Field(0.6, ge=0.0)
    conversion_delay_hours_median: float = Field(6.0, gt=0.0)
    conversion_delay_sigma: float = Field(1.2, ge=0.0)
    value_median: float = Field(45.0, gt=0.0)
    advertiser_value_sigma: float = Field(0.6, ge=0.0)
    conversion_value_sigma: float = Field(0.5, ge=0.0)

    # --- ground truth reporting -------------------------------------------------------------------
    curve_max_n: int = Field(30, ge=2)
    default_floor: float = Field(0.5, gt=0.0, le=1.0)
    floors: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)

    @model_validator(mode="after")
    def _consistent(self) -> ModelParams:
        if sorted(self.audiences) != sorted(AUDIENCES):
            raise ValueError(f"audiences must be exactly {list(AUDIENCES)}")
        if abs(sum(a.share for a in self.audiences.values()) - 1.0) > 1e-9:
            raise ValueError("audience shares must sum to 1")
        if len(self.hourly_weights) != 24 or min(self.hourly_weights) <= 0:
            raise ValueError("hourly_weights needs 24 positive values")
        if len(self.weekday_weights) != 7 or min(self.weekday_weights) <= 0:
            raise ValueError("weekday_weights needs 7 positive values")
        if self.min_affinity_slots > self.max_affinity_slots:
            raise ValueError("min_affinity_slots must not exceed max_affinity_slots")
        if not self.formats:
            raise ValueError("at least one format is required")
        return self

    def audience_names(self) -> tuple[str, ...]:
        """Audiences in the contract's order (index = audience code used inside the model)."""
        return tuple(a for a in AUDIENCES if a in self.audiences)

    def format_names(self) -> tuple[str, ...]:
        return tuple(self.formats)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def response_multiplier(n: np.ndarray | float, alpha, kappa, beta) -> np.ndarray:
    """g(n) for (effective) exposure counts n ≥ 1, vectorized (parameters scalars or arrays); g(1) = 1.

    g(n) = (1 + alpha·(n−1)·e^(−(n−2))) / (1 + ((n−1)/kappa)^beta). See `LevelResponse`.
    """
    m = np.asarray(n, dtype=np.float64) - 1.0
    wear_out = np.power(m / kappa, beta)  # scalar beta = 2 takes numpy's fast squaring path
    wear_out += 1.0
    if np.any(np.asarray(alpha) != 0):
        return (1.0 + alpha * m * np.exp(1.0 - m)) / wear_out
    return 1.0 / wear_out
