"""Realized vs configured frequency: how often users actually saw an entity, against the policy's caps.

For every impression in the window (start, end] and every level, the realized count of a cap is the number of
impressions of the same entity to the same user within the cap's window ending at that impression, itself
included: (t − W, t] — the n of "the n-th impression". The caps are those the live policy applies to the user's
cohort at that level (`Policy.rules_for`); recency (`min_gap`) and stop-after-conversion constraints are not
frequencies and are left out; so are calendar caps (this day, week, month: not a rolling count). The user's signal tier is taken as of the window start from the events
(`converter`: a conversion within the features' signal lookback, else `engaged`: a click, else
`impression_only`) — what batch features told serving during the window.

Metrics (`MetricRow`s):

- `beyond_cap_share` — impressions over at least one cap (count > cap) / impressions that had a cap; per
  level (`level=ad`), per cohort (`cohort=cold/engaged`, any level) and overall (`all`, any level).
- `frequency_to_cap_p50|p90|p99|max` per level — the tail of per-(user, entity) frequency: for each pair seen in
  the window, its peak over the window of max(count / cap) across the caps; 1.0 means exactly at the cap.

`freqcap.adapters.duckdb.impressions.impression_counts` reads the events; `realized_frequency` is pure.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from freqcap.domain.events import LEVELS
from freqcap.domain.monitoring.metrics import ALL, MetricRow

log = logging.getLogger(__name__)
_US = 1_000_000
QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))


def count_column(level: str, window_seconds: int) -> str:
    return f"c_{level}_{int(window_seconds)}"


def cap_windows(policy: Any) -> dict[str, set[int]]:
    """level -> the cap windows (seconds) any rule of the policy uses at that level."""
    out: dict[str, set[int]] = {lv: set() for lv in LEVELS}
    for rule in (*policy.defaults, *policy.rules):
        out[rule.level].update(c.window_seconds for c in rule.caps if c.calendar is None)
    return out


def realized_frequency(imps: pd.DataFrame, policy: Any) -> tuple[list[MetricRow], dict[str, Any]]:
    """Beyond-cap shares and the frequency-to-cap tail (see the module docstring) for `impression_counts` rows.

    Returns the metric rows and a small per-level table for the page."""
    rows: list[MetricRow] = []
    table: dict[str, Any] = {}
    n = len(imps)
    if n == 0:
        return rows, table
    capped_any = np.zeros(n, dtype=bool)
    beyond_any = np.zeros(n, dtype=bool)
    cohort = (imps["audience"].astype(str) + "/" + imps["signal_tier"].astype(str)).to_numpy()
    for level in LEVELS:
        ratio = np.full(n, np.nan)
        beyond = np.zeros(n, dtype=bool)
        for (audience, tier), idx in imps.groupby(["audience", "signal_tier"]).indices.items():
            # Calendar caps are not in the realized-frequency counts (rolling windows only).
            caps = [c for rule in policy.rules_for(audience, tier, level) for c in rule.caps if c.calendar is None]
            if not caps:
                continue
            per_cap = np.column_stack(
                [imps[count_column(level, c.window_seconds)].to_numpy()[idx] / c.max for c in caps]
            )
            ratio[idx] = per_cap.max(axis=1)
            counts = np.column_stack([imps[count_column(level, c.window_seconds)].to_numpy()[idx] for c in caps])
            beyond[idx] = (counts > np.array([c.max for c in caps])).any(axis=1)
        capped = ~np.isnan(ratio)
        if not capped.any():
            continue
        capped_any |= capped
        beyond_any |= beyond
        share = float(beyond[capped].mean())
        rows.append(MetricRow("beyond_cap_share", f"level={level}", share, float(capped.sum())))
        pairs = (
            pd.DataFrame(
                {"user_id": imps["user_id"].to_numpy()[capped], "entity": imps[f"{level}_id"].to_numpy()[capped]}
            )
            .assign(ratio=ratio[capped])
            .groupby(["user_id", "entity"])["ratio"]
            .max()
        )
        quantiles = {}
        for label, q in QUANTILES:
            value = float(pairs.max()) if q == 1.0 else float(np.quantile(pairs.to_numpy(), q, method="linear"))
            quantiles[label] = value
            rows.append(MetricRow(f"frequency_to_cap_{label}", f"level={level}", value, float(len(pairs))))
        table[level] = {"impressions": int(capped.sum()), "beyond_cap_share": share, "pairs": len(pairs), **quantiles}
    if capped_any.any():
        rows.append(MetricRow("beyond_cap_share", ALL, float(beyond_any[capped_any].mean()), float(capped_any.sum())))
        for c in sorted(set(cohort[capped_any])):
            mask = capped_any & (cohort == c)
            rows.append(MetricRow("beyond_cap_share", f"cohort={c}", float(beyond_any[mask].mean()), float(mask.sum())))
    return rows, table
