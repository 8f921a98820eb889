"""The model's exposure curve against the empirical one (`curve_disagreements`), and why they part.

Per simulated world: daily snapshots, the point-in-time training set (DuckDB engine), the published curves
(`fit_curves_to_dir`, defaults), then for each label variant the XGBoost model (default config otherwise),
its implied curve (`freqcap.domain.training.curve`) and `compare_model_curves` — the count the training DAG logs.

Then **where the model's curve parts from the published one**: per level, for everyone, the fixed-cohort ratio
(Σ over the n-th impressions / Σ over their runs' entries) of the model's own training label and of its
predictions, and the model's calibration at n and at the entries. The model's ratio is the label's times the
quotient of the two calibrations, so this splits a disagreement into "the model does not follow its label" and
"the label's curve is not the published one". (An earlier version split entries by run depth on
`label_conversion`, a label neither model is trained on — any conversion within the window after the impression,
which credits one conversion to every impression before it — and overstated the selection at the entries.)

    .venv/bin/python benchmarks/bench_model_curve.py [--worlds 2500:14:7,20000:14:7,20000:14:11]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, table, write_result

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
LOOKBACK_US = 28 * 86_400_000_000
EARLY_STOPPING = {"split": {"early_stopping_fraction": 0.1}, "xgboost": {"num_boost_round": 300}}
VARIANTS = {
    "deconvolved, 100 rounds (default)": {},
    # the former default: the binary last-touch label, boosting stopped early on the binary target
    "last_touch, early stopping": {"label": {"credit": "last_touch"}, **EARLY_STOPPING},
    # the credit, boosting stopped early on the early-stopping rows' credit
    "deconvolved, early stopping": EARLY_STOPPING,
}


def _config(overrides: dict):
    from freqcap.domain.training.config import ConversionModelConfig

    data = ConversionModelConfig().model_dump()
    for section, values in overrides.items():
        data[section] = {**data[section], **values}
    return ConversionModelConfig.model_validate(data)


def prepare(users: int, days: int, seed: int):
    """(settings, training-set summary, curves dir): simulated, backfilled, built and fitted once."""
    from freqcap.adapters.duckdb.training_set import build_training_set
    from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
    from freqcap.config import SimulationConfig, load_settings
    from freqcap.domain.training.columns import TrainingSet
    from freqcap.jobs.backfill import publish_daily_snapshots
    from freqcap.jobs.curves import fit_curves_to_dir
    from freqcap.layout import parse_as_of

    world = WORK / f"model-curve-{users}-{days}-{seed}"
    settings = load_settings(environ={"FREQCAP__DATA_DIR": str(world / "data"), "FREQCAP__FEAST__PROJECT": "mcurve"})
    if not (world / "ground_truth.json").exists():
        print(f"simulating {users:,} users x {days} days ...", flush=True)
        simulate_to_dir(world, SimulationConfig(users=users, days=days, seed=seed))
    meta = world / "training.json"
    if not meta.exists():
        window = load_ground_truth(world)["window"]
        start, as_of = parse_as_of(window["start"]), parse_as_of(window["end"])
        config = _config({})
        publish_daily_snapshots(
            world / "events", start, as_of - timedelta(seconds=config.label.horizon_seconds), settings
        )
        ts = build_training_set(
            world / "events", settings, config, out_path=world / "training.parquet", as_of=as_of, engine="duckdb"
        )
        meta.write_text(json.dumps(ts.to_dict(), default=str))
    curves = world / "curves"
    if not (curves / "curves.parquet").exists():
        fit_curves_to_dir(
            world / "events",
            curves,
            users=world / "users.parquet",
            features=settings.features,
            maturity_share=settings.training.maturity_share,
            plots=False,
        )
    return settings, TrainingSet.from_dict(json.loads(meta.read_text())), curves


def decomposition(frame, predictions, label, published, world: str, variant: str) -> list[dict]:
    """Per level, for everyone (`all`), at n = 1 … 8: the fixed-cohort ratio Σ_n / Σ_entry over the training set's
    runs with a fresh entry, of the model's own training label and of its predictions, and the published ratio with
    its CI. The model's ratio = the label's × (calibration at n) / (calibration at the entries)."""
    import numpy as np

    from freqcap.domain.training.curve import run_entries

    rows = []
    for level in ("advertiser", "campaign", "ad"):
        n = frame[f"n_{level}"].to_numpy()
        entry = run_entries(frame, level, LOOKBACK_US)
        pub = published[(published["cohort"] == "all") & (published["level"] == level)].set_index("n")
        for k in range(1, 9):
            at = np.flatnonzero((n == k) & (entry >= 0))
            first = entry[at]
            y_n, y_e, p_n, p_e = label[at].sum(), label[first].sum(), predictions[at].sum(), predictions[first].sum()
            if k not in pub.index or y_e <= 0 or p_e <= 0:
                continue
            point = pub.loc[k]
            rows.append(
                {
                    "world": world,
                    "label": variant,
                    "level": level,
                    "n": k,
                    "rows": len(at),
                    "label_ratio": y_n / y_e,
                    "model_ratio": p_n / p_e,
                    "calibration_n": p_n / y_n if y_n > 0 else float("nan"),
                    "calibration_entry": p_e / y_e,
                    "published_ratio": float(point["ratio"]),
                    "published_low": float(point["ci_low"] / point["first_rate"]),
                    "published_high": float(point["ci_high"] / point["first_rate"]),
                }
            )
    return rows


def measure(users: int, days: int, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    import pandas as pd
    import pyarrow.parquet as pq

    from freqcap.domain.curves import compare_model_curves
    from freqcap.domain.curves.crosscheck import empirical_points
    from freqcap.domain.training.credit import deconvolved_label
    from freqcap.domain.training.model import train_model
    from freqcap.jobs.curves import fit_span_curves

    settings, ts, curves = prepare(users, days, seed)
    frame = pq.read_table(ts.path).to_pandas().reset_index(drop=True)
    published = pd.read_parquet(curves / "curves.parquet")
    span = (frame["impression_ts"].min(), frame["impression_ts"].max() + timedelta(microseconds=1))
    own_span = fit_span_curves(  # the training set's own span: what `curve_disagreements` compares with
        curves.parent / "events",
        (span[0].to_pydatetime(), span[1].to_pydatetime()),
        users=curves.parent / "users.parquet",
        features=settings.features,
        maturity_share=settings.training.maturity_share,
    )
    # The yardstick of "against published": the span's own empirical curves compared with the published ones by the
    # same rule (no model involved): how often the two populations' curves part by themselves.
    yard = compare_model_curves(empirical_points(own_span), curves / "curves.parquet")
    yard = yard[yard["points"] > 0]
    half_life_us = {t.level: t.half_life_seconds * 1e6 for t in settings.features.tiers}
    results, entries, flagged = [], [], []
    for name, overrides in VARIANTS.items():
        started = time.perf_counter()
        model = train_model(
            frame,
            _config(overrides),
            ts.feature_columns,
            formats=settings.validation.allowed_formats,
            half_life_us=half_life_us,
        )
        seconds = time.perf_counter() - started
        cmp = compare_model_curves(model.curve, curves / "curves.parquet")
        compared = cmp[cmp["points"] > 0]
        like = compare_model_curves(model.curve, own_span)
        like = like[like["points"] > 0]
        results.append(
            {
                "world": f"{users:,} users × {days} days (seed {seed})",
                "label": name,
                "rounds": model.best_iteration + 1,
                "flagged_span": int(like["flagged"].sum()),
                "shape_span": int(like["shape_flagged"].sum()),
                "level_span": int(like["level_outside"].sum()),
                "compared_span": len(like),
                "points_span": int(like["points"].sum()),
                "outside_span": int(like["outside"].sum()),
                "flagged": int(compared["flagged"].sum()),
                "compared": len(compared),
                "points": int(compared["points"].sum()),
                "outside": int(compared["outside"].sum()),
                "yard_flagged": int(yard["flagged"].sum()),
                "yard_compared": len(yard),
                "yard_outside": int(yard["outside"].sum()),
                "yard_points": int(yard["points"].sum()),
                "mean_log_ratio": float(compared["mean_log_ratio"].mean()),
                "auc": model.metrics["valid_roc_auc"],
                "seconds": seconds,
            }
        )
        print(results[-1], flush=True)
        if overrides:
            continue  # the decomposition below: the default model only
        for _, f in like[like["flagged"]].iterrows():
            flagged.append(
                {
                    "world": results[-1]["world"],
                    "cohort": f["cohort"],
                    "level": f["level"],
                    "outside": f"{f['outside']} of {f['points']}",
                    "level_log_ratio": float(f["level_log_ratio"]),
                    "level_outside": bool(f["level_outside"]),
                    "shape": f"{f['shape_outside']} of {f['shape_points']}",
                    "shape_flagged": bool(f["shape_flagged"]),
                }
            )
        config = _config(overrides)
        if config.label.credit == "deconvolved":  # what the model was fitted on: the EM credit of the training rows
            label = deconvolved_label(
                frame,
                attribution_us=config.label.attribution_seconds * 1_000_000,
                lookback_us=config.data.lookback_seconds * 1_000_000,
                half_life_us=half_life_us,
            )
        else:
            label = frame[config.label.target_column].to_numpy(dtype=float)
        entries += decomposition(frame, model.predict(frame), label, published, results[-1]["world"], name)
    return results, entries, flagged


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worlds", default="2500:14:7,20000:14:7,20000:14:11", help="users:days:seed,...")
    args = ap.parse_args()
    results, entries, flagged = [], [], []
    for spec in args.worlds.split(","):
        users, days, seed = (int(x) for x in spec.split(":"))
        r, e, f = measure(users, days, seed)
        results += r
        entries += e
        flagged += f
    body = (
        f"Command: `.venv/bin/python benchmarks/bench_model_curve.py --worlds {args.worlds}`. Default model config "
        "(`resources/models/conversion.yaml`) but for what each variant names; the published curves with their defaults; "
        "`compare_model_curves` as the training DAG runs it (cohort × levels with their own curve and model points on "
        "at least 30 rows).\n\n"
    )
    body += (
        "**`curve_disagreements`** compares with the curves of the training set's own span (`fit_span_curves`: "
        "the same estimator over the impressions, and their runs' entries, from the training set's first to its "
        "last impression); **against published** with the curves published from all events, which also follow "
        "runs past the training set's end (it stops a label horizon before the data do): their long runs are "
        "slower ones, which the model never sees. **Of which by shape**: the cohort × levels whose exposure response "
        "alone (the model's curve re-anchored at the span's first-exposure rate, n ≥ 2) is flagged by the same "
        "rule; **first rate outside**: those whose model first-exposure rate is outside the span's CI (the level; "
        "of every compared cohort × level, flagged or not). Points: model points compared, outside: of those, "
        "outside the empirical 95 % CI. **Span vs published (no model)**: the yardstick of the published comparison, the "
        "training span's own empirical curves (`fit_span_curves`) compared with the published ones by the same rule "
        "(`empirical_points`, logged by training as `span_disagreements_published`): how far the two populations' "
        "curves part with no model involved.\n\n"
    )
    body += table(
        [
            "world",
            "label",
            "rounds",
            "curve_disagreements",
            "of which by shape",
            "first rate outside",
            "points outside",
            "against published",
            "points outside (published)",
            "span vs published (no model)",
            "mean log ratio (model / published)",
            "validation ROC-AUC",
            "train (s)",
        ],
        [
            [
                r["world"],
                r["label"],
                r["rounds"],
                f"{r['flagged_span']} of {r['compared_span']} ({r['flagged_span'] / max(r['compared_span'], 1):.0%})",
                str(r["shape_span"]),
                str(r["level_span"]),
                f"{r['outside_span']} of {r['points_span']}",
                f"{r['flagged']} of {r['compared']} ({r['flagged'] / max(r['compared'], 1):.0%})",
                f"{r['outside']} of {r['points']}",
                f"{r['yard_flagged']} of {r['yard_compared']}; {r['yard_outside']} of {r['yard_points']} points",
                f"{r['mean_log_ratio']:+.2f}",
                f"{r['auc']:.3f}",
                f"{r['seconds']:.0f}",
            ]
            for r in results
        ],
    )
    body += (
        "\n\n## Level or shape: the default model's flagged cohort × levels\n\nEach cohort × level that "
        "`curve_disagreements` counts, split as `compare_model_curves` splits it: the **level**, the model's "
        "first-exposure rate against the span's (log ratio; outside: beyond the empirical 95 % CI at n = 1), and "
        "the **shape**, the model's curve re-anchored at the span's first-exposure rate, points n ≥ 2 outside the "
        "CI and whether that alone is flagged by the same rule (the exposure response, which the caps are read "
        "from, with the level taken out).\n\n"
    )
    body += table(
        [
            "world",
            "cohort",
            "level",
            "points outside",
            "level (log model / span)",
            "first rate outside",
            "shape: outside",
            "shape flagged",
        ],
        [
            [
                f["world"],
                f["cohort"],
                f["level"],
                f["outside"],
                f"{f['level_log_ratio']:+.2f}",
                "yes" if f["level_outside"] else "no",
                f["shape"],
                "yes" if f["shape_flagged"] else "no",
            ]
            for f in flagged
        ],
    )
    body += (
        "\n\n## Where the model's curve parts from the published one\n\nThe default model. For everyone (`all`) per level, over the "
        "training set's runs whose entry (n = 1) is among its rows: the fixed-cohort ratio Σ(n-th impressions) / "
        "Σ(their runs' entries) of the model's own training label (`label`: the binary last-touch label, or the "
        "EM credit of the training rows for `deconvolved`) and of the model's predictions (`model`: what "
        "`compare_model_curves` checks), the model's calibration Σ prediction / Σ label at n and at the entries "
        "(model = label × calibration at n / calibration at the entries), and the published curve's ratio with its "
        "95 % interval. A model that follows its label (calibration near 1 at every n) has the label's curve; where "
        "that is not the published one, the label is what disagrees.\n\n"
    )
    body += table(
        ["world", "label", "level", "n", "rows", "label", "model", "calibration at n", "at entries", "published"],
        [
            [
                e["world"],
                e["label"],
                e["level"],
                e["n"],
                f"{e['rows']:,}",
                f"{e['label_ratio']:.2f}",
                f"{e['model_ratio']:.2f}",
                f"{e['calibration_n']:.2f}",
                f"{e['calibration_entry']:.2f}",
                f"{e['published_ratio']:.2f} [{e['published_low']:.2f}, {e['published_high']:.2f}]",
            ]
            for e in entries
        ],
    )
    write_result("model_curve", "The model's exposure curve against the empirical one", body)
    (Path(__file__).resolve().parent / "results" / "model_curve.json").write_text(
        json.dumps({"results": results, "entries": entries, "flagged": flagged}, indent=1)
    )


if __name__ == "__main__":
    main()
