"""Signal fragmentation: a campaign whose delivery is split over too many creatives starves each of the
conversions a bidding or creative-optimization system needs to learn (pure pandas).

Input: one row per (campaign, ad) that served at least one impression in the window, with its impressions and
conversions there (`freqcap.adapters.duckdb.impressions.creative_counts`). Per campaign:

- **conversions per creative per week** = a creative's conversions in the window × 7 days / window (each
  creative's in `per_creative`, their median and max);
- **share below learning** = creatives whose weekly conversions are below `learning_conversions_per_week` /
  creatives (the platforms' "learning phase" needs about 50 a week; scale it to your traffic);
- **HHI** (Herfindahl–Hirschman index) of impressions across the campaign's creatives = Σ shareᵢ², from 1/n
  (delivery spread evenly over n creatives) to 1 (one creative); its inverse is the **effective number of
  creatives**; the same over conversions (`conversion_hhi`, empty without conversions);
- **recommendation**: `consolidate` when consolidating would let creatives learn — the campaign as a whole has at
  least the threshold's weekly conversions, at least `min_share_below` of its creatives are below it, and it runs
  more creatives than it can feed: `target_creatives` = ⌊campaign conversions per week / threshold⌋ (≥ 1);
  `underfunded` when even one creative would stay below the threshold; `ok` otherwise.

Metric rows: `creatives_below_learning_share` [all] (over every creative), `campaigns_to_consolidate` [all], and
per campaign to consolidate `creatives_below_learning_share`, `creative_hhi` [campaign=<id>].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from freqcap.domain.monitoring.metrics import ALL, MetricRow

WEEK_SECONDS = 7 * 86_400.0
COLUMNS = ("campaign_id", "ad_id", "impressions", "conversions")


@dataclass(frozen=True)
class FragmentationParams:
    window_seconds: float
    learning_conversions_per_week: float = 50.0
    min_share_below: float = 0.5


def _hhi(values: pd.Series) -> float:
    total = float(values.sum())
    return float(((values / total) ** 2).sum()) if total > 0 else math.nan


def fragmentation(counts: pd.DataFrame, params: FragmentationParams) -> tuple[pd.DataFrame, list[MetricRow]]:
    """Per campaign diagnostics (one row each, sorted: to consolidate first, then by share below) and metric rows."""
    columns = [
        "campaign_id", "creatives", "impressions", "conversions", "conversions_per_week", "per_creative",
        "median_per_creative", "max_per_creative", "creatives_below",
        "share_below", "hhi", "effective_creatives", "conversion_hhi", "top_creative_share", "target_creatives",
        "recommendation",
    ]  # fmt: skip
    if counts.empty:
        return pd.DataFrame(columns=columns), []
    scale = WEEK_SECONDS / params.window_seconds
    threshold = params.learning_conversions_per_week
    out = []
    for campaign, g in counts.groupby("campaign_id", sort=True):
        weekly = g["conversions"].astype(float) * scale
        below = int((weekly < threshold).sum())
        n = len(g)
        total_week = float(weekly.sum())
        hhi = _hhi(g["impressions"].astype(float))
        target = max(1, int(total_week // threshold))
        share_below = below / n
        if total_week < threshold:
            rec = "underfunded"
        elif n > target and share_below >= params.min_share_below:
            rec = "consolidate"
        else:
            rec = "ok"
        out.append(
            {
                "campaign_id": str(campaign),
                "creatives": n,
                "impressions": int(g["impressions"].sum()),
                "conversions": int(g["conversions"].sum()),
                "conversions_per_week": total_week,
                "per_creative": {str(a): float(v) for a, v in sorted(zip(g["ad_id"], weekly, strict=True))},
                "median_per_creative": float(weekly.median()),
                "max_per_creative": float(weekly.max()),
                "creatives_below": below,
                "share_below": share_below,
                "hhi": hhi,
                "effective_creatives": 1.0 / hhi if hhi > 0 else math.nan,
                "conversion_hhi": _hhi(g["conversions"].astype(float)),
                "top_creative_share": float(g["impressions"].max() / g["impressions"].sum()),
                "target_creatives": target,
                "recommendation": rec,
            }
        )
    table = pd.DataFrame(out, columns=columns)
    table = table.assign(_o=table["recommendation"].map({"consolidate": 0, "underfunded": 1, "ok": 2}))
    table = table.sort_values(["_o", "share_below", "creatives"], ascending=[True, False, False]).drop(columns="_o")
    weekly_all = counts["conversions"].astype(float) * scale
    rows = [
        MetricRow("creatives_below_learning_share", ALL, float((weekly_all < threshold).mean()), float(len(counts))),
        MetricRow("campaigns_to_consolidate", ALL, float((table["recommendation"] == "consolidate").sum()),
                  float(len(table))),
    ]  # fmt: skip
    for r in table[table["recommendation"] == "consolidate"].itertuples():
        seg = f"campaign={r.campaign_id}"
        rows.append(MetricRow("creatives_below_learning_share", seg, float(r.share_below), float(r.creatives)))
        rows.append(MetricRow("creative_hhi", seg, float(r.hhi), float(r.impressions)))
    return table.reset_index(drop=True), rows


def recommendation_text(row: dict) -> str:
    """One sentence for the page."""
    if row["recommendation"] == "consolidate":
        return (
            f"consolidate {row['creatives']} creatives into at most {row['target_creatives']}: "
            f"{row['creatives_below']} of them get fewer than the learning threshold's conversions a week"
        )
    if row["recommendation"] == "underfunded":
        return "below the learning threshold even as one creative: consolidating alone will not let it learn"
    return "ok"
