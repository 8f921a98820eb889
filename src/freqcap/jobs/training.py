"""The training pipeline as plain job functions for the training DAG: JSON-serializable values in and out.

    backfill_snapshots_job   (optional) daily feature snapshots over a date range, as the features DAG would have
    build_training_set_job   point-in-time training set from Feast's offline store -> Parquet path + summary
    validate_training_set_job Great Expectations gate (raises TrainingValidationError naming the failed rules)
    train_job                XGBoost + metrics + model-based curve -> one MLflow run with the model (unregistered)
    register_and_gate_job    register the run's model, alias `challenger`; champion gate -> alias `champion` or not
    fit_curves_job           survivorship-robust exposure curves, caps and the proposed policy (freqcap.jobs.curves)
    attach_curves_job        curves, plots, the model-vs-empirical cross-check and the policy onto the model's run
    resolve_inputs           the DAG run's params (as_of, events, users, floor, first snapshot day) as plain values

Paths travel as strings; DataFrames never go through XCom. `model_config` is a path to a model YAML (default
`resources/models/conversion.yaml` of the packaged resources) or, from Python, a `ConversionModelConfig`.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from freqcap.adapters.airflow.context import run_as_of
from freqcap.adapters.duckdb.training_set import TRAINING_FILE, build_training_set
from freqcap.adapters.events_files import parquet_glob
from freqcap.adapters.gx.training import TrainingGateError, validate_training_table
from freqcap.adapters.mlflow.tracking import champion_gate, client, configure, log_training_run, register_challenger
from freqcap.config import Settings, parse_duration
from freqcap.domain.policy import load_policy
from freqcap.domain.training.columns import TrainingSet
from freqcap.domain.training.config import ConversionModelConfig, resolve_model_config
from freqcap.domain.training.model import train_model
from freqcap.jobs.backfill import publish_daily_snapshots
from freqcap.jobs.features import docs_root_for, events_dir_for
from freqcap.jobs.privacy import pseudonymous_events
from freqcap.layout import DataLayout, parse_as_of

log = logging.getLogger(__name__)

ModelConfigArg = ConversionModelConfig | str | None


def _parse_ts(value: str | None):
    return None if value is None else parse_as_of(value)


def training_dir(settings: Settings, config: ConversionModelConfig, as_of_text: str) -> Path:
    """One directory per training run's data (`DataLayout.training_dir`)."""
    return DataLayout.of(settings).training_dir(config.name, as_of_text)


def backfill_snapshots_job(
    events_dir: str,
    start: str,
    end: str,
    settings: Settings,
    users: str | None = None,
    every: str = "1d",
) -> dict[str, Any]:
    """Publish feature snapshots every `every` from `start` to `end` (inclusive, ISO times) into the offline store."""
    events_dir, users = pseudonymous_events(settings, events_dir, users)  # a no-op on a copy `resolve` made
    result = publish_daily_snapshots(
        events_dir, _parse_ts(start), _parse_ts(end), settings, users=users, every=parse_duration(every)
    )
    return result.to_dict()


def build_training_set_job(
    events_dir: str,
    as_of: str,
    settings: Settings,
    start: str | None = None,
    end: str | None = None,
    users: str | None = None,
    model_config: ModelConfigArg = None,
) -> dict[str, Any]:
    """Build the point-in-time training set of impressions in [start, end) from events observed up to `as_of`.

    Defaults: end = as_of − the attribution window (every label complete), start = end − data.window (not
    before the first event + data.history_warmup). Needs feature snapshots covering the window (see
    `backfill_snapshots_job`). Returns the `TrainingSet` summary (path, rows, window, label rate, sha256).
    """
    config = resolve_model_config(model_config)
    ts = _parse_ts(as_of)
    out = training_dir(settings, config, ts.isoformat()) / TRAINING_FILE
    events_dir, users = pseudonymous_events(settings, events_dir, users)  # a no-op on a copy `resolve` made
    result = build_training_set(
        events_dir,
        settings,
        config,
        out_path=out,
        as_of=ts,
        start=_parse_ts(start),
        end=_parse_ts(end),
        users=users,
        # Feast's get_historical_features on one machine; the same point-in-time join on Spark at scale.
        engine="spark" if settings.features.engine == "spark" else "feast",
    )
    return result.to_dict()


def validate_training_set_job(
    training_set: dict[str, Any], settings: Settings, model_config: ModelConfigArg = None
) -> dict[str, Any]:
    """Run the Great Expectations gate on the training set (`freqcap.adapters.gx.training`: the suite's rules plus
    the leakage rules as of the set's horizon); raises `TrainingGateError` (a `TrainingValidationError`) naming
    each failed rule with what was observed.

    The report is also written beside the training set (`validation.json`), pass or fail."""
    config = resolve_model_config(model_config)
    path = Path(training_set["path"])
    report_path = path.with_name("validation.json")
    try:
        report = validate_training_table(
            path,
            config,
            allowed_formats=settings.validation.allowed_formats,
            as_of=_parse_ts(training_set["as_of"]),
            docs_root=docs_root_for(settings),
        )
    except TrainingGateError as exc:
        exc.report.write(report_path)
        raise
    report.write(report_path)
    out = report.to_dict()
    out.pop("outcomes")
    return {**out, "training_set": str(path), "sha256": training_set.get("sha256"), "report_path": str(report_path)}


