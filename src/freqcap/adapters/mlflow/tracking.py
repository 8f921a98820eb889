"""The MLflow adapter: training runs, the model registry (aliases `challenger` / `champion`) and the gate.

A training run is named `<model>-<as_of>` and tagged so that `mlflow.search_runs` comparisons work:

| tag | value |
|---|---|
| `freqcap.kind` | `conversion_model` |
| `freqcap.model` | the model config's `name` |
| `freqcap.as_of` | events observed up to (ISO) |
| `freqcap.data_start`, `freqcap.data_end` | the impression window [start, end) |
| `freqcap.valid_cut` | first validation time; rows at or after it are out of sample |
| `freqcap.training_set`, `freqcap.training_set_sha256`, `freqcap.training_set_rows` | the data version |
| `freqcap.git_sha`, `freqcap.git_dirty`, `freqcap.code_version`, `freqcap.config_digest` | the code version |

Metrics: `{train,early_stopping,valid}_{roc_auc,pr_auc,log_loss,ece,rows,positives,label_rate,mean_prediction}`,
per audience `valid.<audience>.<metric>`, and the boosting history (`history.<set>.<metric>` per step).
Artifacts: the model (xgboost flavor, pinned pip requirements, signature, input example, the encoding in its
metadata), `curves/model_curve.parquet` (+ `.csv`, + an MLflow table), `metrics.json`, `encoding.json`,
`feature_importance.json`, `training_set.json`, `validation.json`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from freqcap.adapters.mlflow.uris import ResolvedTracking, resolve_tracking
from freqcap.domain.training.encoding import FeatureEncoding
from freqcap.domain.training.metrics import binary_metrics

if TYPE_CHECKING:
    from freqcap.domain.training.columns import TrainingSet
    from freqcap.domain.training.config import ConversionModelConfig, GateConfig
    from freqcap.domain.training.model import TrainedModel

log = logging.getLogger(__name__)

KIND = "conversion_model"
CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_NAME_IN_RUN = "model"
ENCODING_KEY = "freqcap_encoding"
PINNED_PACKAGES: tuple[str, ...] = ("mlflow", "xgboost", "numpy", "pandas", "scipy")


def pinned_requirements() -> list[str]:
    """`pkg==version` for what the pyfunc model needs (given, so MLflow does not spend ~10 s inferring them)."""
    reqs = []
    for pkg in PINNED_PACKAGES:
        try:
            reqs.append(f"{pkg}=={importlib_metadata.version(pkg)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    return reqs


def git_version(path: Path | None = None) -> dict[str, str]:
    """The git commit of the source tree (and whether it has uncommitted changes); `unknown` outside git.

    Without `path`: the tree freqcap itself runs from, and only when git tracks this very file there; an installed
    wheel whose environment happens to sit inside some other repository reports `unknown`, not that repository."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        if path is None:
            subprocess.run(
                ["git", "-C", where, "ls-files", "--error-unmatch", Path(__file__).name],
                capture_output=True,
                timeout=10,
                check=True,
            )
        sha = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return {"git_sha": sha, "git_dirty": str(bool(status)).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": "unknown", "git_dirty": "unknown"}


def code_version() -> str:
    try:
        return importlib_metadata.version("freqcap")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def configure(settings: Any) -> ResolvedTracking:
    """Point MLflow (fluent API and registry) at these settings' tracking store."""
    import mlflow

    resolved = resolve_tracking(settings)
    mlflow.set_tracking_uri(resolved.tracking_uri)
    mlflow.set_registry_uri(resolved.registry_uri)
    return resolved


def client(settings: Any) -> Any:
    from mlflow import MlflowClient

    resolved = configure(settings)
    return MlflowClient(tracking_uri=resolved.tracking_uri, registry_uri=resolved.registry_uri)


def ensure_experiment(settings: Any, name: str) -> str:
    """The id of experiment `name`, created with the configured artifact location when new."""
    import mlflow

    resolved = configure(settings)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=resolved.artifact_location)


# ------------------------------------------------------------------------------------------------ logging a run


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    run_name: str
    experiment_id: str
    model_uri: str
    tracking_uri: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flat_params(config: ConversionModelConfig) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in config.xgboost.params.items():
        params[f"xgb.{key}"] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    params["xgb.num_boost_round"] = str(config.xgboost.num_boost_round)
    params["xgb.early_stopping_rounds"] = str(config.xgboost.early_stopping_rounds)
    params["label.target"] = config.label.target
    params["label.credit"] = config.label.credit
    params["label.attribution_window"] = config.label.attribution_window
    params["label.click_window"] = config.label.click_window
    params["data.exposure_lookback"] = config.data.exposure_lookback
    params["data.window"] = config.data.window
    params["data.feature_refs"] = ",".join(config.data.feature_refs)
    params["split.valid_fraction"] = str(config.split.valid_fraction)
    params["split.early_stopping_fraction"] = str(config.split.early_stopping_fraction)
    params["split.gap"] = config.split.gap
    params["curve.max_n"] = str(config.curve.max_n)
    return params


