"""The evaluation report on disk: Markdown + JSON + CSV tables and the conversions-vs-impressions plot.

`write_report(report, out_dir)` writes:

- `evaluation.md`: the policy table (means with 95 % intervals over seeds), the headline (personalized soft
  penalty vs the best global cap at equal impressions), the oracle check, the holdout, the global cap sweep,
  the fitted vs true caps of the first seed, and how it was measured;
- `evaluation.json`: the same numbers (`EvaluationReport.summary()`), plus per-seed details;
- `policies.csv`, `sweep.csv`, `frontier.csv` (every replay run), `comparisons.csv` (every equal-volume
  comparison of every seed), `holdout_by_seed.csv`;
- `conversions_vs_impressions.png`;
- `personalized_policy.yaml` and `fitted_caps.csv`: the policy fitted on the first seed's baseline traffic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from freqcap.domain.evaluation.core import NO_CAP, ORACLE_PENALTY, ORACLES, SOFT, EvaluationReport
from freqcap.domain.evaluation.frontier import interpolate
from freqcap.domain.evaluation.stats import mean_ci
from freqcap.domain.policy import dump_policy

PLOT_FILE = "conversions_vs_impressions.png"
COLORS = {
    "no_cap": "#7f7f7f",
    "global_best": "#1f77b4",
    "personalized_hard": "#ff7f0e",
    "personalized_soft": "#2ca02c",
    "oracle_caps": "#9467bd",
    "oracle_penalty": "#d62728",
    "given_policy": "#8c564b",
}


def _fmt(x: float, kind: str = "int") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if kind == "int":
        return f"{x:,.0f}"
    if kind == "pct":
        return f"{100 * x:+.1f} %"
    if kind == "share":
        return f"{100 * x:.1f} %"
    return f"{x:.2f}"


def _ci(row: dict[str, Any], name: str, kind: str = "int") -> str:
    mean, low, high = row[name], row.get(f"{name}_low"), row.get(f"{name}_high")
    if low is None or not np.isfinite(low):
        return _fmt(mean, kind)
    return f"{_fmt(mean, kind)} [{_fmt(low, kind)}, {_fmt(high, kind)}]"


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def policy_markdown(report: EvaluationReport) -> str:
    table = report.policy_table().to_dict(orient="records")
    rows = []
    for r in table:
        rows.append(
            [
                r["label"],
                _ci(r, "impressions"),
                _ci(r, "conversions"),
                _ci(r, "conversions_per_mille", "f2"),
                _ci(r, "past_optimal_share", "share"),
                _ci(r, "incremental_vs_no_cap"),
                _ci(r, "relative_vs_no_cap", "pct"),
                _ci(r, "relative_vs_global", "pct"),
            ]
        )
    return _md_table(
        [
            "policy",
            "impressions",
            "conversions",
            "conv. / 1,000 imps",
            "imps past true optimal freq.",
            "incremental conv. vs no cap at equal imps",
            "vs no cap at equal imps",
            "vs best global cap at equal imps",
        ],
        rows,
    )


def headline_markdown(report: EvaluationReport) -> str:
    h = report.headline()
    rel, inc = h["relative"], h["incremental_conversions"]
    verdict = "**met**" if h["meets_target"] else "**not met**"
    return (
        f"Personalized soft penalty vs the best global campaign cap, at the global cap's impression volume: "
        f"**{_fmt(rel['mean'], 'pct')}** conversions (95 % CI {_fmt(rel['low'], 'pct')} to "
        f"{_fmt(rel['high'], 'pct')} over {rel['n']} seeds), i.e. {_fmt(inc['mean'])} more conversions per world "
        f"(CI {_fmt(inc['low'])} to {_fmt(inc['high'])}). Target ≥ +5 % with the interval excluding zero: "
        f"{verdict}" + ("" if not h["meets_target"] or h["lower_bound_meets_target"] else
                        " (the mean clears +5 %; the lower bound of the interval does not)") + "."
    )  # fmt: skip


def oracle_markdown(report: EvaluationReport) -> str:
    o = report.oracle_check()
    rows = [
        [
            report.label(k),
            _ci(
                {"x": v["relative"]["mean"], "x_low": v["relative"]["low"], "x_high": v["relative"]["high"]}, "x", "pct"
            ),
            f"{v['wins_in_seeds']} / {v['seeds']}",
        ]
        for k, v in o["policies"].items()
    ]
    return (
        _md_table(["vs", "oracle penalty ahead by (equal imps)", "seeds where the oracle is ahead"], rows)
        + f"\n\nThe oracle penalty beats every other policy in every seed: **{'yes' if o['beats_all'] else 'no'}**."
    )


def holdout_markdown(report: EvaluationReport) -> str:
    h = report.holdout_pooled()
    e, c = h["estimate"], h["estimate_cuped"]
    s0 = report.seeds[0].holdout
    return (
        f"Treatment: {s0['treatment']}; control ({_fmt(e['control_users'] / (e['control_users'] + e['treated_users']), 'share')} "
        f"of users by hash of user id, {_fmt(report.config.holdout_share, 'share')} requested): {s0['control']}. Replay (counterfactual, every user under each policy): "
        f"**{_fmt(h['replay_lift'], 'pct')}** conversions. Holdout estimate over all seeds' users "
        f"({e['treated_users']:,} treated, {e['control_users']:,} held out): {_fmt(e['lift'], 'pct')} "
        f"[{_fmt(e['low'], 'pct')}, {_fmt(e['high'], 'pct')}] (difference in means); with CUPED on opportunities "
        f"per user {_fmt(c['lift'], 'pct')} [{_fmt(c['low'], 'pct')}, {_fmt(c['high'], 'pct')}]. "
        f"The interval covers the replay's lift: **{'yes' if h['covered'] else 'no'}** "
        f"(CUPED: {'yes' if h['covered_cuped'] else 'no'}); per seed: {h['seeds_covered']} / {h['seeds']} "
        f"(CUPED {h['seeds_covered_cuped']} / {h['seeds']})."
    )  # fmt: skip


def sweep_markdown(report: EvaluationReport) -> str:
    sw = report.sweep_table().to_dict(orient="records")
    rows = [
        [
            str(r["cap"]),
            _ci(r, "impressions"),
            _ci(r, "conversions"),
            _ci(r, "conversions_per_mille", "f2"),
            _ci(r, "past_optimal_share", "share"),
            f"{r['chosen_in_seeds']} / {len(report.seeds)}",
        ]
        for r in sw
    ]
    return _md_table(
        [f"campaign cap per {report.config.global_window}", "impressions", "conversions", "conv. / 1,000 imps",
         "imps past true optimal freq.", "best in seeds"],
        rows,
    )  # fmt: skip


def caps_markdown(report: EvaluationReport) -> str:
    s = report.seeds[0]
    caps = s.fitted_caps
    rows = []
    for aud, by_level in s.true_caps.items():
        for level, true in by_level.items():
            sel = caps[(caps["audience"] == aud) & (caps["level"] == level) & (caps["kind"] == "cohort")]
            fitted = ", ".join(
                f"{t}: {int(c) if ok else 'none'}{'' if fb == 'none' else f' ({fb})'}"
                for t, c, ok, fb in zip(sel["signal_tier"], sel["cap"], sel["usable"], sel["fallback"], strict=True)
            )
            rows.append([aud, level, str(true), fitted])
    return _md_table(
        ["audience", "level", "true cap (n_eff, declared curve)", "fitted cap by tier (raw 28 d count)"], rows
    )


def method_markdown(report: EvaluationReport) -> str:
    c = report.config
    a = c.auction
    return f"""- Worlds: `simulate_world` with {c.users:,} users × {c.days} days, seeds {c.base_seed}…{c.base_seed + c.seeds - 1}
  (one world per seed; every number is a mean over seeds with a Student-t 95 % interval).