def train_job(
    training_set: dict[str, Any],
    settings: Settings,
    model_config: ModelConfigArg = None,
    validation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the XGBoost model, compute its curve and log everything to MLflow (model logged, not registered).

    Validates the training set first unless `validation` (the output of `validate_training_set_job` for this
    very file, same sha256) says it passed.
    """
    config = resolve_model_config(model_config)
    ts = TrainingSet.from_dict(training_set)
    if not (validation and validation.get("success") and validation.get("sha256") == ts.sha256):
        validation = validate_training_set_job(training_set, settings, config)
    frame = pq.read_table(ts.path).to_pandas()
    half_life_us = {t.level: t.half_life_seconds * 1_000_000 for t in settings.features.tiers}
    model = train_model(
        frame, config, ts.feature_columns, formats=settings.validation.allowed_formats, half_life_us=half_life_us
    )
    del frame
    logged = log_training_run(settings, model, ts, validation=validation)
    return {
        **logged.to_dict(),
        "registered_model": config.registered_model,
        "training_set": str(ts.path),
        "training_set_sha256": ts.sha256,
        "best_iteration": model.best_iteration,
        "valid_metrics": model.valid_metrics,
        "valid_by_audience": {
            a: {k: v for k, v in m.items() if k in ("roc_auc", "pr_auc", "log_loss", "ece", "rows")}
            for a, m in model.audience_metrics.items()
        },
        "split": model.split,
        "curve_rows": len(model.curve),
        "seconds": model.seconds,
    }


def register_and_gate_job(
    trained: dict[str, Any], settings: Settings, model_config: ModelConfigArg = None, promote: bool = True
) -> dict[str, Any]:
    """Register the trained run's model (alias `challenger`), then run the champion gate on the challenger's
    validation rows; the winner holds alias `champion`. Returns the version and the gate's decision."""
    config = resolve_model_config(model_config)
    name = trained.get("registered_model") or config.registered_model
    version = register_challenger(settings, name, trained["model_uri"], trained["run_id"])
    eval_rows = None
    valid_cut = (trained.get("split") or {}).get("valid_cut")
    if config.gate.head_to_head and valid_cut and Path(trained["training_set"]).exists():
        frame = pq.read_table(trained["training_set"]).to_pandas()
        eval_rows = frame[frame["impression_ts"] >= pd.Timestamp(valid_cut)]
    decision = champion_gate(
        settings, name, version, config.gate, eval_rows=eval_rows, label=config.label.target_column, promote=promote
    )
    return {
        "registered_model": name,
        "version": version,
        "run_id": trained["run_id"],
        "promoted": decision.promoted,
        "reason": decision.reason,
        "decision": decision.to_dict(),
        "challenger_uri": f"models:/{name}@challenger",
        "champion_uri": f"models:/{name}@champion",
    }


__all__ = [
    "backfill_snapshots_job",
    "build_training_set_job",
    "register_and_gate_job",
    "train_job",
    "training_dir",
    "validate_training_set_job",
]


# -------------------------------------------------------------------------------------- curves and the policy


def curves_dir(settings: Settings, as_of: str) -> Path:
    return DataLayout.of(settings).curves_dir(as_of)


def fit_curves_job(
    events_dir: str, as_of: str, settings: Settings, users: str | None = None, floor: float | None = None
) -> dict[str, Any]:
    """Fit survivorship-robust exposure–response curves and propose caps and a policy (freqcap.domain.curves)."""
    from freqcap.jobs.curves import fit_curves_to_dir

    events_dir, users = pseudonymous_events(settings, events_dir, users)  # a no-op on a copy `resolve` made
    kwargs: dict[str, Any] = {
        "users": Path(users) if users else None,
        "features": settings.features,
        "maturity_share": settings.training.maturity_share,
        "penalty_shape": settings.training.penalty_shape,
    }
    if floor is not None:
        kwargs["floor"] = floor
    summary = fit_curves_to_dir(Path(events_dir), curves_dir(settings, as_of), **kwargs)
    # where the events came from: the cross-check refits them over the training set's span (attach_curves_job)
    out = summary.to_dict() | {"events_dir": str(events_dir), "users": str(users) if users else None}
    return json.loads(json.dumps(out, default=str))


def attach_curves_job(
    trained: dict[str, Any], gated: dict[str, Any], curves: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """Log curves, caps, plots, the model-vs-empirical cross-check and the proposed policy to the model's run;
    tag the registered version with the policy it proposes."""
    import mlflow

    configure(settings)
    out_dir = Path(curves["out_dir"])
    policy = load_policy(out_dir / "policy.yaml")
    mc = client(settings)
    run_id = trained["run_id"]
    for path in sorted(out_dir.iterdir()):
        if path.is_file():
            mc.log_artifact(run_id, str(path), artifact_path="curves" if path.suffix != ".png" else "curves/plots")
    comparison, against_published, span_vs_published = _cross_check(trained, out_dir, curves, settings)
    flagged = int(comparison["flagged"].sum())
    flagged_published = int(against_published["flagged"].sum())
    mc.log_metric(run_id, "curve_disagreements", flagged)
    # what kind: the exposure response (re-anchored at the empirical first rate) or the cohort's level
    shape, level = int(comparison["shape_flagged"].sum()), int(comparison["level_outside"].sum())
    mc.log_metric(run_id, "curve_shape_disagreements", shape)
    mc.log_metric(run_id, "curve_level_disagreements", level)
    mc.log_metric(run_id, "curve_disagreements_published", flagged_published)
    mc.log_text(run_id, comparison.to_csv(index=False), "curves/model_vs_empirical.csv")
    mc.log_text(run_id, against_published.to_csv(index=False), "curves/model_vs_published.csv")
    yardstick = None if span_vs_published is None else int(span_vs_published["flagged"].sum())
    if yardstick is not None:  # the yardstick of the line above: no model, the span's own curves
        mc.log_metric(run_id, "span_disagreements_published", yardstick)
        mc.log_text(run_id, span_vs_published.to_csv(index=False), "curves/span_vs_published.csv")
    if flagged:
        log.warning(
            "model and empirical curves disagree for %d cohort x level(s) (%d by shape, %d first rates outside the"
            " CI): see curves/model_vs_empirical.csv",
            flagged,
            shape,
            level,
        )
    mc.set_tag(run_id, "freqcap.policy_version", policy.version)
    mc.set_model_version_tag(gated["registered_model"], gated["version"], "policy_version", policy.version)
    mlflow.end_run()
    return {
        "run_id": run_id,
        "policy_version": policy.version,
        "policy_path": str(out_dir / "policy.yaml"),
        "model_version": gated["version"],
        "promoted": gated["promoted"],
        "curve_disagreements": flagged,
        "curve_shape_disagreements": shape,
        "curve_level_disagreements": level,
        "curve_pairs_compared": len(comparison),
        "curve_disagreements_published": flagged_published,
        "span_disagreements_published": yardstick,
    }


def _cross_check(trained: dict[str, Any], out_dir: Path, curves: dict[str, Any], settings: Settings):
    """Per cohort × level: does the model-based curve (logged by training) leave the empirical CI? Returns the
    comparison with the empirical curves of the training set's own span (like for like: `curve_disagreements`),
    with the published curves, which also follow runs past the training set's end, and the span's empirical
    curves with the published ones by the same rule (how far the two populations part, with no model involved;
    None for an older run's summary)."""
    import mlflow

    from freqcap.domain.curves import compare_model_curves
    from freqcap.domain.curves.crosscheck import empirical_points
    from freqcap.jobs.curves import fit_span_curves

    local = mlflow.artifacts.download_artifacts(run_id=trained["run_id"], artifact_path="curves/model_curve.parquet")
    model = pd.read_parquet(local)
    published = out_dir / "curves.parquet"
    against_published = compare_model_curves(model, published)
    split = trained.get("split") or {}
    if not curves.get("events_dir") or not split.get("train_start") or not split.get("valid_end"):
        return against_published, against_published, None  # an older run's summary: the published curves only
    span = (parse_as_of(split["train_start"]), parse_as_of(split["valid_end"]) + timedelta(microseconds=1))
    reference = fit_span_curves(
        Path(curves["events_dir"]),
        span,
        users=Path(curves["users"]) if curves.get("users") else None,
        features=settings.features,
        maturity_share=settings.training.maturity_share,
    )
    return (
        compare_model_curves(model, reference),
        against_published,
        compare_model_curves(empirical_points(reference), published),
    )


# ------------------------------------------------------------------------------------------- the DAG's params


def resolve_inputs(context: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """as_of, events_dir, users, floor, and the first event day (where snapshot backfills start)."""
    params = context.get("params") or {}
    # The edge: every task after this one reads the events (and users) with pseudonymous ids.
    events_dir, users = pseudonymous_events(
        settings, events_dir_for(settings, params.get("events_dir")), params.get("users")
    )
    as_of = run_as_of(context)
    first = parse_as_of(
        duckdb.sql(f"SELECT min(event_ts) FROM read_parquet('{parquet_glob(events_dir)}')").fetchall()[0][0]
    )
    # Snapshots sit at midnights, like the daily features DAG's: the first one on or after the first event.
    midnight = first.replace(hour=0, minute=0, second=0, microsecond=0)
    start = min(midnight if midnight == first else midnight + timedelta(days=1), as_of)
    return {
        "as_of": as_of.isoformat(),
        "events_dir": events_dir,
        "users": users,
        "floor": params.get("floor"),
        "start": start.isoformat(),
    }
