"""`alarms_job`: alarm rules over every number of the run, incidents fired and resolved (kept between runs), and the
drift signal that schedules retraining."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from freqcap.adapters.incident_store import IncidentStore
from freqcap.config import Settings
from freqcap.domain.monitoring.alarms import log_outcome, observe, step
from freqcap.domain.monitoring.rules import load_alerts
from freqcap.jobs.monitoring.common import metric_rows, read_json, write_json
from freqcap.layout import DataLayout, MonitoringRun, parse_as_of

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- alarms


def alarms_job(collected: dict[str, Any], drifted: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Evaluate the alarm rules on this run's numbers and step the incidents; writes `alarms.json`.

    `retrain` in the result is true when a new incident of a retraining rule (drift) fired in this run. A rerun of
    an already evaluated run returns what it decided the first time (no second alarm)."""
    as_of = parse_as_of(collected["as_of"])
    out = MonitoringRun(Path(collected["run_dir"])).alarms
    alerts = load_alerts(settings.monitoring.alerts_path)
    store = IncidentStore(DataLayout.of(settings).incidents_dir)
    rows = metric_rows(read_json(collected["metrics_path"]), read_json(drifted["drift_path"]))
    outcome = step(store.load(), alerts, observe(alerts, rows), as_of)
    if outcome.stale and out.exists():
        log.info("alarms for %s were evaluated already: returning that result", as_of.isoformat())
        return read_json(out)
    result = {**outcome.to_dict(), "alarms_path": str(out)}
    write_json(out, result)  # before the state: a crash in between re-evaluates this run, never skips it
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
