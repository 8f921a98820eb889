"""The what-if forecast as a picture: per cohort, the candidate's projected change vs the live policy, with its
interval (freqcap.domain.forecast.project), one panel per metric, at the ad level (the finest)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PANELS = ("impressions", "conversions", "reach")


def plot_forecast(table: pd.DataFrame, out: Path, *, level: str = "ad", title: str = "") -> Path:
    """Horizontal bars of the relative change per cohort with the interval of the change as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 0.35 * 14 + 1.5), sharey=True)
    for ax, metric in zip(axes, PANELS, strict=True):
        rows = table[(table["metric"] == metric) & (table["level"] == level)].sort_values("cohort")
        live = rows["live"].where(rows["live"] != 0)
        pct = 100 * rows["change"] / live
        lo = 100 * rows["change_low"] / live
        hi = 100 * rows["change_high"] / live
        y = range(len(rows))
        colors = ["#c0392b" if v < 0 else "#2e86c1" for v in pct.fillna(0)]
        ax.barh(list(y), pct.fillna(0), color=colors, alpha=0.8)
        ax.errorbar(pct.fillna(0), list(y), xerr=[(pct - lo).fillna(0), (hi - pct).fillna(0)], fmt="none", ecolor="k")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(list(y), rows["cohort"])
        ax.set_title(f"{metric}: change vs live (%)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title or f"What-if forecast at the {level} level (bars: change; whiskers: prediction interval)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
