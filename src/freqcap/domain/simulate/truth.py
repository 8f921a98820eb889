"""The simulator's ground truth: declared exposure–response curves, true caps, and the world's parameters.

`ground_truth.json` layout (all keys always present):

- `schema_version`, `generator`, `seed`, `config` (the SimulationConfig), `window` {`start`, `end`} (ISO UTC)
- `model`: every behavioural parameter (`ModelParams`, JSON)
- `response_function`: the formulas (`g`, `n_eff`, `p_conv`, `p_click`) as text
- `levels`, `audiences_order`, `default_floor`, `floors`
- `formats`: {format: {share, conv_multiplier, click_multiplier}}, `mean_conv_multiplier`
- `curves`: {audience: {level: {
      `params` {alpha, kappa, beta}, `half_life_days`,
      `n` [1..curve_max_n], `g` [g(n)] (response multiplier for fresh exposures),
      `marginal_rate` [mean b_u × mean format multiplier × g(n)] (other levels at first exposure),
      `first_rate`, `true_cap` (at `default_floor`), `true_caps` {"0.3": cap, ...}}}}
- `audiences`: {audience: {share, activity_median, baseline_mean, ctr_mean, affinity_share, and realized
  `users`, `impressions`, `mean_baseline`}}
- `survivorship`: {activity_sigma, baseline_sigma, activity_baseline_corr,
  realized_corr_log_activity_log_baseline, description}
- `delays`, `attribution`, `counts` (users, advertisers, campaigns, ads, impressions, clicks, conversions
  (emitted), conversions_latent, conversions_truncated, clicks_truncated, events)

The true cap for floor R is the last n ≥ 1 such that marginal_rate(m) ≥ R × marginal_rate(1) for every m ≤ n
(capped at the table length when the curve never falls below the floor within it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from freqcap.domain.events import LEVELS
from freqcap.domain.simulate.model import World
from freqcap.domain.simulate.params import ModelParams, response_multiplier

SCHEMA_VERSION = 1


def cap_from_curve(rates: Sequence[float], floor: float) -> int:
    """The last n (1-based) whose rate, and every rate before it, stays ≥ floor × rates[0]."""
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    r = np.asarray(rates, dtype=np.float64)
    if r.size == 0 or r[0] <= 0:
        raise ValueError("the curve needs a positive first-exposure rate")
    below = np.flatnonzero(r < floor * r[0])
    return int(below[0]) if below.size else int(r.size)


def true_cap(ground_truth: dict[str, Any], audience: str, level: str, floor: float | None = None) -> int:
    """The true cap of `audience` at `level` for a relative floor (default: the ground truth's default floor).

    `ground_truth` is the parsed `ground_truth.json`. The cap is the last exposure n whose declared marginal
    conversion rate is still ≥ floor × the first-exposure rate.
    """
    curves = ground_truth["curves"]
    if audience not in curves:
        raise KeyError(f"unknown audience {audience!r}; known: {sorted(curves)}")
    if level not in curves[audience]:
        raise KeyError(f"unknown level {level!r}; known: {sorted(curves[audience])}")
    floor = ground_truth["default_floor"] if floor is None else floor
    return cap_from_curve(curves[audience][level]["marginal_rate"], floor)


def declared_curves(p: ModelParams) -> dict[str, dict[str, dict[str, Any]]]:
    n = np.arange(1, p.curve_max_n + 1, dtype=np.float64)
    shares = np.array([f.share for f in p.formats.values()])
    mean_mult = float(np.dot(shares / shares.sum(), [f.conv_multiplier for f in p.formats.values()]))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for aud in p.audience_names():
        a = p.audiences[aud]
        out[aud] = {}
        for level in LEVELS:
            lv = a.levels[level]
            g = response_multiplier(n, lv.alpha, lv.kappa, lv.beta)
            rate = a.baseline_mean * mean_mult * g
            out[aud][level] = {
                "params": {"alpha": lv.alpha, "kappa": lv.kappa, "beta": lv.beta},
                "half_life_days": lv.half_life_days,
                "n": [int(x) for x in n],
                "g": [float(x) for x in g],
                "marginal_rate": [float(x) for x in rate],
                "first_rate": float(rate[0]),
                "true_cap": cap_from_curve(rate, p.default_floor),
                "true_caps": {_floor_key(f): cap_from_curve(rate, f) for f in p.floors},
            }
    return out


def _floor_key(floor: float) -> str:
    return f"{floor:g}"


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat()


def ground_truth(world: World, n_events: int) -> dict[str, Any]:
    p = world.params
    shares = np.array([f.share for f in p.formats.values()])
    aud_names = p.audience_names()
    imp_aud = world.audience[world.imp_user]
    audiences: dict[str, Any] = {}
    for code, aud in enumerate(aud_names):
        a = p.audiences[aud]
        members = world.audience == code
        audiences[aud] = {
            "share": a.share,
            "activity_median": a.activity_median,
            "affinity_share": a.affinity_share,
            "baseline_mean": a.baseline_mean,
            "ctr_mean": a.ctr_mean,
            "users": int(members.sum()),
            "impressions": int((imp_aud == code).sum()),
            "mean_baseline": float(world.baseline[members].mean()) if members.any() else None,
        }
    log_act = np.log(world.activity)
    log_b = np.log(world.baseline)
    corr = float(np.corrcoef(log_act, log_b)[0, 1]) if len(log_act) > 2 else None
    n_conv_latent = len(world.conv_imp)
    n_conv = int(world.conv_emitted.sum())
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": "freqcap.domain.simulate",
        "seed": world.config.seed,
        "config": world.config.model_dump(mode="json"),
        "window": {"start": _iso(world.start_us), "end": _iso(world.end_us)},
        "model": p.to_json_dict(),
        "response_function": {
            "g": "g(n) = (1 + alpha*(n-1)*exp(-(n-2))) / (1 + ((n-1)/kappa)**beta)",
            "n_eff": "n_eff_L = 1 + sum over the user's prior impressions of the same level-L entity of "
            "2**(-age_days / half_life_days[audience][L])",
            "p_conv": "min(p_max, baseline_u * conv_multiplier[format] * prod_L g_{audience,L}(n_eff_L))",
            "p_click": "min(p_max, click_propensity_u * click_multiplier[format] * prod_L g_{audience,L}(n_eff_L))",
            "p_max": p.p_max,
            "marginal_rate": "baseline_mean[audience] * mean_conv_multiplier * g(n), other levels at n = 1",
        },
        "levels": list(LEVELS),
        "audiences_order": list(aud_names),
        "default_floor": p.default_floor,
        "floors": list(p.floors),
        "formats": {name: f.model_dump() for name, f in p.formats.items()},
        "mean_conv_multiplier": float(np.dot(shares / shares.sum(), [f.conv_multiplier for f in p.formats.values()])),
        "curves": declared_curves(p),
        "audiences": audiences,
        "survivorship": {
            "activity_sigma": p.activity_sigma,
            "baseline_sigma": p.baseline_sigma,
            "activity_baseline_corr": p.activity_baseline_corr,
            "realized_corr_log_activity_log_baseline": corr,
            "description": "log activity and log baseline propensity share a latent factor: heavy users, who "
            "reach high exposure counts, convert more at any exposure count, so rates grouped by final "
            "exposure count are biased upwards at high counts; fixed cohorts are not.",
        },
        "delays": {
            "click_seconds": {"median": p.click_delay_seconds_median, "log_sigma": p.click_delay_sigma},
            "conversion_hours": {
                "median": p.conversion_delay_hours_median,
                "log_sigma": p.conversion_delay_sigma,
            },
        },
        "attribution": {
            "rule": "last_touch_advertiser",
            "description": "a conversion event carries the ad, campaign and format of the user's last "
            "impression of the causal advertiser at or before the conversion time; "
            "truth/impressions.parquet marks the causal impression",
        },
        "counts": {
            "users": len(world.audience),
            "advertisers": world.catalog.n_advertisers,
            "campaigns": world.catalog.n_campaigns,
            "ads": world.catalog.n_ads,
            "impressions": world.n_impressions,
            "clicks": len(world.click_imp),
            "clicks_truncated": int(world.clicked.sum()) - len(world.click_imp),
            "conversions": n_conv,
            "conversions_latent": n_conv_latent,
            "conversions_truncated": n_conv_latent - n_conv,
            "events": n_events,
        },
    }
