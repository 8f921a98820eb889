"""The decision-log gate and `collect_job`: cap hit rates and their moves, fail-open, realized frequency, stream
status, the current window's rows for drift."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from freqcap.adapters.decision_log import FIELDS, read_log_rows, read_log_window
from freqcap.adapters.duckdb.creatives import creative_counts
from freqcap.adapters.duckdb.current_rows import current_rows, sample
from freqcap.adapters.duckdb.impressions import impression_counts
from freqcap.adapters.gx.decision_log import validate_decision_log
from freqcap.adapters.stream.monitoring import stream_rows, stream_status
from freqcap.config import Settings, parse_duration
from freqcap.domain.monitoring.fairness import curve_windows, fairness_audit
from freqcap.domain.monitoring.fragmentation import FragmentationParams, fragmentation, recommendation_text
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
)
from freqcap.domain.monitoring.rules import AlertsConfig, load_alerts
from freqcap.domain.training.config import load_model_config
from freqcap.jobs.monitoring.common import (
    fail_open_threshold,
    live_policy,
    signal_lookback_seconds,
    windows,
    write_json,
)
from freqcap.jobs.privacy import pseudonymous_events
from freqcap.layout import DataLayout, MonitoringRun, parse_as_of

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------------- validate


def validate_log_job(inputs: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The decision-log gate (`freqcap.adapters.gx.decision_log`, suite `monitoring/gx/decision_log.json`) on the
    rows this run will read: raises `DecisionLogGateError` naming each failed rule. No log yet: nothing to check."""

    as_of = parse_as_of(inputs["as_of"])
    _, base_start = windows(settings, as_of)
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
    start, base_start = windows(settings, as_of)

    served = _served_decisions(settings, alerts, as_of, start, base_start, notes)
    rows = list(served.rows)
    stream = stream_status(settings)
    rows += stream_rows(stream)
    if stream is None and settings.stream.enabled:
        notes.append("stream enabled in settings but no status was read (worker down or its Redis unreachable)")
    events_dir, users = inputs.get("events_dir"), inputs.get("users")
    if events_dir:  # the copy `resolve_inputs` made; pseudonymized here when a caller passed raw events
        events_dir, users = pseudonymous_events(settings, events_dir, users)
        frequency = _realized_frequency(events_dir, users, settings, start, as_of, notes, served)
        rows += frequency.rows + frequency.fairness_rows
        fragmented = _fragmentation(events_dir, settings, as_of, notes)
        rows += fragmented.rows
        current_path, current_count = _current_sample(events_dir, users, settings, as_of, run, notes)
    else:
        frequency = _Frequency(rows=[], table={}, policy_version=None, note="no events directory")
        fragmented = _Fragmentation(rows=[], summary=None)
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
        "fairness": frequency.fairness,
        "fragmentation": fragmented.summary,
        "events_dir": events_dir,
        "users": users,
        "current_rows": current_count,
        "notes": notes,
    }
    metrics_path = write_json(run.metrics, metrics)
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
    threshold = fail_open_threshold(alerts)
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
    fairness_rows: list[MetricRow] = field(default_factory=list)
    fairness: dict[str, Any] | None = None


def _realized_frequency(
    events_dir: str,
    users: str | None,
    settings: Settings,
    start: datetime,
    as_of: datetime,
    notes: list[str],
    served: _ServedDecisions,
) -> _Frequency:
    """Impressions per user over each cap window of the live policy (and each curve window of the fairness
    audit), from the events of (start, as_of]."""
    policy, source = live_policy(settings)
    if policy is None:
        notes.append(f"realized frequency not computed: {source}")
        return _Frequency(rows=[], table={}, policy_version=None, note=source)
    caps, caps_source = _curve_caps(settings, notes)
    windows = cap_windows(policy)
    for level, w in (curve_windows(caps) if caps is not None else {}).items():
        windows.setdefault(level, set()).add(w)
    imps = impression_counts(
        events_dir,
        users,
        start,
        as_of,
        windows,
        signal_lookback_seconds(settings),
        threads=settings.features.threads,
        memory_limit=settings.features.memory_limit,
    )
    rows, table = realized_frequency(imps, policy)
    note = None if table else f"no capped impressions in ({start.isoformat()}, {as_of.isoformat()}]"
    notes.append(f"policy for realized frequency: {policy.version} ({source})")
    fairness, fairness_rows = None, []
    if caps is not None:
        hit = {c["cohort"]: c["rate"] for c in cohort_table(served.current, served.baseline)}
        audit, fairness_rows = fairness_audit(imps, policy, caps, hit)
        fairness = {"curves": caps_source, "cohorts": audit}
    return _Frequency(rows, table, policy.version, note, fairness_rows, fairness)


def _curve_caps(settings: Settings, notes: list[str]) -> tuple[pd.DataFrame | None, str]:
    """The caps table of the fairness audit: `monitoring.fairness.curves_path`, else the newest curves fit."""
    cfg = settings.monitoring.fairness
    if not cfg.enabled:
        return None, "off"
    path = Path(cfg.curves_path) if cfg.curves_path else None
    if path is None:
        found = sorted(DataLayout.of(settings).curves_root.glob("*/caps.parquet"))
        path = found[-1] if found else None
    if path is None or not path.is_file():
        notes.append(f"fairness audit not computed: no curves ({path or 'no curves fit under <data_dir>/curves'})")
        return None, "none"
    return pd.read_parquet(path), str(path)


@dataclass(frozen=True)
class _Fragmentation:
    rows: list[MetricRow]
    summary: dict[str, Any] | None


def _fragmentation(events_dir: str, settings: Settings, as_of: datetime, notes: list[str]) -> _Fragmentation:
    """Conversions per creative per week, the share below learning and the HHI per campaign."""
    cfg = settings.monitoring.fragmentation
    if not cfg.enabled:
        return _Fragmentation([], None)
    window = parse_duration(cfg.window).total_seconds()
    counts = creative_counts(
        events_dir,
        as_of - timedelta(seconds=window),
        as_of,
        threads=settings.features.threads,
        memory_limit=settings.features.memory_limit,
    )
    params = FragmentationParams(window, cfg.learning_conversions_per_week, cfg.min_share_below)
    table, rows = fragmentation(counts, params)
    shown = [{**r, "text": recommendation_text(r)} for r in table.head(cfg.max_campaigns_shown).to_dict("records")]
    summary = {
        "window": cfg.window,
        "threshold": cfg.learning_conversions_per_week,
        "campaigns": len(table),
        "to_consolidate": int((table["recommendation"] == "consolidate").sum()) if len(table) else 0,
        "underfunded": int((table["recommendation"] == "underfunded").sum()) if len(table) else 0,
        "creatives": len(counts),
        "shown": shown,
    }
    if summary["to_consolidate"]:
        notes.append(f"{summary['to_consolidate']} campaign(s) split delivery over too many creatives to learn")
    return _Fragmentation(rows, summary)


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
