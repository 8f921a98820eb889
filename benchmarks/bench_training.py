"""Training benchmark: point-in-time training set (Feast vs a raw DuckDB ASOF JOIN), GX validation, XGBoost.

For each simulated world: daily snapshots are backfilled once (cached under benchmarks/work), then the training
set is built with Feast's `get_historical_features` (duckdb offline store) and, as the baseline, with DuckDB ASOF
JOINs straight over the same snapshot files; both are the full `build_training_set` (impressions, exact exposure
indices, labels, join, write), interleaved, each in a fresh interpreter (peak RSS = that process's VmHWM).
Then Great Expectations on the training set, XGBoost training (default model config) and MLflow logging.

    .venv/bin/python benchmarks/bench_training.py [--worlds 20000:14:7,35000:14:11 --repeat 3]
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
from _common import RESULTS, WORK, median, peak_rss_mb, run_isolated, table, write_result

HERE = Path(__file__).resolve()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see freqcap.domain.training.model.passive_openmp
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("FEAST_USAGE", "False")


def _settings(world: Path):
    from freqcap.config import load_settings

    return load_settings(environ={"FREQCAP__DATA_DIR": str(world / "data"), "FREQCAP__FEAST__PROJECT": "benchtrain"})


def _window(world: Path):
    from freqcap.adapters.simulation_files import load_ground_truth
    from freqcap.layout import parse_as_of

    w = load_ground_truth(world)["window"]
    return parse_as_of(w["start"]), parse_as_of(w["end"])


def one(kind: str, world_text: str) -> dict:
    import logging

    logging.basicConfig(level=logging.WARNING)
    world = Path(world_text)
    settings = _settings(world)
    start, as_of = _window(world)
    events = world / "events"
    out = world / "data" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict = {}
    if kind == "backfill":
        from freqcap.domain.training.config import ConversionModelConfig
        from freqcap.jobs.backfill import publish_daily_snapshots

        end = as_of - timedelta(seconds=ConversionModelConfig().label.horizon_seconds)
        r = publish_daily_snapshots(events, start, end, settings)
        result = {"snapshots": len(r.published), "rows": r.rows}
    elif kind.startswith("build-"):
        from freqcap.adapters.duckdb.training_set import build_training_set
        from freqcap.domain.training.config import ConversionModelConfig

        engine = kind.split("-", 1)[1]
        ts = build_training_set(
            events,
            settings,
            ConversionModelConfig(),
            out_path=out / f"training_{engine}.parquet",
            as_of=as_of,
            engine=engine,
        )
        result = {
            "rows": ts.rows,
            "label_rate": ts.label_rate,
            "join_seconds": ts.seconds["feature_join"],
            "open_store_seconds": ts.seconds.get("open_store", 0.0),
            "impressions_seconds": ts.seconds["impressions_and_labels"],
            "sha256": ts.sha256,
        }
    elif kind == "validate":
        from freqcap.adapters.gx.training_suite import validate_training_set
        from freqcap.domain.training.config import ConversionModelConfig

        report = validate_training_set(
            out / "training_feast.parquet", ConversionModelConfig(), allowed_formats=settings.validation.allowed_formats
        )
        result = {"rows": report.rows, "expectations": len(report.results), "success": report.success}
    elif kind == "train":
        import pyarrow.parquet as pq

        from freqcap.domain.training.columns import TrainingSet
        from freqcap.domain.training.config import ConversionModelConfig
        from freqcap.domain.training.model import train_model

        meta = json.loads((out / "training_feast.json").read_text())
        ts = TrainingSet.from_dict(meta)
        frame = pq.read_table(ts.path).to_pandas()
        load_s = time.perf_counter() - started
        model = train_model(
            frame,
            ConversionModelConfig(),
            ts.feature_columns,
            formats=settings.validation.allowed_formats,
            half_life_us={t.level: t.half_life_seconds * 1e6 for t in settings.features.tiers},
        )
        result = {
            "load_seconds": load_s,
            "boost_seconds": model.seconds["boost"],
            "curve_seconds": model.seconds["curve"],
            "rounds": model.best_iteration + 1,
            "split": model.split,
            "metrics": {k: v for k, v in model.metrics.items() if k.startswith("valid_")},
            "audience": {
                a: {k: m[k] for k in ("roc_auc", "pr_auc", "log_loss", "ece", "rows", "label_rate")}
                for a, m in model.audience_metrics.items()
            },
        }
    elif kind == "track":
        import shutil

        from freqcap.domain.training.config import ConversionModelConfig
        from freqcap.jobs.training import register_and_gate_job, train_job

        shutil.rmtree(world / "data" / "mlflow", ignore_errors=True)  # a new tracking DB, as on a fresh deployment
        meta = json.loads((out / "training_feast.json").read_text())
        config = ConversionModelConfig()
        t = time.perf_counter()
        trained = train_job(meta, settings, model_config=config, validation={"success": True, "sha256": meta["sha256"]})
        train_and_log = time.perf_counter() - t
        t = time.perf_counter()
        gate = register_and_gate_job(trained, settings, model_config=config)
        result = {
            "train_and_log_seconds": train_and_log,
            "register_and_gate_seconds": time.perf_counter() - t,
            "promoted": gate["promoted"],
        }
    else:
        raise ValueError(kind)
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _world(users: int, days: int, seed: int) -> Path:
    from freqcap.adapters.simulation_files import simulate_to_dir
    from freqcap.config import SimulationConfig

    world = WORK / f"train-world-{users}-{days}-{seed}"
    if not (world / "ground_truth.json").exists():
        print(f"simulating {users:,} users x {days} days ...", flush=True)
        simulate_to_dir(world, SimulationConfig(users=users, days=days, seed=seed))
    return world


def bench_world(
    users: int, days: int, seed: int, repeat: int, track: bool, steps: tuple[str, ...] = ("validate", "train")
) -> tuple[str, dict]:
    world = _world(users, days, seed)
    marker = world / "data" / "backfill.json"
    if not marker.exists():
        r = run_isolated(HERE, "backfill", str(world))
        marker.write_text(json.dumps(r))
        print(f"  backfill: {r['snapshots']} snapshots in {r['seconds']:.1f}s", flush=True)
    backfill = json.loads(marker.read_text())
    runs: dict[str, list[dict]] = {"build-feast": [], "build-duckdb": []}
    for i in range(repeat):
        for kind in runs:  # interleaved, so background load hits both alike
            runs[kind].append(run_isolated(HERE, kind, str(world)))
            print(f"  run {i + 1} {kind}: {runs[kind][-1]['seconds']:.2f}s", flush=True)
    validate = run_isolated(HERE, "validate", str(world)) if "validate" in steps else None
    if validate:
        print(f"  validate: {validate['seconds']:.1f}s", flush=True)
    train = run_isolated(HERE, "train", str(world)) if "train" in steps else None
    if train:
        print(f"  train: {train['seconds']:.1f}s", flush=True)
    tracked = run_isolated(HERE, "track", str(world)) if track else None

    feast, duck = runs["build-feast"], runs["build-duckdb"]
    rows_n = feast[0]["rows"]
    same = feast[0]["sha256"] == duck[0]["sha256"]
    impressions = json.loads((world / "ground_truth.json").read_text())["counts"]["impressions"]

    def med(runs_, key):
        return median([r[key] for r in runs_])

    lines = [
        [
            "training set, Feast get_historical_features (duckdb offline store)",
            f"{med(feast, 'seconds'):.2f}",
            f"join {med(feast, 'join_seconds'):.2f} (+ FeatureStore construction {med(feast, 'open_store_seconds'):.2f})",
            f"{med(feast, 'peak_rss_mb'):.0f}",
        ],
        [
            "training set, baseline: DuckDB ASOF JOIN over the snapshot files",
            f"{med(duck, 'seconds'):.2f}",
            f"join {med(duck, 'join_seconds'):.2f}",
            f"{med(duck, 'peak_rss_mb'):.0f}",
        ],
    ]
    if validate:
        lines.append(
            [
                f"Great Expectations ({validate['expectations']} expectations)",
                f"{validate['seconds']:.2f}",
                "",
                f"{validate['peak_rss_mb']:.0f}",
            ]
        )
    if train:
        lines.append(
            [
                f"XGBoost train (hist, {train['rounds']} rounds after early stopping) + metrics + curve",
                f"{train['seconds']:.2f}",
                f"boost {train['boost_seconds']:.1f}, curve {train['curve_seconds']:.1f}",
                f"{train['peak_rss_mb']:.0f}",
            ]
        )
    if tracked:
        lines.append(
            [
                "train_job + register_and_gate_job (fresh MLflow SQLite DB)",
                f"{tracked['seconds']:.2f}",
                f"train+log {tracked['train_and_log_seconds']:.1f}, register+gate {tracked['register_and_gate_seconds']:.1f}",
                f"{tracked['peak_rss_mb']:.0f}",
            ]
        )
    chunks = -(-rows_n // 1_000_000)
    body = (
        f"\n## {users:,} users x {days} days (seed {seed}): {impressions:,} impressions, training set {rows_n:,} rows\n\n"
        f"Backfill of {backfill['snapshots']} daily snapshots (build_features + publish_snapshot per day, apply once): "
        f"{backfill['seconds']:.1f}s, peak RSS {backfill['peak_rss_mb']:.0f} MB. Training-set builds: median of {repeat} "
        f"interleaved run(s); Feast gets the entity rows in {chunks} chunk(s) of at most 1,000,000. "
        f"Feast and DuckDB outputs byte-identical: {'yes' if same else 'NO'}.\n\n"
        + table(["step", "seconds", "of which", "peak RSS MB"], lines)
        + "\n"
    )
    if train:
        m = train["metrics"]
        body += (
            f"\nValidation metrics (time split: train {train['split']['train_rows']:,} / early stopping "
            f"{train['split']['early_stopping_rows']:,} / validation {train['split']['valid_rows']:,} rows; validation from "
            f"{train['split']['valid_cut']}): ROC-AUC {m['valid_roc_auc']:.4f}, PR-AUC {m['valid_pr_auc']:.4f}, "
            f"log loss {m['valid_log_loss']:.5f}, ECE {m['valid_ece']:.5f}, label rate {m['valid_label_rate']:.4f} "
            f"(mean prediction {m['valid_mean_prediction']:.4f}).\n\n"
            + table(
                ["audience", "rows", "label rate", "ROC-AUC", "PR-AUC", "log loss", "ECE"],
                [
                    [
                        a,
                        f"{v['rows']:,.0f}",
                        f"{v['label_rate']:.4f}",
                        f"{v['roc_auc']:.4f}",
                        f"{v['pr_auc']:.4f}",
                        f"{v['log_loss']:.5f}",
                        f"{v['ece']:.5f}",
                    ]
                    for a, v in sorted(train["audience"].items())
                ],
            )
            + "\n"
        )
    return body, {"feast": feast, "duckdb": duck, "validate": validate, "train": train, "track": tracked}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs="*")
    parser.add_argument("--worlds", default="20000:14:7,35000:14:11", help="users:days:seed, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", default="validate,train", help="after the builds: validate, train (comma-separated)")
    parser.add_argument(
        "--track", action="store_true", help="also time train_job + register_and_gate_job (first world)"
    )
    parser.add_argument("--append", action="store_true", help="append the sections to benchmarks/results/training.md")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    if args.one is not None:
        kind, world = args.one
        print(json.dumps(one(kind, world), default=str))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    body = (
        "Each step runs in a fresh interpreter (peak RSS is that process's VmHWM, imports included); "
        "OMP_WAIT_POLICY=PASSIVE; DuckDB threads=2; XGBoost nthread=2; default model config "
        "(resources/models/conversion.yaml: 7-day attribution window, 28-day exposure lookback, 23 Feast features).\n"
    )
    raw = {}
    for i, spec in enumerate(args.worlds.split(",")):
        users, days, seed = (int(x) for x in spec.split(":"))
        print(f"world {users}x{days} seed {seed}", flush=True)
        steps = tuple(x for x in args.steps.split(",") if x)
        section, raw[spec] = bench_world(users, days, seed, args.repeat, track=args.track and i == 0, steps=steps)
        body += section
    if args.note:
        body += f"\n{args.note}\n"
    tag = "-".join(s.split(":")[0] for s in raw)
    (WORK / f"training-bench-{tag}.json").write_text(json.dumps(raw, indent=2, default=str))
    results = RESULTS / "training.md"
    if args.append and results.exists():
        results.write_text(results.read_text().rstrip("\n") + "\n" + body + "\n")
        print(body)
    else:
        write_result("training", "Training benchmark", body)


if __name__ == "__main__":
    main()
