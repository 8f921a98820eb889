"""Fairness audit: does each audience cohort get the cap its own exposure–response curve supports? (pure)

Per cohort (`<audience>/<signal_tier>`) and level, side by side:

- **policy cap** — the most impressions of one entity the live policy lets one user see within the curve's window
  W (the level's longest feature window, the `window` column of the caps table): over the caps the policy applies
  to the cohort at that level (`Policy.rules_for`), min of `max` for a cap window ≥ W and `max · ⌈W / window⌉` for
  a shorter one (a 1-day cap of 2 allows up to 2 · 28 in 28 days). None: the cohort is uncapped there.
- **curve cap** (cohort rows the fit marked `usable`) and its plausible range [cap_low, cap_high] — where the cohort's fitted curve says the next
  impression stops paying (`freqcap.domain.curves.caps`; `censored`: the curve never fell below the floor, the cap
  is a lower bound; `fallback`: the cohort had too little data and carries its audience's or everyone's curve).
- **cap ÷ curve** (`cap_to_curve_ratio`) — policy cap / max(curve cap, 1). Far below 1: the cohort is suppressed
  beyond what its curve supports (it loses impressions that still convert); far above: it is capped far past the
  point where impressions stop paying (an uncapped cohort counts as infinitely far above). For a censored curve
  only the "below" side is judged (where the curve ends is not known), so no ratio row is emitted above 1.
- **realized frequency** over the window's (user, entity) pairs: the peak windowed count (over W) of each pair,
  its mean and p90; `beyond_curve_share` — pairs past the curve cap; `at_cap_share` — pairs that reached the
  policy cap (an events-side cap-hit rate); and the cohort's decision-log cap hit rate (all levels) from `metrics`.

Metric rows, segment `cohort=<audience>/<tier>,level=<level>`, support = the curve's support (first-exposure
impressions): `cap_to_curve_ratio`, `beyond_curve_share`, `at_cap_share`. The alarm rules `cohort_suppressed`
(ratio below) and `cohort_overcapped` (ratio above) in alerts.yaml hold the thresholds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from freqcap.config import parse_duration
from freqcap.domain.events import LEVELS
from freqcap.domain.monitoring.frequency import count_column
from freqcap.domain.monitoring.metrics import MetricRow

UNCAPPED_RATIO = math.inf


def curve_windows(caps: pd.DataFrame) -> dict[str, int]:
    """level -> the curve window W (seconds) of the caps table."""
    out: dict[str, int] = {}
    for level, window in caps[["level", "window"]].drop_duplicates().itertuples(index=False):
        out[str(level)] = int(parse_duration(str(window)).total_seconds())
    return out


def effective_cap(policy: Any, audience: str, tier: str, level: str, window_seconds: int) -> int | None:
    """The most impressions within `window_seconds` the policy's caps allow (see the module docstring)."""
    bounds = [
        c.max if c.window_seconds >= window_seconds else c.max * math.ceil(window_seconds / c.window_seconds)
        for rule in policy.rules_for(audience, tier, level)
        for c in rule.caps
    ]
    return min(bounds) if bounds else None


def cohort_caps(caps: pd.DataFrame) -> pd.DataFrame:
    """The cohort rows of a caps table (`caps.parquet` of a curves fit) that carry a curve: rows the fit marked
    not `usable` (no support anywhere, no cap proposed) say nothing about where impressions stop paying."""
    rows = caps[caps["kind"] == "cohort"] if "kind" in caps.columns else caps[caps["cohort"].str.count("/") == 1]
    if "usable" in rows.columns:
        rows = rows[rows["usable"].astype(bool)]
    return rows[~rows["cohort"].str.endswith("/all")]


def fairness_audit(
    imps: pd.DataFrame, policy: Any, caps: pd.DataFrame, cohort_hit_rates: dict[str, float] | None = None
) -> tuple[list[dict[str, Any]], list[MetricRow]]:
    """One row per cohort × level of the caps table (see the module docstring) and its metric rows.

    `imps` are `impression_counts` rows with, per level, the count column of that level's curve window."""
    hit = cohort_hit_rates or {}
    windows = curve_windows(caps)
    table: list[dict[str, Any]] = []
    rows: list[MetricRow] = []
    for r in cohort_caps(caps).sort_values(["cohort", "level"]).itertuples(index=False):
        cohort, level = str(r.cohort), str(r.level)
        if level not in LEVELS:
            continue
        audience, tier = cohort.split("/", 1)
        w = windows[level]
        pcap = effective_cap(policy, audience, tier, level, w)
        curve_cap = int(r.cap)
        ratio = UNCAPPED_RATIO if pcap is None else pcap / max(curve_cap, 1)
        mine = imps[(imps["audience"] == audience) & (imps["signal_tier"] == tier)] if len(imps) else imps
        col = count_column(level, w)
        if len(mine) and col in mine.columns:
            peaks = mine.groupby(["user_id", f"{level}_id"])[col].max().to_numpy(dtype=float)
        else:
            peaks = np.array([], dtype=float)
        n = len(peaks)
        beyond = float((peaks > curve_cap).mean()) if n else None
        at_cap = float((peaks >= pcap).mean()) if n and pcap is not None else (0.0 if n else None)
        censored = bool(getattr(r, "censored", False))
        low = int(getattr(r, "cap_low", curve_cap))
        high = int(getattr(r, "cap_high", curve_cap))
        support = float(getattr(r, "support", 0) or 0)
        table.append(
            {
                "cohort": cohort,
                "level": level,
                "window": str(r.window),
                "policy_cap": pcap,
                "curve_cap": curve_cap,
                "cap_low": low,
                "cap_high": high,
                "censored": censored,
                "fallback": str(getattr(r, "fallback", "none")),
                "support": support,
                "ratio": None if math.isinf(ratio) else ratio,
                "uncapped": pcap is None,
                "pairs": n,
                "mean_frequency": float(peaks.mean()) if n else None,
                "p90_frequency": float(np.quantile(peaks, 0.9)) if n else None,
                "beyond_curve_share": beyond,
                "at_cap_share": at_cap,
                "cap_hit_rate": hit.get(cohort),
            }
        )
        seg = f"cohort={cohort},level={level}"
        if not (censored and ratio > 1.0):
            value = ratio if not math.isinf(ratio) else 1e9  # JSON has no infinity; "uncapped" is far above
            rows.append(MetricRow("cap_to_curve_ratio", seg, float(value), support))
        if n:
            rows.append(MetricRow("beyond_curve_share", seg, float(beyond), float(n)))  # type: ignore[arg-type]
            rows.append(MetricRow("at_cap_share", seg, float(at_cap), float(n)))  # type: ignore[arg-type]
    return table, rows
