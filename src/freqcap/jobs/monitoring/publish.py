"""`publish_job`: one Evidently snapshot in the workspace project, and the on-call page."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from freqcap.config import Settings
from freqcap.domain.monitoring.metrics import (
    rows_to_frame,
)
from freqcap.domain.monitoring.page import render_page
from freqcap.domain.monitoring.rules import load_alerts, load_dashboard
from freqcap.jobs.monitoring.common import alarm_rows, metric_rows, read_json, write_json
from freqcap.layout import DataLayout, MonitoringRun, parse_as_of

log = logging.getLogger(__name__)


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
        "fairness": metrics.get("fairness"),
        "fairness_thresholds": _fairness_thresholds(settings),
        "fragmentation": metrics.get("fragmentation"),
        "paging": links.get("paging"),
        "report_html": drifted.get("report_html"),
        "workspace": links.get("workspace"),
        "notes": [*metrics.get("notes", []), *drifted.get("notes", [])],
    }


def _fairness_thresholds(settings: Settings) -> tuple[float, float]:
    """(below, above) of the cap ÷ curve rules, for the page's verdicts (0 / inf when a rule is removed)."""
    below, above = 0.0, float("inf")
    for rule in load_alerts(settings.monitoring.alerts_path).rules:
        if rule.metric == "cap_to_curve_ratio":
            below = rule.below if rule.below is not None else below
            above = rule.above if rule.above is not None else above
    return below, above


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
    metrics = read_json(collected["metrics_path"])
    rows = [*metric_rows(metrics, drifted), *alarm_rows(alerts, alarms)]
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
    paging = read_json(run.paging) if run.paging.exists() else None  # what paging_job sent in this run
    context = page_context(settings, metrics, drifted, alarms, {**ids, "paging": paging})
    html = render_page(context)
    page = DataLayout.of(settings).oncall_page
    write_json(run.page_context, context)
    run.page.write_text(html)
    tmp = page.with_name(".oncall.html.tmp")
    tmp.write_text(html)
    tmp.replace(page)
    for sample_path in (drifted.get("current_sample"), drifted.get("reference_sample")):
        if sample_path:  # the snapshot holds the results; the samples would only fill the disk hourly
            Path(sample_path).unlink(missing_ok=True)
    log.info("published snapshot %s and %s in %.1fs", ids["snapshot_id"], page, time.perf_counter() - started)
    return {**ids, "page": str(page), "run_page": str(run.page), "metric_rows": len(frame)}
