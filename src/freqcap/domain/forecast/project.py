"""What-if forecast of a candidate policy against the live one, per cohort × level, with intervals (pure).

On the recent traffic (`freqcap.domain.forecast.replay`: which recorded impressions each policy lets through),
per cohort (audience × signal tier as of the impression; `<audience>/all`; `all`) and level:

- `impressions`: recorded impressions of the period the policy shows;
- `conversions`: the credit of those impressions (the curve fit's EM credit, survival-weighted, over mature
  impressions), each scaled by the cohort's curve at that level for the rank it would have under the policy —
  ratio(n′)/ratio(n), n′ its rank among the impressions the policy shows, n the recorded one (a capped sibling
  ad lowers a kept impression's campaign count, and the curve says what that is worth) — and extended from the
  mature impressions to all shown ones (conversions per mature shown impression × shown impressions). Each
  level's row uses that level's curve alone (the raw-count curves already carry the other levels' co-movement);
- `reach`: (user, entity) pairs of that level with at least one shown impression;
- `past_cap_share`: share of the period's recorded impressions past the policy's cap at that level.

**Intervals** come from a Poisson bootstrap over users (`bootstrap` replicates; the same weights for both
policies, so changes are paired). The stated interval is a *prediction* interval for a coming period like the
recent one: point ± z · √2 · SE, the √2 for the new period's own sampling noise on top of the estimate's. Not
included: the curves' own uncertainty beyond what resampling users carries, and a shift of traffic between
periods (seasonality, new campaigns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from freqcap.domain.curves.core import CurveFit
from freqcap.domain.curves.sequences import TIER_NAMES, EventArrays
from freqcap.domain.events import LEVELS
from freqcap.domain.forecast.replay import PolicyReplay, policy_tiers, replay_policy
from freqcap.domain.policy import Policy

METRICS = ("impressions", "conversions", "reach", "past_cap_share")
FORECAST_COLUMNS = (
    "cohort",
    "level",
    "metric",
    "live",
    "candidate",
    "change",
    "change_pct",
    "low",
    "high",
    "change_low",
    "change_high",
)


@dataclass(frozen=True)
class ForecastParams:
    bootstrap: int = 200
    confidence: float = 0.95
    seed: int = 7
    signal_lookback_us: int = 28 * 86_400_000_000
    longest_window_us: int = 28 * 86_400_000_000


def _ratio_table(fit: CurveFit, labels: list[str], max_n: int) -> np.ndarray:
    """(labels, levels, max_n + 1) curve ratio rate(n)/rate(1), smoothed; 1 where a label has no curve."""
    out = np.ones((len(labels), len(LEVELS), max_n + 1))
    pub = fit.published
    if pub.empty or "rate_smooth" not in pub.columns:
        return out
    for (cohort, level), c in pub.groupby(["cohort", "level"]):
        if cohort not in labels or level not in LEVELS:
            continue
        r = c.sort_values("n")["rate_smooth"].to_numpy(dtype=np.float64)
        if not len(r) or not np.isfinite(r[0]) or r[0] <= 0:
            continue
        ratio = np.maximum(r / r[0], 0.0)
        row = np.full(max_n + 1, ratio[-1])
        row[1 : min(len(ratio), max_n) + 1] = ratio[:max_n]
        row[0] = ratio[0]
        out[labels.index(cohort), LEVELS.index(level)] = row
    return out


def _labels(ev: EventArrays) -> list[str]:
    return [f"{a}/{t}" for a in ev.audiences for t in TIER_NAMES] + [f"{a}/all" for a in ev.audiences] + ["all"]


def _per_user(
    ev: EventArrays,
    rp: PolicyReplay,
    base: PolicyReplay,
    fit: CurveFit,
    in_period: np.ndarray,
    groups: list[np.ndarray],
    ratios: np.ndarray,
    n_labels: int,
) -> dict[str, np.ndarray]:
    """Per-user sums (users × (labels · levels)) of each ingredient of the metrics."""
    u, m = ev.n_users, ev.n_impressions
    size = n_labels * len(LEVELS)
    maturity = fit.maturity
    mature = maturity.mature if maturity is not None else np.ones(m, dtype=bool)
    weight = maturity.weight if maturity is not None else np.ones(m)
    y = fit.credit.y * weight
    max_n = ratios.shape[2] - 1
    shown = rp.shown & in_period
    sums = {k: np.zeros((u, size)) for k in ("imp", "opp", "past", "conv_m", "imp_m", "reach")}

    def add(name: str, col: np.ndarray, mask: np.ndarray, values: np.ndarray | None = None) -> None:
        idx = np.flatnonzero(mask)
        flat = ev.imp_user[idx].astype(np.int64) * size + col[idx]
        w = None if values is None else values[idx]
        sums[name] += np.bincount(flat, weights=w, minlength=u * size).reshape(u, size)

    for j, lv in enumerate(LEVELS):
        n_new = np.minimum(rp.rank[:, j], max_n)
        n_old = np.minimum(base.rank[:, j], max_n)
        # first shown in-period impression of each (user, entity) pair: one reach each
        key = ev.imp_user.astype(np.int64) * max(ev.n_entities[lv], 1) + ev.imp_entity[lv]
        sidx = np.flatnonzero(shown)
        _, first = np.unique(key[sidx], return_index=True)
        first_shown = np.zeros(m, dtype=bool)
        first_shown[sidx[first]] = True
        for g in groups:
            col = g * len(LEVELS) + j
            adj = ratios[g, j, n_new] / np.maximum(ratios[g, j, n_old], 1e-12)
            add("imp", col, shown)
            add("opp", col, in_period)
            add("past", col, in_period & rp.past_cap[:, j])
            add("imp_m", col, shown & mature)
            add("conv_m", col, shown & mature, y * adj)
            add("reach", col, first_shown)
    return sums


def _metrics(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Metric values from (bootstrapped) totals; works on (G,) and (B, G) arrays alike."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "impressions": t["imp"],
            "conversions": np.where(t["imp_m"] > 0, t["conv_m"] / t["imp_m"] * t["imp"], np.nan),
            "reach": t["reach"],
            "past_cap_share": np.where(t["opp"] > 0, t["past"] / t["opp"], np.nan),
        }


def _bootstrap_totals(
    sums: dict[str, dict[str, np.ndarray]], params: ForecastParams, n_users: int, block: int = 20_000
) -> dict[str, dict[str, np.ndarray]]:
    """(B, G) bootstrap totals of every ingredient, Poisson weights per user drawn block by block (memory stays
    B × block, whatever the number of users); one weight per user shared by both policies (paired)."""
    rng = np.random.default_rng(params.seed)
    out = {k: {n: np.zeros((params.bootstrap, s.shape[1])) for n, s in v.items()} for k, v in sums.items()}
    for lo in range(0, n_users, block):
        hi = min(lo + block, n_users)
        w = rng.poisson(1.0, size=(params.bootstrap, hi - lo)).astype(np.float64)
        for k, v in sums.items():
            for n, s in v.items():
                out[k][n] += w @ s[lo:hi]
    return out


def forecast_policies(
    ev: EventArrays,
    fit: CurveFit,
    live: Policy | None,
    candidate: Policy,
    period_start_us: int,
    params: ForecastParams | None = None,
) -> pd.DataFrame:
    """The forecast table (`FORECAST_COLUMNS`, one row per cohort × level × metric); see the module docstring.

    `ev`: recent events from `period_start_us` − the longest cap window on (history) to the data end; `fit`: the
    curve fit on those same events (its credit, maturity and curves)."""
    params = params or ForecastParams()
    in_period = ev.imp_ts >= period_start_us
    tiers = policy_tiers(ev, params.signal_lookback_us)
    labels = _labels(ev)
    aud = ev.user_audience[ev.imp_user].astype(np.int64)
    n_aud = len(ev.audiences)
    groups = [aud * len(TIER_NAMES) + tiers, n_aud * len(TIER_NAMES) + aud, np.full(ev.n_impressions, len(labels) - 1)]
    ratios = _ratio_table(fit, labels, 60)
    base = replay_policy(ev, None, period_start_us, tiers, params.longest_window_us)
    runs = {
        "live": replay_policy(ev, live, period_start_us, tiers, params.longest_window_us),
        "candidate": replay_policy(ev, candidate, period_start_us, tiers, params.longest_window_us),
    }
    sums = {k: _per_user(ev, rp, base, fit, in_period, groups, ratios, len(labels)) for k, rp in runs.items()}
    point = {k: _metrics({n: s.sum(axis=0) for n, s in v.items()}) for k, v in sums.items()}
    boot = {k: _metrics(t) for k, t in _bootstrap_totals(sums, params, ev.n_users).items()}
    z = float(stats.norm.ppf(0.5 + params.confidence / 2.0)) * np.sqrt(2.0)
    rows = []
    for metric in METRICS:
        live_v, cand_v = point["live"][metric], point["candidate"][metric]
        se = np.nanstd(boot["candidate"][metric], axis=0)
        se_change = np.nanstd(boot["candidate"][metric] - boot["live"][metric], axis=0)
        for g, label in enumerate(labels):
            for j, lv in enumerate(LEVELS):
                c = g * len(LEVELS) + j
                if sums["live"]["opp"][:, c].sum() == 0:
                    continue
                change = cand_v[c] - live_v[c]
                rows.append(
                    {
                        "cohort": label,
                        "level": lv,
                        "metric": metric,
                        "live": float(live_v[c]),
                        "candidate": float(cand_v[c]),
                        "change": float(change),
                        "change_pct": float(change / live_v[c]) if live_v[c] else np.nan,
                        "low": float(cand_v[c] - z * se[c]),
                        "high": float(cand_v[c] + z * se[c]),
                        "change_low": float(change - z * se_change[c]),
                        "change_high": float(change + z * se_change[c]),
                    }
                )
    return pd.DataFrame(rows, columns=list(FORECAST_COLUMNS))
