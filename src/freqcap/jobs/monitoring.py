"""The monitoring pipeline as plain job functions (JSON values in and out, paths as strings) for the hourly DAG,
and `run_monitoring` which runs them in a row (`freqcap monitor`).

    collect_job   decision log → cap hit rates, their moves, fail-open; events + live policy → realized frequency;
                  stream status; the current window's rows for drift                     → metrics.json
    drift_job     current rows vs the training reference (and the champion's predictions) with Evidently
                                                                                          → drift.json + HTML report
    alarms_job    alarm rules over every number → incidents fired / resolved (state kept between runs)
                                                                                          → alarms.json
    publish_job   one Evidently snapshot with all of it added to the workspace project; the on-call page

Everything a run writes lives in its run directory (`DataLayout.monitoring_run`); the incident state, the alarm
history, the latest on-call page, the latest drift report and the workspace live beside the runs (`freqcap.layout`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from freqcap.adapters.airflow.context import run_as_of
from freqcap.adapters.decision_log import FIELDS, read_log_rows, read_log_window
from freqcap.adapters.duckdb.current_rows import current_rows, read_reference, sample
from freqcap.adapters.duckdb.impressions import impression_counts
from freqcap.adapters.duckdb.training_set import TRAINING_FILE
from freqcap.adapters.gx.decision_log import validate_decision_log
from freqcap.adapters.incident_store import IncidentStore
from freqcap.adapters.mlflow.champion import champion_scorer, champion_training_set
from freqcap.adapters.stream.monitoring import stream_rows, stream_status
from freqcap.config import Settings, parse_duration
from freqcap.domain.monitoring.alarms import log_outcome, observe, step
from freqcap.domain.monitoring.frequency import cap_windows, realized_frequency
from freqcap.domain.monitoring.metrics import (
    ALL,
    MetricRow,
    Streak,
    cap_hit_rate_changes,
    cap_hit_rates,
    cohort_table,
    degraded_streak,
    fail_open_rates,
    in_window,
    prepare_log,
    reason_counts,
    rows_to_frame,
)
from freqcap.domain.monitoring.page import render_page
from freqcap.domain.monitoring.rules import AlertsConfig, load_alerts, load_dashboard
from freqcap.domain.policy import load_policy
from freqcap.domain.training.config import load_model_config
from freqcap.jobs.features import events_dir_for
from freqcap.layout import DataLayout, MonitoringRun, parse_as_of, users_path_for

if TYPE_CHECKING:
    from freqcap.adapters.evidently import DriftResult

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------- locations


def run_dir(settings: Settings, as_of: datetime) -> Path:
    """Where the monitoring run for `as_of` writes (`DataLayout.monitoring_run`)."""
    return DataLayout.of(settings).monitoring_run(as_of).root


def _write_json(path: Path, data: Any) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
    return path


def _read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------------------------------- inputs


def resolve_inputs(context: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """as_of (the `as_of` param, else the end of the run's data interval), events_dir and users (params or the
    defaults; None when there are no events)."""
    params = context.get("params") or {}
    events_dir = events_dir_for(settings, params.get("events_dir"))
    if not Path(events_dir).exists():
        events_dir = None
    users = users_path_for(events_dir, params.get("users")) if events_dir else params.get("users")
    return {
        "as_of": run_as_of(context).isoformat(),
        "events_dir": events_dir,
        "users": str(users) if users else None,
    }


def newest_training_set(settings: Settings, model_name: str) -> Path | None:
    """The newest training set of `model_name` on disk (`DataLayout.training_dir`s are named by time)."""
    root = DataLayout.of(settings).training_root(model_name)
    found = sorted(root.glob(f"*/{TRAINING_FILE}"))
    return found[-1] if found else None


def resolve_reference(settings: Settings, model_config: Any) -> tuple[Path | None, str]:
    """(path, how it was chosen): the configured file, the champion's training set, or the newest on disk."""
    configured = settings.monitoring.reference_path
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise FileNotFoundError(f"monitoring.reference_path {path} does not exist")
        return path, "monitoring.reference_path"
    champion = champion_training_set(settings, model_config.registered_model)
    if champion is not None and champion.is_file():
        return champion, "champion's training set"
    newest = newest_training_set(settings, model_config.name)
    if newest is not None:
        return newest, "newest training set on disk"
    return None, "no training set found"