- Auction: every simulated impression is an opportunity with K = {a.candidates} candidate ads (the simulator's own ad
  for the slot plus the ads of {a.candidates - 1} other opportunities of the same user: draws from the user's ad
  demand). Score = b_u · φ_format · q(u, ad) · noise — a fatigue-blind ranker that knows the user's propensity,
  the format and the persistent (user, ad) relevance q (log-sd {a.relevance_sigma}, real: it multiplies the true
  conversion probability: {a.relevance_in_truth}), with log-normal prediction noise (log-sd {a.noise_sigma}).
  The opportunity shows the best candidate by score × penalty (the policy engine's penalty given the user's counts
  so far in that replay) if it reaches the policy's reserve.
- Truth: p_conv = min(p_max, b_u · φ_format · q · Π_L g(n_eff_L)) with the simulator's `response_multiplier` and
  n_eff over the impressions shown *in that replay*; one common uniform per opportunity decides a conversion
  under every policy (common random numbers), likewise clicks and the conversion delays (signal tiers).
- Policies: no cap; the best global campaign cap (hard, per {c.global_window}; the cap with the most conversions on
  each world, chosen in-sample from {list(c.global_caps)}); the personalized policy from `freqcap curves fit`
  (floor {c.floor} × first-exposure rate, attribution window {c.attribution_window}) on the no-cap replay's events,
  as proposed (soft, penalty shape `{c.penalty_shape}`: `curve` = each cohort's fitted curve as the multiplier
  table) and with every rule hard; two oracles that know the simulator's truth: the true caps
  (declared curves, floor {c.floor}) as hard caps on the true effective exposure count, and the true fatigue
  multiplier Π_L g(n_eff_L) as the penalty.
