"""The forecast guardrail: a candidate policy may not cost more than a set share of projected conversions or reach.

On the forecast table (`freqcap.domain.forecast.project`), for everyone (`all`) at each level: the candidate's
projected conversions may fall by at most `max_conversion_drop` and its reach by at most `max_reach_drop`
(relative to the live policy on the same traffic). The point forecast decides; the interval is reported beside
it. No live policy, or no forecast (no recent traffic), passes and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from freqcap.domain.policy.guardrails import Check

NAME = "projected_conversions_and_reach"


@dataclass(frozen=True)
class ForecastLimits:
    max_conversion_drop: float = 0.05
    max_reach_drop: float = 0.10


def check_forecast(table: pd.DataFrame | None, limits: ForecastLimits, *, reason: str | None = None) -> Check:
    """A guardrail `Check` on the forecast table (None: skipped, with `reason`)."""
    if table is None or table.empty:
        return Check(NAME, True, f"no forecast: {reason or 'nothing to project on'}", {"skipped": True})
    everyone = table[table["cohort"] == "all"]
    bad, values = [], {}
    for metric, limit in (("conversions", limits.max_conversion_drop), ("reach", limits.max_reach_drop)):
        for _, row in everyone[everyone["metric"] == metric].iterrows():
            drop = -float(row["change_pct"]) if np.isfinite(row["change_pct"]) else 0.0
            key = f"{metric}/{row['level']}"
            values[key] = {
                "live": round(float(row["live"]), 3),
                "candidate": round(float(row["candidate"]), 3),
                "interval": [round(float(row["low"]), 3), round(float(row["high"]), 3)],
                "change_pct": round(-drop, 4),
                "limit": -limit,
            }
            if drop > limit:
                bad.append(f"{key} {-drop:+.1%} (limit −{limit:.0%})")
    conv = everyone[(everyone["metric"] == "conversions")]
    worst = conv["change_pct"].min() if len(conv) else float("nan")
    detail = (
        "; ".join(bad)
        if bad
        else f"projected conversions {worst:+.1%} at worst (limit −{limits.max_conversion_drop:.0%}), reach within "
        f"−{limits.max_reach_drop:.0%}"
    )
    return Check(
        NAME,
        not bad,
        detail,
        {
            "limits": {"max_conversion_drop": limits.max_conversion_drop, "max_reach_drop": limits.max_reach_drop},
            "by_level": values,
            "violations": bad,
        },
    )
