"""The monitoring pipeline as plain job functions (JSON values in and out, paths as strings) for the hourly DAG,
and `run_monitoring` which runs them in a row (`freqcap monitor`).

    collect_job   decision log → cap hit rates, their moves, fail-open; events + live policy → realized frequency;
                  stream status; the current window's rows for drift                     → metrics.json
    drift_job     current rows vs the training reference (and the champion's predictions) with Evidently
                                                                                          → drift.json + HTML report
    alarms_job    alarm rules over every number → incidents fired / resolved (state kept between runs)
                                                                                          → alarms.json
    paging_job    what is due (new, repeated after `repeat_interval`, resolved, still pending) to the webhook
                  receivers (Alertmanager / Slack format), retried, every delivery recorded   → paging.json
    publish_job   one Evidently snapshot with all of it added to the workspace project; the on-call page

Modules: `common` (locations and inputs), `collect` (the decision-log gate and collect), `drift`, `alarms`,
`paging`, `publish`. Everything a run writes lives in its run directory (`DataLayout.monitoring_run`); the incident state, the alarm
history, the latest on-call page, the latest drift report and the workspace live beside the runs (`freqcap.layout`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from freqcap.config import Settings
from freqcap.jobs.monitoring.alarms import alarms_job, drift_signal
from freqcap.jobs.monitoring.collect import collect_job, validate_log_job
from freqcap.jobs.monitoring.common import live_policy, monitored_events, resolve_inputs, resolve_reference, run_dir
from freqcap.jobs.monitoring.drift import drift_job
from freqcap.jobs.monitoring.paging import paging_job
from freqcap.jobs.monitoring.publish import page_context, publish_job
from freqcap.layout import parse_as_of


def run_monitoring(
    settings: Settings,
    as_of: datetime | str,
    events_dir: str | None = None,
    users: str | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """validate the log → collect → drift → alarms → paging → publish for one run (what the DAG does, in one process)."""

    events, user_file = monitored_events(settings, events_dir, users)
    inputs = {"as_of": parse_as_of(as_of).isoformat(), "events_dir": events, "users": user_file}
    validated = validate_log_job(inputs, settings) if validate else {"validated": False, "note": "not asked"}
    collected = collect_job(inputs, settings)
    drifted = drift_job(collected, settings)
    alarms = alarms_job(collected, drifted, settings)
    paged = paging_job(collected, alarms, settings)
    published = publish_job(collected, drifted, alarms, settings)
    return {
        "validated": validated,
        "collected": collected,
        "drift": drifted,
        "alarms": alarms,
        "paging": paged,
        "published": published,
    }


__all__ = [
    "alarms_job",
    "collect_job",
    "drift_job",
    "drift_signal",
    "live_policy",
    "page_context",
    "paging_job",
    "publish_job",
    "resolve_inputs",
    "resolve_reference",
    "run_dir",
    "run_monitoring",
    "validate_log_job",
]