- Equal impressions: a policy's reserve is its volume knob; to compare A and B at v = min(their natural
  volumes), the one above v is replayed with reserves until a run lands within {100 * c.volume_tolerance:g} % of v,
  and its conversions at v are interpolated linearly between the runs around v.
- "Past true optimal frequency": an impression whose effective exposure count exceeds the audience's true cap at
  any level.
- Holdout: {100 * c.holdout_share:g} % of users (blake2b hash of salt + user id) stay on the best global cap; the
  others get the personalized soft penalty at the reserve that matched the global cap's volume; one replay of the
  split; lift = mean conversions per treated user / per held-out user − 1 (delta-method interval)."""


def _indexed(report: EvaluationReport, values: list[tuple[float, float]]) -> tuple[Any, Any]:
    """Mean and CI of per-seed (impressions, conversions) indexed to each seed's no-cap run (= 100)."""
    conf = report.config.confidence
    xs = [100 * x / s.natural[NO_CAP]["impressions"] for (x, _), s in zip(values, report.seeds, strict=True)]
    ys = [100 * y / s.natural[NO_CAP]["conversions"] for (_, y), s in zip(values, report.seeds, strict=True)]
    return mean_ci(xs, conf), mean_ci(ys, conf)


def plot_report(report: EvaluationReport, path: Path) -> Path:
    """Conversions vs impressions per policy, each seed indexed to its own no-cap run (= 100), so that the
    spread between worlds (different users) does not hide the differences between policies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6.5))
    # global cap sweep
    caps = [row["cap"] for row in report.seeds[0].sweep]
    sweep_pts = []
    for cap in caps:
        vals = []
        for s in report.seeds:
            row = next((r for r in s.sweep if r["cap"] == cap), None)
            vals.append((row["impressions"], row["conversions"]) if row else (float("nan"), float("nan")))
        ix, iy = _indexed(report, vals)
        sweep_pts.append((cap, ix.mean, iy.mean))
    ax.plot([p[1] for p in sweep_pts], [p[2] for p in sweep_pts], "--", color=COLORS["global_best"], alpha=0.6,
            lw=1.2, label="global campaign cap sweep (labels: cap)")  # fmt: skip
    for cap, x, y in sweep_pts:
        ax.annotate(str(int(cap)), (x, y), fontsize=7, color=COLORS["global_best"], xytext=(3, -9),
                    textcoords="offset points")  # fmt: skip
    # reserve frontiers, averaged over seeds at common fractions of the opportunities
    for key in (NO_CAP, SOFT, ORACLE_PENALTY):
        xs, ys = _mean_frontier(report, key)
        if len(xs) > 1:
            ax.plot(xs, ys, "-", color=COLORS.get(key, "k"), alpha=0.5, lw=1.5,
                    label=f"{report.label(key)}: frontier (raising the reserve)")  # fmt: skip
    for key in report.policy_keys():
        ix, iy = _indexed(
            report, [(s.natural[key]["impressions"], s.natural[key]["conversions"]) for s in report.seeds]
        )
        star = key in ORACLES
        ax.errorbar(
            ix.mean,
            iy.mean,
            xerr=[[ix.mean - ix.low], [ix.high - ix.mean]] if np.isfinite(ix.low) else None,
            yerr=[[iy.mean - iy.low], [iy.high - iy.mean]] if np.isfinite(iy.low) else None,
            fmt="*" if star else "o",
            ms=12 if star else 8,
            color=COLORS.get(key, "k"),
            capsize=3,
            label=report.label(key),
        )
    h = report.headline()
    nc_imp = np.mean([s.natural[NO_CAP]["impressions"] for s in report.seeds])
    nc_conv = np.mean([s.natural[NO_CAP]["conversions"] for s in report.seeds])
    ax.set_title(
        f"Conversions vs impressions per policy ({report.config.users:,} users × {report.config.days} days, "
        f"{len(report.seeds)} seeds)\npersonalized soft vs best global cap at equal impressions: "
        f"{100 * h['relative']['mean']:+.1f} % [{100 * h['relative']['low']:+.1f} %, {100 * h['relative']['high']:+.1f} %]",
        fontsize=11,
    )
    ax.set_xlabel(f"impressions, no cap = 100 (= {nc_imp:,.0f} per world; mean over seeds, bars: 95 % CI)")
    ax.set_ylabel(f"conversions, no cap = 100 (= {nc_conv:,.0f} per world)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _mean_frontier(report: EvaluationReport, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The frontier read at common fractions of each seed's opportunities, indexed to no cap, mean over seeds."""
    lows, highs = [], []
    for s in report.seeds:
        pts = s.frontier.get(key, [])
        if len(pts) < 2:
            return np.zeros(0), np.zeros(0)
        lows.append(min(p.impressions for p in pts) / s.opportunities)
        highs.append(max(p.impressions for p in pts) / s.opportunities)
    if max(lows) >= min(highs):
        return np.zeros(0), np.zeros(0)
    fractions = np.linspace(max(lows), min(highs), 25)
    xs = np.array(
        [[100 * f * s.opportunities / s.natural[NO_CAP]["impressions"] for f in fractions] for s in report.seeds]
    )
    ys = np.array(
        [
            [
                100 * interpolate(s.frontier[key], f * s.opportunities) / s.natural[NO_CAP]["conversions"]
                for f in fractions
            ]
            for s in report.seeds
        ]
    )
    return xs.mean(axis=0), ys.mean(axis=0)