def run_tags(config: ConversionModelConfig, training_set: TrainingSet, split: dict[str, Any]) -> dict[str, str]:
    git = git_version()
    return {
        "freqcap.kind": KIND,
        "freqcap.model": config.name,
        "freqcap.target": config.label.target,
        "freqcap.as_of": training_set.as_of.isoformat(),
        "freqcap.data_start": training_set.start.isoformat(),
        "freqcap.data_end": training_set.end.isoformat(),
        "freqcap.valid_cut": str(split.get("valid_cut")),
        "freqcap.training_set": str(training_set.path),
        "freqcap.training_set_sha256": training_set.sha256,
        "freqcap.training_set_rows": str(training_set.rows),
        "freqcap.training_set_engine": training_set.engine,
        "freqcap.git_sha": git["git_sha"],
        "freqcap.git_dirty": git["git_dirty"],
        "freqcap.code_version": code_version(),
        "freqcap.config_digest": config.digest(),
        "mlflow.source.git.commit": git["git_sha"],
    }


def _metric_entities(model: TrainedModel) -> list[Any]:
    from mlflow.entities import Metric

    now = int(datetime.now().timestamp() * 1000)
    out = [Metric(k, float(v), now, 0) for k, v in model.metrics.items() if np.isfinite(v)]
    for audience, values in model.audience_metrics.items():
        out += [Metric(f"valid.{audience}.{k}", float(v), now, 0) for k, v in values.items() if np.isfinite(v)]
    for part, series in model.history.items():
        for metric, values in series.items():
            out += [Metric(f"history.{part}.{metric}", float(v), now, step) for step, v in enumerate(values)]
    out.append(Metric("best_iteration", float(model.best_iteration), now, 0))
    return out