def live_policy(settings: Settings) -> tuple[Any, str]:
    """(policy, where it came from): `monitoring.policy_path`, else the policy last published, else
    `serving.policy_path`; (None, reason) when there is none."""
    if settings.monitoring.policy_path:
        return load_policy(settings.monitoring.policy_path), f"monitoring.policy_path {settings.monitoring.policy_path}"
    published = DataLayout.of(settings).published_log
    if published.exists():
        lines = [line for line in published.read_text().splitlines() if line.strip()]
        if lines:
            path = json.loads(lines[-1]).get("policy_path")
            if path and Path(path).exists():
                return load_policy(path), f"last published ({path})"
    if settings.serving.policy_path and Path(settings.serving.policy_path).exists():
        return load_policy(settings.serving.policy_path), f"serving.policy_path {settings.serving.policy_path}"
    return None, "no live policy found (monitoring.policy_path, publish/published.jsonl, serving.policy_path)"


def _fail_open_threshold(alerts: AlertsConfig) -> float:
    """The fail-open rate below which a 5-minute bucket counts as healthy (the fail-open rule's threshold; with
    no such rule, a bucket is healthy only without any failed-open decision)."""
    for rule in alerts.rules:
        if rule.metric == "fail_open_rate" and rule.matches("fail_open_rate", ALL) and rule.above is not None:
            return rule.above
    return 1e-12


# -------------------------------------------------------------------------------------------------- validate


def _windows(settings: Settings, as_of: datetime) -> tuple[datetime, datetime]:
    """(start of the current window, start of the baseline window) for a run ending at `as_of`."""
    cfg = settings.monitoring
    start = as_of - timedelta(seconds=cfg.seconds("window"))
    return start, start - timedelta(seconds=cfg.seconds("baseline_window"))