def write_report(report: EvaluationReport, out_dir: str | Path) -> dict[str, Path]:
    """Write every report file under `out_dir`; returns their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    summary = report.summary()
    paths["json"] = out / "evaluation.json"
    paths["json"].write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
    paths["policies"] = out / "policies.csv"
    report.policy_table().to_csv(paths["policies"], index=False)
    paths["sweep"] = out / "sweep.csv"
    report.sweep_table().to_csv(paths["sweep"], index=False)
    paths["frontier"] = out / "frontier.csv"
    report.frontier_table().to_csv(paths["frontier"], index=False)
    paths["comparisons"] = out / "comparisons.csv"
    pd.DataFrame([c | {"seed": s.seed} for s in report.seeds for c in s.comparisons]).to_csv(
        paths["comparisons"], index=False
    )
    paths["holdout"] = out / "holdout_by_seed.csv"
    pd.json_normalize([s.holdout | {"seed": s.seed} for s in report.seeds]).to_csv(paths["holdout"], index=False)
    paths["plot"] = plot_report(report, out / PLOT_FILE)
    paths["policy"] = dump_policy(report.seeds[0].fitted_policy, out / "personalized_policy.yaml")
    paths["caps"] = out / "fitted_caps.csv"
    report.seeds[0].fitted_caps.to_csv(paths["caps"], index=False)
    paths["markdown"] = out / "evaluation.md"
    paths["markdown"].write_text(markdown(report) + "\n")
    return paths


def markdown(report: EvaluationReport) -> str:
    c = report.config
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in report.summary()["seconds_by_stage"].items())
    return f"""# Offline policy evaluation

{c.users:,} users × {c.days} days × {c.seeds} seeds (base seed {c.base_seed}); {sum(s.replays for s in report.seeds)} replays in
{report.seconds:.0f} s ({stages}).

## Headline

{headline_markdown(report)}

## Policies

Means over seeds with 95 % intervals. "At equal imps" compares each policy with the reference read off the
reference's reserve frontier at the policy's volume (or the policy's frontier at the reference's volume, whichever
is lower): see "How it was measured".

{policy_markdown(report)}

## Sanity: the oracle

{oracle_markdown(report)}

## Holdout

{holdout_markdown(report)}

## Global cap sweep

{sweep_markdown(report)}

## Fitted vs true caps (seed {report.seeds[0].seed})

{caps_markdown(report)}

## How it was measured

{method_markdown(report)}

![conversions vs impressions]({PLOT_FILE})"""


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
