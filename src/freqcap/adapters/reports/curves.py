"""One PNG per cohort: the three levels side by side, each with the estimated marginal conversion rate per
exposure (points with 95 % CI bars), the smoothed curve and its band, the floor and the proposed cap."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

LEVEL_ORDER = ("advertiser", "campaign", "ad")


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


def plot_cohort(label: str, curves: pd.DataFrame, caps: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=False)
    for ax, level in zip(axes, LEVEL_ORDER, strict=True):
        c = curves[curves["level"] == level].sort_values("n")
        cap_row = caps[caps["level"] == level]
        ax.set_title(f"{level}", fontsize=12)
        window = str(cap_row["window"].iloc[0]) if len(cap_row) else "28d"
        ax.set_xlabel(f"n-th impression of the same {level} to a user (within {window})")
        if c.empty or cap_row.empty:
            ax.text(0.5, 0.5, "no data with enough support", ha="center", va="center", transform=ax.transAxes)
            continue
        r = cap_row.iloc[0]
        pct = 100.0
        ax.fill_between(
            c["n"], c["ci_low_smooth"] * pct, c["ci_high_smooth"] * pct, color="tab:blue", alpha=0.15,
            label="95 % band (smoothed)",
        )  # fmt: skip
        ax.errorbar(
            c["n"], c["rate"] * pct,
            yerr=[(c["rate"] - c["ci_low"]).clip(lower=0) * pct, (c["ci_high"] - c["rate"]).clip(lower=0) * pct],
            fmt="o", ms=3, color="tab:blue", ecolor="tab:blue", alpha=0.55, elinewidth=0.8, label="estimate, 95 % CI",
        )  # fmt: skip
        ax.plot(c["n"], c["rate_smooth"] * pct, color="tab:blue", lw=2, label="smoothed curve")
        if pd.notna(r["floor_rate"]):
            ax.axhline(r["floor_rate"] * pct, color="tab:red", ls="--", lw=1.2, label="floor")
        cap = int(r["cap"])
        if cap >= 1:
            ax.axvline(cap, color="tab:green", lw=1.5)
            text = f"cap {cap}{'+' if r['censored'] else ''} per {r['window']}"
            text += f"\n(range {int(r['cap_low'])}–{int(r['cap_high'])})"
            ax.annotate(
                text, xy=(cap, ax.get_ylim()[1] * 0.92), xytext=(4, 0), textcoords="offset points",
                color="tab:green", fontsize=9, va="top",
            )  # fmt: skip
        if r["fallback"] != "none":
            ax.text(
                0.98, 0.02, f"too little data: uses {r['source']}", ha="right", va="bottom",
                transform=ax.transAxes, fontsize=8, color="tab:orange",
            )  # fmt: skip
        ax.set_ylabel("conversions per 100 impressions")
        ax.set_xlim(0.5, min(int(c["n"].max()), max(20, 3 * cap)) + 0.5)  # the region around the cap
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(f"Exposure–response: {label}", fontsize=14)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_all(curves: pd.DataFrame, caps: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per cohort label in `caps` (cohorts, audiences and everyone)."""
    paths = []
    for label in caps["cohort"].drop_duplicates():
        paths.append(
            plot_cohort(
                label,
                curves[curves["cohort"] == label],
                caps[caps["cohort"] == label],
                out_dir / f"{_safe(label)}.png",
            )
        )
    return paths