def validate_log_job(inputs: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The decision-log gate (`freqcap.adapters.gx.decision_log`, suite `monitoring/gx/decision_log.json`) on the
    rows this run will read: raises `DecisionLogGateError` naming each failed rule. No log yet: nothing to check."""

    as_of = parse_as_of(inputs["as_of"])
    _, base_start = _windows(settings, as_of)
    log_dir = DataLayout.of(settings).decision_log_dir
    if not log_dir.is_dir():
        return {"validated": False, "rows": 0, "note": f"no decision log at {log_dir}"}

    raw = read_log_rows(log_dir, base_start, as_of)
    # The gate keeps start ≤ ts < end; this run reads (base_start, as_of]: one microsecond more at the end.
    report = validate_decision_log(raw, settings, start=base_start, end=as_of + timedelta(microseconds=1), now=as_of)
    return {"validated": True, "rows": report.rows.get("decision_log", 0), "data_docs": report.data_docs}


# -------------------------------------------------------------------------------------------------- collect


def collect_job(inputs: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Measure serving and traffic for the window ending at `as_of`; writes `metrics.json` (and the current
    window's rows for drift) in the run directory."""
    started = time.perf_counter()
    as_of = parse_as_of(inputs["as_of"])
    run = DataLayout.of(settings).monitoring_run(as_of)
    run.root.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    alerts = load_alerts(settings.monitoring.alerts_path)
    start, base_start = _windows(settings, as_of)

    served = _served_decisions(settings, alerts, as_of, start, base_start, notes)
    rows = list(served.rows)
    stream = stream_status(settings)
    rows += stream_rows(stream)
    if stream is None and settings.stream.enabled:
        notes.append("stream enabled in settings but no status was read (worker down or its Redis unreachable)")
    events_dir, users = inputs.get("events_dir"), inputs.get("users")
    if events_dir:
        frequency = _realized_frequency(events_dir, users, settings, start, as_of, notes)
        rows += frequency.rows
        current_path, current_count = _current_sample(events_dir, users, settings, as_of, run, notes)
    else:
        frequency = _Frequency(rows=[], table={}, policy_version=None, note="no events directory")
        current_path, current_count = None, 0
        notes.append("no events directory: realized frequency and drift not computed")

    metrics = {
        "as_of": as_of.isoformat(),
        "windows": {
            "window": settings.monitoring.window,
            "baseline_window": settings.monitoring.baseline_window,
            "drift_window": settings.monitoring.drift_window,
        },
        "rows": [r.to_dict() for r in rows],
        "decisions": len(served.current),
        "baseline_decisions": len(served.baseline),
        "fail_open": _fail_open_summary(rows, served),
        "cohorts": cohort_table(served.current, served.baseline),
        "stream": stream,
        "frequency": frequency.table,
        "frequency_note": frequency.note,
        "policy_version": frequency.policy_version,
        "events_dir": events_dir,
        "users": users,
        "current_rows": current_count,
        "notes": notes,
    }
    metrics_path = _write_json(run.metrics, metrics)
    log.info("collect: %d metric rows, %.1fs", len(rows), time.perf_counter() - started)
    return {
        "as_of": as_of.isoformat(),
        "run_dir": str(run.root),
        "metrics_path": str(metrics_path),
        "current_path": str(current_path) if current_path else None,
        "current_rows": current_count,
        "decisions": len(served.current),
        "notes": notes,
    }


@dataclass(frozen=True)
class _ServedDecisions:
    """The decision log around a run: the current window, the baseline before it, their metric rows, and the
    ongoing (or last) fail-open streak."""

    current: pd.DataFrame
    baseline: pd.DataFrame
    rows: list[MetricRow]
    streak: Streak | None


def _served_decisions(
    settings: Settings, alerts: AlertsConfig, as_of: datetime, start: datetime, base_start: datetime, notes: list[str]
) -> _ServedDecisions:
    """Read the decision log of (base_start, as_of]: decisions logged, cap hit rates and their moves, fail-open."""
    cfg = settings.monitoring
    log_dir = DataLayout.of(settings).decision_log_dir
    if log_dir.is_dir():
        frame = read_log_window(log_dir, base_start, as_of)
    else:
        frame = prepare_log(pd.DataFrame(columns=list(FIELDS)))
        notes.append(f"no decision log at {log_dir}: cap hit and fail-open rates not computed")
    current, baseline = in_window(frame, start, as_of), in_window(frame, base_start, start)
    rows: list[MetricRow] = [MetricRow("decisions_logged", ALL, float(len(current)), float(len(current)))]
    rows += cap_hit_rates(current)
    rows += cap_hit_rate_changes(current, baseline)
    rows += fail_open_rates(current)
    threshold = _fail_open_threshold(alerts)
    streak = degraded_streak(frame, as_of, timedelta(seconds=cfg.seconds("since_bucket")), threshold)
    log.info(
        "decision log: %d decisions in (%s, %s], %d in the baseline; fail-open %d",
        len(current), start.isoformat(), as_of.isoformat(), len(baseline), int(current["fail_open"].sum()),
    )  # fmt: skip
    return _ServedDecisions(current, baseline, rows, streak)


def _fail_open_summary(rows: list[MetricRow], served: _ServedDecisions) -> dict[str, Any]:
    """The fail-open rate of the window, its reasons, and the streak (since when, last failure, ongoing)."""
    fo = {r.segment: r for r in rows if r.name == "fail_open_rate"}
    streak = served.streak
    return {
        "rate": fo[ALL].value if ALL in fo else None,
        "decisions": len(served.current),
        "reasons": reason_counts(served.current),
        **(streak.to_dict() if streak is not None else {"since": None, "last_failure": None, "ongoing": False}),
    }


@dataclass(frozen=True)
class _Frequency:
    """Realized frequency under the live policy: metric rows, the table for the page, and why it is empty."""

    rows: list[MetricRow]
    table: dict[str, Any]
    policy_version: str | None
    note: str | None


def _realized_frequency(
    events_dir: str, users: str | None, settings: Settings, start: datetime, as_of: datetime, notes: list[str]
) -> _Frequency:
    """Impressions per user over each cap window of the live policy, from the events of (start, as_of]."""
    policy, source = live_policy(settings)
    if policy is None:
        notes.append(f"realized frequency not computed: {source}")
        return _Frequency(rows=[], table={}, policy_version=None, note=source)
    imps = impression_counts(
        events_dir,
        users,
        start,
        as_of,
        cap_windows(policy),
        _signal_lookback_seconds(settings),
        threads=settings.features.threads,
        memory_limit=settings.features.memory_limit,
    )
    rows, table = realized_frequency(imps, policy)
    note = None if table else f"no capped impressions in ({start.isoformat()}, {as_of.isoformat()}]"
    notes.append(f"policy for realized frequency: {policy.version} ({source})")
    return _Frequency(rows=rows, table=table, policy_version=policy.version, note=note)


def _current_sample(
    events_dir: str, users: str | None, settings: Settings, as_of: datetime, run: MonitoringRun, notes: list[str]
) -> tuple[Path, int]:
    """The model rows of the drift window, sampled and written for drift; (its path, rows before sampling)."""
    cfg = settings.monitoring
    model_config = load_model_config(settings.training.model_config_path)
    drift_start = as_of - timedelta(seconds=cfg.seconds("drift_window"))
    cur, cur_notes = current_rows(events_dir, users, drift_start, as_of, settings, model_config)
    notes += cur_notes
    current_count = len(cur)
    cur = sample(cur, cfg.drift.max_rows, cfg.drift.seed)
    cur.to_parquet(run.current_sample, index=False)
    return run.current_sample, current_count


def _signal_lookback_seconds(settings: Settings) -> float:
    return parse_duration(settings.features.signal_lookback).total_seconds()


# ---------------------------------------------------------------------------------------------------- drift


def drift_job(collected: dict[str, Any], settings: Settings, scorer: Any = None) -> dict[str, Any]:
    """Feature and prediction drift of the current rows against the training reference (Evidently); writes
    `drift.json`, the reference sample, and the latest HTML report (`<data_dir>/monitoring/drift_report.html`).

    Predictions come from `scorer` (a `prediction.Scorer`) when given, else from the champion model in MLflow
    (when `monitoring.drift.prediction` is on and there is one)."""
    started = time.perf_counter()
    cfg = settings.monitoring.drift
    run = MonitoringRun(Path(collected["run_dir"]))
    result: dict[str, Any] = {"computed": False, "rows": [], "notes": [], "columns": []}
    notes = result["notes"]

    def done() -> dict[str, Any]:
        _write_json(run.drift, result)
        for n in notes:
            log.info("drift: %s", n)
        return {**result, "drift_path": str(run.drift)}

    if not collected.get("current_path"):
        notes.append("no current rows (no events directory)")
        return done()
    current = pd.read_parquet(collected["current_path"])
    if len(current) < cfg.min_rows:
        notes.append(f"{len(current)} current rows, fewer than drift.min_rows = {cfg.min_rows}: drift not computed")
        return done()
    model_config = load_model_config(settings.training.model_config_path)
    reference_path, source = resolve_reference(settings, model_config)
    result["reference"] = {"path": str(reference_path) if reference_path else None, "source": source}
    if reference_path is None:
        notes.append(f"no reference: {source}")
        return done()

    if scorer is None and cfg.prediction:
        scorer = _champion_scorer(settings, model_config.registered_model, notes)
    wanted = [*cfg.columns, *(scorer.input_columns if scorer else ())]
    reference = read_reference(reference_path, list(dict.fromkeys(wanted)), cfg.max_rows, cfg.seed)
    columns = [c for c in cfg.columns if c in current.columns and c in reference.columns]
    dropped = [c for c in cfg.columns if c not in columns]
    if dropped:
        notes.append(f"columns not on both sides, not compared: {dropped}")
    if not columns:
        notes.append("no column to compare")
        return done()
    if scorer is not None:
        current, reference, scorer = _with_predictions(scorer, current, reference, notes)
        if scorer is not None:
            result["model"] = scorer.name
    keep = [*columns, *(["prediction"] if scorer is not None else [])]
    current, reference = current[keep], reference[keep]
    current.to_parquet(collected["current_path"], index=False)
    reference_sample = run.reference_sample
    reference.to_parquet(reference_sample, index=False)

    drift, rows, html = _evidently_drift(current, reference, columns, settings, parse_as_of(collected["as_of"]))
    result.update(
        computed=True,
        columns=columns,
        drift=drift.to_dict(),
        rows=[r.to_dict() for r in rows],
        reference_sample=str(reference_sample),
        current_sample=collected["current_path"],
        report_html=str(html),
    )
    log.info(
        "drift: %d of %d columns drifted (share %.2f)%s; %d current vs %d reference rows, %.1fs",
        drift.drifted_count, len(columns), drift.drifted_share,
        f", prediction score {drift.prediction.score:.3f}" if drift.prediction else "",
        len(current), len(reference), time.perf_counter() - started,
    )  # fmt: skip
    return done()


def _champion_scorer(settings: Settings, registered_model: str, notes: list[str]) -> Any:
    """The champion model's scorer, or None (with a note: no champion, or it could not be loaded)."""
    try:
        scorer = champion_scorer(settings, registered_model)
    except Exception as exc:  # a broken registry must not stop feature drift; it is said
        notes.append(f"prediction drift skipped: the champion model could not be loaded ({exc})")
        return None
    if scorer is None:
        notes.append("prediction drift skipped: no champion model")
    return scorer


def _with_predictions(
    scorer: Any, current: pd.DataFrame, reference: pd.DataFrame, notes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """Both sides with the model's `prediction` column, and the scorer; the scorer is None (and a note says why)
    when a side lacks the model inputs."""
    missing = sorted(set(scorer.missing(current)) | set(scorer.missing(reference)))
    if missing:
        notes.append(
            f"prediction drift skipped: rows lack the model inputs {missing[:6]}{' ...' if len(missing) > 6 else ''}"
        )
        return current, reference, None
    # float64: models often answer in float32, and the drift score should not depend on that.
    current = current.assign(prediction=np.asarray(scorer.predict(current), dtype=np.float64))
    reference = reference.assign(prediction=np.asarray(scorer.predict(reference), dtype=np.float64))
    return current, reference, scorer


def _evidently_drift(
    current: pd.DataFrame, reference: pd.DataFrame, columns: list[str], settings: Settings, as_of: datetime
) -> tuple[DriftResult, list[MetricRow], Path]:
    """Evidently's drift of `columns` (and `prediction` when present): the result, its metric rows, and the latest
    HTML report (rewritten)."""
    from freqcap.adapters import evidently as evidently_io  # why: Evidently takes seconds to import

    snapshot = evidently_io.run_report(current, reference, columns, settings.monitoring.drift, None, timestamp=as_of)
    drift = evidently_io.drift_result(snapshot, columns, len(current), len(reference))
    html = evidently_io.save_report_html(snapshot, DataLayout.of(settings).drift_report)
    rows = [
        MetricRow("drift_share", ALL, drift.drifted_share, float(len(current))),
        MetricRow("drifted_columns", ALL, float(drift.drifted_count), float(len(current))),
    ]
    rows += [
        MetricRow("feature_drift_score", f"column={c.column}", c.score, float(len(current))) for c in drift.columns
    ]
    if drift.prediction is not None:
        rows.append(MetricRow("prediction_drift_score", ALL, drift.prediction.score, float(len(current))))
    return drift, rows, html


# --------------------------------------------------------------------------------------------------- alarms


def _rows(*documents: dict[str, Any]) -> list[MetricRow]:
    return [MetricRow.from_dict(r) for d in documents for r in d.get("rows", [])]


def alarms_job(collected: dict[str, Any], drifted: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Evaluate the alarm rules on this run's numbers and step the incidents; writes `alarms.json`.

    `retrain` in the result is true when a new incident of a retraining rule (drift) fired in this run. A rerun of
    an already evaluated run returns what it decided the first time (no second alarm)."""
    as_of = parse_as_of(collected["as_of"])
    out = MonitoringRun(Path(collected["run_dir"])).alarms
    alerts = load_alerts(settings.monitoring.alerts_path)
    store = IncidentStore(DataLayout.of(settings).incidents_dir)
    rows = _rows(_read_json(collected["metrics_path"]), _read_json(drifted["drift_path"]))
    outcome = step(store.load(), alerts, observe(alerts, rows), as_of)
    if outcome.stale and out.exists():
        log.info("alarms for %s were evaluated already: returning that result", as_of.isoformat())
        return _read_json(out)
    result = {**outcome.to_dict(), "alarms_path": str(out)}
    _write_json(out, result)  # before the state: a crash in between re-evaluates this run, never skips it
    store.commit(outcome)
    log_outcome(outcome)
    log.info(
        "alarms: %d fired, %d resolved, %d open%s",
        len(outcome.fired), len(outcome.resolved), len(outcome.open), " (stale run: state unchanged)" if outcome.stale else "",
    )  # fmt: skip
    return result


def drift_signal(alarms: dict[str, Any]) -> dict[str, Any] | None:
    """The Asset event's extra for the incidents of retraining rules that fired in this run, or None (no event)."""
    fired = [i for i in alarms.get("fired", []) if i.get("retrain")]
    if not fired:
        return None
    return {
        "as_of": alarms["as_of"],
        "incidents": [
            f"{i['rule']} [{i['segment']}] {i['metric']}={i['value']:.4g} > {i['threshold']:.4g}" for i in fired
        ],
    }


def alarm_rows(alerts: AlertsConfig, alarms: dict[str, Any]) -> list[MetricRow]:
    """Alarm state as metric rows: open and fired counts, and per rule whether an incident is open (1/0)."""
    open_rules = {i["rule"] for i in alarms.get("open", [])}
    rows = [
        MetricRow("alarms_open", ALL, float(len(alarms.get("open", []))), 1.0),
        MetricRow("alarms_fired", ALL, float(len(alarms.get("fired", []))), 1.0),
    ]
    rows += [MetricRow("alarm_open", f"rule={r.name}", 1.0 if r.name in open_rules else 0.0, 1.0) for r in alerts.rules]
    return rows


# -------------------------------------------------------------------------------------------------- publish


def page_context(
    settings: Settings, metrics: dict[str, Any], drifted: dict[str, Any], alarms: dict[str, Any], links: dict[str, Any]
) -> dict[str, Any]:
    """The plain values the on-call page shows (see freqcap.domain.monitoring.page)."""
    open_ = alarms.get("open", [])
    fail_open_incidents = [i for i in open_ if i["metric"] == "fail_open_rate"]
    cfg = settings.monitoring
    return {
        "as_of": metrics["as_of"],
        "window": cfg.window,
        "baseline_window": cfg.baseline_window,
        "drift_window": cfg.drift_window,
        "serving_degraded": bool(fail_open_incidents),
        "fail_open": {
            **metrics["fail_open"],
            "incident_opened_at": min((i["opened_at"] for i in fail_open_incidents), default=None),
        },
        "open": open_,
        "fired": alarms.get("fired", []),
        "resolved": alarms.get("resolved", []),
        "cohorts": metrics["cohorts"],
        "cohorts_off": sorted({i["segment"] for i in open_ if i["segment"].startswith("cohort=")}),
        "drift": drifted.get("drift") if drifted.get("computed") else None,
        "drift_notes": drifted.get("notes", []),
        "stream": metrics.get("stream"),
        "frequency": metrics.get("frequency"),
        "frequency_note": metrics.get("frequency_note"),
        "policy_version": metrics.get("policy_version"),
        "report_html": drifted.get("report_html"),
        "workspace": links.get("workspace"),
        "notes": [*metrics.get("notes", []), *drifted.get("notes", [])],
    }


def publish_job(
    collected: dict[str, Any], drifted: dict[str, Any], alarms: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """One Evidently snapshot (drift + every metric row + alarm state, alarms also as tags and metadata) added to
    the workspace project, and the on-call page (`<data_dir>/monitoring/oncall.html`, and a copy in the run)."""
    from freqcap.adapters import evidently as evidently_io

    started = time.perf_counter()
    cfg = settings.monitoring
    as_of = parse_as_of(collected["as_of"])
    run = MonitoringRun(Path(collected["run_dir"]))
    alerts = load_alerts(cfg.alerts_path)
    metrics = _read_json(collected["metrics_path"])
    rows = [*_rows(metrics, drifted), *alarm_rows(alerts, alarms)]
    frame = rows_to_frame(rows).drop_duplicates(["name", "segment"])
    current = reference = None
    if drifted.get("computed"):
        current = pd.read_parquet(drifted["current_sample"])
        reference = pd.read_parquet(drifted["reference_sample"])
    open_ = alarms.get("open", [])
    tags = ["freqcap", *sorted({f"alarm:{i['rule']}" for i in open_})]
    # Evidently metadata values are strings (an empty list would be stored as an empty mapping).
    metadata = {
        "as_of": as_of.isoformat(),
        "alarms_open": "; ".join(f"{i['rule']} [{i['segment']}] since {i['opened_at']}" for i in open_) or "none",
        "alarms_fired": "; ".join(f"{i['rule']} [{i['segment']}]" for i in alarms.get("fired", [])) or "none",
        "alarms_resolved": "; ".join(f"{r['rule']} [{r['segment']}]" for r in alarms.get("resolved", [])) or "none",
        "serving_degraded": "yes" if any(i["metric"] == "fail_open_rate" for i in open_) else "no",
    }
    snapshot = evidently_io.run_report(
        current, reference, drifted.get("columns", []), cfg.drift, frame, timestamp=as_of, tags=tags, metadata=metadata
    )
    ids = evidently_io.add_snapshot(
        DataLayout.of(settings).workspace_dir, cfg.project, load_dashboard(cfg.dashboard_path), snapshot
    )
    html = render_page(page_context(settings, metrics, drifted, alarms, ids))
    page = DataLayout.of(settings).oncall_page
    _write_json(run.page_context, page_context(settings, metrics, drifted, alarms, ids))
    run.page.write_text(html)
    tmp = page.with_name(".oncall.html.tmp")
    tmp.write_text(html)
    tmp.replace(page)
    for sample_path in (drifted.get("current_sample"), drifted.get("reference_sample")):
        if sample_path:  # the snapshot holds the results; the samples would only fill the disk hourly
            Path(sample_path).unlink(missing_ok=True)
    log.info("published snapshot %s and %s in %.1fs", ids["snapshot_id"], page, time.perf_counter() - started)
    return {**ids, "page": str(page), "run_page": str(run.page), "metric_rows": len(frame)}


# ---------------------------------------------------------------------------------------------- all at once


def run_monitoring(
    settings: Settings,
    as_of: datetime | str,
    events_dir: str | None = None,
    users: str | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """validate the log → collect → drift → alarms → publish for one run (what the DAG does, in one process)."""

    events = events_dir_for(settings, events_dir)
    events = events if Path(events).exists() else None
    user_file = users_path_for(events, users) if events else users
    inputs = {
        "as_of": parse_as_of(as_of).isoformat(),
        "events_dir": events,
        "users": str(user_file) if user_file else None,
    }
    validated = validate_log_job(inputs, settings) if validate else {"validated": False, "note": "not asked"}
    collected = collect_job(inputs, settings)
    drifted = drift_job(collected, settings)
    alarms = alarms_job(collected, drifted, settings)
    published = publish_job(collected, drifted, alarms, settings)
    return {"validated": validated, "collected": collected, "drift": drifted, "alarms": alarms, "published": published}
