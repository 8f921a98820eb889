"""The model's exposure curve against the empirical one (`curve_disagreements`), and why they part.

Per simulated world: daily snapshots, the point-in-time training set (DuckDB engine), the published curves
(`fit_curves_to_dir`, defaults), then for each label variant the XGBoost model (default config otherwise),
its implied curve (`freqcap.domain.training.curve`) and `compare_model_curves` — the count the training DAG logs.

Then the **selection at entry**: per audience and level, the first impressions (n_L = 1) of the (user, entity)
runs in the training set, split by whether the run goes on to a 3rd impression within the lookback ("deep") or
not ("shallow"). The empirical estimator divides each n-th impression's credit by its *own* run's entry credit,
so deep runs are compared with their own (high-intent) start. The model's implied curve divides by the model's
prediction at those entries, made from what was known then. If deep runs' entries convert more than shallow
ones' (label ratio) while the model cannot tell them apart at the entry (prediction ratio), the model's
denominator is too small for deep runs and its curve sits above the empirical one, however well it models
frequency.

    .venv/bin/python benchmarks/bench_model_curve.py [--worlds 2500:14:7,20000:14:7]
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
VARIANTS = {"last_touch (default)": {}, "deconvolved": {"label": {"credit": "deconvolved"}}}


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


def selection(frame, predictions) -> list[dict]:
    """Entries of deep vs shallow runs: label and prediction ratios per audience (and everyone) × level."""
    import numpy as np

    from freqcap.domain.training.curve import run_entries

    rows = []
    label = frame["label_conversion"].to_numpy(dtype=float)
    audience = frame["audience"].astype(str).to_numpy()
    for level in ("advertiser", "campaign", "ad"):
        n = frame[f"n_{level}"].to_numpy()
        entry = run_entries(frame, level, LOOKBACK_US)
        deep = np.zeros(len(frame), dtype=bool)
        deep[entry[(n >= 3) & (entry >= 0)]] = True
        for aud in (*sorted(set(audience)), "all"):
            first = (n == 1) & ((audience == aud) if aud != "all" else True)
            d, s = first & deep, first & ~deep
            if label[d].sum() < 10 or label[s].sum() < 10:
                continue
            rows.append(
                {
                    "audience": aud,
                    "level": level,
                    "deep": int(d.sum()),
                    "shallow": int(s.sum()),
                    "label_ratio": label[d].mean() / label[s].mean(),
                    "prediction_ratio": predictions[d].mean() / predictions[s].mean(),
                }
            )
    return rows


def measure(users: int, days: int, seed: int) -> tuple[list[dict], list[dict]]:
    import pyarrow.parquet as pq

    from freqcap.domain.curves import compare_model_curves
    from freqcap.domain.training.model import train_model

    settings, ts, curves = prepare(users, days, seed)
    frame = pq.read_table(ts.path).to_pandas().reset_index(drop=True)
    results, entries = [], []
    for name, overrides in VARIANTS.items():
        started = time.perf_counter()
        model = train_model(
            frame,
            _config(overrides),
            ts.feature_columns,
            formats=settings.validation.allowed_formats,
            half_life_us={t.level: t.half_life_seconds * 1e6 for t in settings.features.tiers},
        )
        seconds = time.perf_counter() - started
        cmp = compare_model_curves(model.curve, curves / "curves.parquet")
        compared = cmp[cmp["points"] > 0]
        results.append(
            {
                "world": f"{users:,} users × {days} days (seed {seed})",
                "label": name,
                "flagged": int(compared["flagged"].sum()),
                "compared": len(compared),
                "mean_log_ratio": float(compared["mean_log_ratio"].mean()),
                "auc": model.metrics["valid_roc_auc"],
                "seconds": seconds,
            }
        )
        if name == next(iter(VARIANTS)):
            for r in selection(frame, model.predict(frame)):
                entries.append({"world": results[-1]["world"], **r})
        print(results[-1], flush=True)
    return results, entries


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worlds", default="2500:14:7,20000:14:7", help="users:days:seed,...")
    args = ap.parse_args()
    results, entries = [], []
    for spec in args.worlds.split(","):
        users, days, seed = (int(x) for x in spec.split(":"))
        r, e = measure(users, days, seed)
        results += r
        entries += e
    body = (
        f"Command: `.venv/bin/python benchmarks/bench_model_curve.py --worlds {args.worlds}`. Default model config "
        "(`resources/models/conversion.yaml`) but for the label; the published curves with their defaults; "
        "`compare_model_curves` as the training DAG runs it (cohort × levels with their own curve and model points on "
        "at least 30 rows).\n\n"
    )
    body += table(
        ["world", "label", "flagged", "mean log ratio (model / empirical)", "validation ROC-AUC", "train (s)"],
        [
            [
                r["world"],
                r["label"],
                f"{r['flagged']} of {r['compared']} ({r['flagged'] / max(r['compared'], 1):.0%})",
                f"{r['mean_log_ratio']:+.2f}",
                f"{r['auc']:.3f}",
                f"{r['seconds']:.0f}",
            ]
            for r in results
        ],
    )
    body += (
        "\n\n## Selection at entry\n\nFirst impressions (n = 1) of runs that go on to a 3rd impression (deep) or "
        "not (shallow), in the training set; the label is the binary last-touch label, the prediction the default "
        "model's. `label ratio`: how much more often deep runs' entries convert; `prediction ratio`: what the model "
        "says of the same entries from what it knows at the time. A label ratio above the prediction ratio makes "
        "the model's implied curve sit above the empirical one at n ≥ 3 by about their quotient.\n\n"
    )
    body += table(
        ["world", "level", "audience", "deep entries", "shallow entries", "label ratio", "prediction ratio"],
        [
            [
                e["world"],
                e["level"],
                e["audience"],
                f"{e['deep']:,}",
                f"{e['shallow']:,}",
                f"{e['label_ratio']:.2f}",
                f"{e['prediction_ratio']:.2f}",
            ]
            for e in entries
        ],
    )
    write_result("model_curve", "The model's exposure curve against the empirical one", body)
    (Path(__file__).resolve().parent / "results" / "model_curve.json").write_text(
        json.dumps({"results": results, "entries": entries}, indent=1)
    )


if __name__ == "__main__":
    main()