def log_training_run(
    settings: Any,
    model: TrainedModel,
    training_set: TrainingSet,
    *,
    validation: dict[str, Any] | None = None,
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> LoggedRun:
    """Log one training run (params, tags, metrics, artifacts, the model); the model is not registered here."""
    import mlflow
    import mlflow.xgboost
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    config = model.config
    resolved = configure(settings)
    experiment_id = ensure_experiment(settings, config.experiment)
    run_name = run_name or f"{config.name}-{training_set.as_of:%Y%m%dT%H%M%SZ}"
    tags = {**run_tags(config, training_set, model.split), **(extra_tags or {})}
    mlflow_client = client(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        run_id = run.info.run_id
        mlflow.log_params(_flat_params(config))
        metrics = _metric_entities(model)
        for i in range(0, len(metrics), 900):  # log_batch takes at most 1000 metrics
            mlflow_client.log_batch(run_id, metrics=metrics[i : i + 900])
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local source
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(training_set.path.resolve().as_uri())
        dataset = MetaDataset(
            source=source,
            name=f"{config.name}-training-set",
            digest=training_set.sha256[:16],
        )
        mlflow.log_input(dataset, context="training")

        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            curve_dir = d / "curves"
            curve_dir.mkdir()
            model.curve.to_parquet(curve_dir / "model_curve.parquet", index=False)
            model.curve.to_csv(curve_dir / "model_curve.csv", index=False)
            (d / "metrics.json").write_text(
                json.dumps(
                    {"metrics": model.metrics, "valid_by_audience": model.audience_metrics, "split": model.split},
                    indent=2,
                    default=float,
                )
            )
            (d / "encoding.json").write_text(json.dumps(model.encoding.to_dict(), indent=2))
            (d / "feature_importance.json").write_text(json.dumps(model.importance, indent=2))
            (d / "training_set.json").write_text(json.dumps(training_set.to_dict(), indent=2))
            if validation is not None:
                (d / "validation.json").write_text(json.dumps(validation, indent=2, default=str))
            mlflow.log_artifacts(str(d))
        mlflow.log_table(model.curve, artifact_file="curves/model_curve.json")

        inputs = model.input_example
        with warnings.catch_warnings():  # integer inputs are deliberate: codes and counts are never missing
            warnings.filterwarnings("ignore", message=".*integer column.*")
            signature = infer_signature(inputs, model.booster.inplace_predict(inputs))
        info = mlflow.xgboost.log_model(
            model.booster,
            name=MODEL_NAME_IN_RUN,
            signature=signature,
            input_example=inputs,
            pip_requirements=pinned_requirements(),
            model_format="ubj",
            metadata={
                ENCODING_KEY: model.encoding.to_dict(),
                "freqcap_target": config.label.target,
                "freqcap_valid_cut": str(model.split.get("valid_cut")),
            },
        )
        mlflow.set_tag("freqcap.model_uri", info.model_uri)
    log.info("logged run %s (%s) with model %s", run_id, run_name, info.model_uri)
    return LoggedRun(run_id, run_name, experiment_id, info.model_uri, resolved.tracking_uri)


# ------------------------------------------------------------------------------------------------- the registry


@contextmanager
def _event_prints_at_info() -> Iterator[None]:
    """MLflow prints "Successfully registered model ..." and "Created version ..." straight to stderr: treat them as
    the INFO messages they are (hidden while the `mlflow` logger is quieter than INFO, e.g. `freqcap` without -vv)."""
    from mlflow.utils import logging_utils

    stream = logging_utils.MLFLOW_LOGGING_STREAM
    quiet = stream.enabled and not logging.getLogger("mlflow").isEnabledFor(logging.INFO)
    if quiet:
        stream.enabled = False
    try:
        yield
    finally:
        if quiet:
            stream.enabled = True


def register_challenger(settings: Any, name: str, model_uri: str, run_id: str) -> str:
    """Register the run's model as a new version of `name` and point the `challenger` alias at it."""
    import mlflow

    configure(settings)
    with _event_prints_at_info():
        version = mlflow.register_model(model_uri, name, tags={"freqcap.run_id": run_id})
    c = client(settings)
    c.set_registered_model_alias(name, CHALLENGER, version.version)
    log.info("registered %s version %s as %s", name, version.version, CHALLENGER)
    return str(version.version)


def alias_version(settings: Any, name: str, alias: str) -> Any | None:
    """The model version behind `name@alias`, or None when the model or alias does not exist.

    Any other MLflow error (the tracking server unreachable: `INTERNAL_ERROR`) propagates: read as "no champion"
    it would fail publishing at once with a wrong message, and let the gate promote a challenger unopposed."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        # A missing model is RESOURCE_DOES_NOT_EXIST; a missing alias on a known model, INVALID_PARAMETER_VALUE.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


# ---------------------------------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reason: str
    basis: str  # "no_champion", "already_champion", "head_to_head", "logged_metrics", "label_changed"
    challenger_version: str
    champion_version: str | None  # the champion before the decision
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: int | None = None  # head-to-head rows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run_metrics(settings: Any, run_id: str) -> dict[str, float]:
    return dict(client(settings).get_run(run_id).data.metrics)


def _head_to_head(
    settings: Any, name: str, versions: dict[str, Any], rows: pd.DataFrame, label: str
) -> dict[str, dict[str, float]]:
    """Score each version (pyfunc, through `models:/name/version`) on `rows`; metrics per version key."""
    import mlflow.pyfunc

    configure(settings)
    y = rows[label].to_numpy(dtype=np.float64)
    out: dict[str, dict[str, float]] = {}
    for key, version in versions.items():
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
        encoding = FeatureEncoding.from_dict(loaded.metadata.metadata[ENCODING_KEY])
        preds = np.asarray(loaded.predict(encoding.transform(rows)), dtype=np.float64).ravel()
        out[key] = binary_metrics(y, preds)
    return out


def _compare(
    gate: GateConfig, challenger: dict[str, float], champion: dict[str, float], prefix: str
) -> tuple[bool, dict[str, dict[str, Any]], list[str]]:
    comparison: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for metric in gate.metrics:
        key = f"{prefix}{metric.name}"
        new, old = challenger.get(key), champion.get(key)
        if new is None or old is None or not np.isfinite(new) or not np.isfinite(old):
            comparison[metric.name] = {"challenger": new, "champion": old, "passed": False, "why": "missing"}
            failures.append(f"{metric.name} missing (challenger {new}, champion {old})")
            continue
        delta = new - old
        passed = delta >= -metric.tolerance if metric.higher_is_better else delta <= metric.tolerance
        comparison[metric.name] = {
            "challenger": new,
            "champion": old,
            "delta": delta,
            "tolerance": metric.tolerance,
            "higher_is_better": metric.higher_is_better,
            "passed": bool(passed),
        }
        if not passed:
            worse = "lower" if metric.higher_is_better else "higher"
            failures.append(
                f"{metric.name} {new:.5f} is {worse} than the champion's {old:.5f} by more than {metric.tolerance}"
            )
    return not failures, comparison, failures


def run_label(run: Any) -> str:
    """`<target>/<credit>`: what a training run's booster fitted (runs logged before `label.credit` existed
    fitted the binary target: `last_touch`)."""
    params = run.data.params
    target = params.get("label.target") or run.data.tags.get("freqcap.target", "unknown")
    return f"{target}/{params.get('label.credit', 'last_touch')}"


def champion_gate(
    settings: Any,
    name: str,
    challenger_version: str,
    gate: GateConfig,
    *,
    eval_rows: pd.DataFrame | None = None,
    label: str = "label_conversion",
    promote: bool = True,
) -> GateDecision:
    """Compare a challenger with the current champion; promote it (alias `champion`) when it passes.

    With no champion the challenger is promoted. Otherwise, when `gate.head_to_head` and `eval_rows` (the
    challenger's validation rows) are given, both versions are scored on the rows that are out of sample for
    the champion too (impression_ts ≥ the champion's validation cut), if they hold at least
    `gate.min_head_to_head_positives` positives; else the logged `valid_*` metrics of both runs are compared.
    Each metric must be no worse than the champion's by more than its tolerance. A challenger fitted on another
    label than the champion's (`run_label`) is decided by `gate.on_label_change` instead, its comparison still
    recorded. The decision, its reason and the comparison are tagged on the challenger version.
    """
    c = client(settings)
    challenger = c.get_model_version(name, challenger_version)
    champion = alias_version(settings, name, CHAMPION)
    if champion is None:
        decision = GateDecision(
            True, "no champion yet: the first model becomes champion", "no_champion", challenger_version, None
        )
    elif str(champion.version) == str(challenger_version):
        decision = GateDecision(
            False,
            f"version {challenger_version} is already the champion",
            "already_champion",
            challenger_version,
            str(champion.version),
        )
    else:
        decision = None
        champion_run = c.get_run(champion.run_id)
        if gate.head_to_head and eval_rows is not None and len(eval_rows):
            cut_text = champion_run.data.tags.get("freqcap.valid_cut")
            rows = eval_rows
            if cut_text and cut_text != "None":
                cut = pd.Timestamp(cut_text)
                rows = eval_rows[eval_rows["impression_ts"] >= cut]
            positives = int(rows[label].sum()) if len(rows) else 0
            if positives >= gate.min_head_to_head_positives and positives < len(rows):
                try:
                    scored = _head_to_head(
                        settings, name, {"challenger": challenger, "champion": champion}, rows, label
                    )
                except Exception as exc:  # a champion that cannot read these rows: compare logged metrics
                    log.warning("head-to-head scoring failed (%s); comparing logged metrics", exc)
                else:
                    ok, comparison, failures = _compare(gate, scored["challenger"], scored["champion"], "")
                    basis_text = f"on {len(rows)} validation rows ({positives} positives) out of sample for both"
                    decision = GateDecision(
                        ok,
                        (f"passes every gate metric {basis_text}" if ok else "; ".join(failures) + f" ({basis_text})"),
                        "head_to_head",
                        challenger_version,
                        str(champion.version),
                        comparison,
                        len(rows),
                    )
        if decision is None:
            ok, comparison, failures = _compare(
                gate, _run_metrics(settings, challenger.run_id), dict(champion_run.data.metrics), "valid_"
            )
            basis_text = "on each run's logged validation metrics"
            decision = GateDecision(
                ok,
                (f"passes every gate metric {basis_text}" if ok else "; ".join(failures) + f" ({basis_text})"),
                "logged_metrics",
                challenger_version,
                str(champion.version),
                comparison,
            )
        old, new = run_label(champion_run), run_label(c.get_run(challenger.run_id))
        if old != new:
            decision = GateDecision(
                gate.on_label_change == "promote",
                f"the label changed ({old} -> {new}): the metrics rank different targets and do not decide; "
                f"gate.on_label_change: {gate.on_label_change}. Metrics: {decision.reason}",
                "label_changed",
                challenger_version,
                str(champion.version),
                decision.comparison,
                decision.rows,
            )
    if decision.promoted and promote:
        c.set_registered_model_alias(name, CHAMPION, challenger_version)
    if decision.basis != "already_champion":
        c.set_model_version_tag(
            name, challenger_version, "freqcap.gate", "promoted" if decision.promoted else "refused"
        )
        c.set_model_version_tag(name, challenger_version, "freqcap.gate_reason", decision.reason[:5000])
    log.info(
        "gate for %s v%s: %s (%s)",
        name,
        challenger_version,
        "promoted" if decision.promoted else "refused",
        decision.reason,
    )
    return decision


def search_training_runs(
    settings: Any, experiment: str, filter_string: str = "", max_results: int = 100
) -> pd.DataFrame:
    """Training runs of `experiment` (newest first) as `mlflow.search_runs` returns them."""
    import mlflow

    configure(settings)
    base = f"tags.`freqcap.kind` = '{KIND}'"
    return mlflow.search_runs(
        experiment_names=[experiment],
        filter_string=f"{base} AND {filter_string}" if filter_string else base,
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )
