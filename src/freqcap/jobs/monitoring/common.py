"""Shared by the monitoring jobs: where a run writes, small JSON helpers, the run's inputs (as-of, events, users,
the live policy, the drift reference) and the metric rows the later jobs read back."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from freqcap.adapters.airflow.context import run_as_of
from freqcap.adapters.duckdb.training_set import TRAINING_FILE
from freqcap.adapters.mlflow.champion import champion_training_set
from freqcap.adapters.policy_store import (
    PolicyStoreUnavailable,
    StoredPolicyInvalid,
    policy_from_stored,
    policy_store_from_settings,
)
from freqcap.config import Settings, parse_duration
from freqcap.domain.monitoring.metrics import (
    ALL,
    MetricRow,
)
from freqcap.domain.monitoring.rules import AlertsConfig
from freqcap.domain.policy import load_policy
from freqcap.jobs.features import events_dir_for
from freqcap.jobs.privacy import pseudonymous_events
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- locations


def run_dir(settings: Settings, as_of: datetime) -> Path:
    """Where the monitoring run for `as_of` writes (`DataLayout.monitoring_run`)."""
    return DataLayout.of(settings).monitoring_run(as_of).root


def write_json(path: Path, data: Any) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------------------------------- inputs


def resolve_inputs(context: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """as_of (the `as_of` param, else the end of the run's data interval), events_dir and users (params or the
    defaults; None when there are no events)."""
    params = context.get("params") or {}
    events_dir, users = monitored_events(settings, params.get("events_dir"), params.get("users"))
    return {"as_of": run_as_of(context).isoformat(), "events_dir": events_dir, "users": users}


def monitored_events(settings: Settings, events_dir: str | None, users: str | None) -> tuple[str | None, str | None]:
    """The events directory (None when there is none) and users table monitoring reads: with `privacy.enabled`,
    their pseudonymized copy (`freqcap.jobs.privacy`), so per-user counts and drift samples hold no raw id."""
    events = events_dir_for(settings, events_dir)
    if not Path(events).exists():
        return None, users
    return pseudonymous_events(settings, events, users)


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
    """(policy, where it came from): `monitoring.policy_path`, else the policy store serving reads
    (`serving.policy_store`, when configured and it holds a valid policy), else the policy last published, else
    `serving.policy_path`; (None, reason) when there is none."""
    if settings.monitoring.policy_path:
        return load_policy(settings.monitoring.policy_path), f"monitoring.policy_path {settings.monitoring.policy_path}"
    if (store := policy_store_from_settings(settings)) is not None:
        try:
            stored = store.load()
            if stored is not None:
                return policy_from_stored(stored), f"{store.kind} policy store (pushed {stored.pushed_at})"
        except (PolicyStoreUnavailable, StoredPolicyInvalid) as exc:  # the files below are the next best thing
            log.warning("policy store not usable for monitoring (%s); falling back to the published log", exc)
    published = DataLayout.of(settings).published_log
    if published.exists():
        lines = [line for line in published.read_text().splitlines() if line.strip()]
        if lines:
            path = json.loads(lines[-1]).get("policy_path")
            if path and Path(path).exists():
                return load_policy(path), f"last published ({path})"
    if settings.serving.policy_path and Path(settings.serving.policy_path).exists():
        return load_policy(settings.serving.policy_path), f"serving.policy_path {settings.serving.policy_path}"
    return None, (
        "no live policy found (monitoring.policy_path, serving.policy_store, publish/published.jsonl, "
        "serving.policy_path)"
    )


def fail_open_threshold(alerts: AlertsConfig) -> float:
    """The fail-open rate below which a 5-minute bucket counts as healthy (the fail-open rule's threshold; with
    no such rule, a bucket is healthy only without any failed-open decision)."""
    for rule in alerts.rules:
        if rule.metric == "fail_open_rate" and rule.matches("fail_open_rate", ALL) and rule.above is not None:
            return rule.above
    return 1e-12


def windows(settings: Settings, as_of: datetime) -> tuple[datetime, datetime]:
    """(start of the current window, start of the baseline window) for a run ending at `as_of`."""
    cfg = settings.monitoring
    start = as_of - timedelta(seconds=cfg.seconds("window"))
    return start, start - timedelta(seconds=cfg.seconds("baseline_window"))


def signal_lookback_seconds(settings: Settings) -> float:
    return parse_duration(settings.features.signal_lookback).total_seconds()


def metric_rows(*documents: dict[str, Any]) -> list[MetricRow]:
    return [MetricRow.from_dict(r) for d in documents for r in d.get("rows", [])]


def alarm_rows(alerts: AlertsConfig, alarms: dict[str, Any]) -> list[MetricRow]:
    """Alarm state as metric rows: open and fired counts, and per rule whether an incident is open (1/0)."""
    open_rules = {i["rule"] for i in alarms.get("open", [])}
    rows = [
        MetricRow("alarms_open", ALL, float(len(alarms.get("open", []))), 1.0),
        MetricRow("alarms_fired", ALL, float(len(alarms.get("fired", []))), 1.0),
    ]
    rows += [MetricRow("alarm_open", f"rule={r.name}", 1.0 if r.name in open_rules else 0.0, 1.0) for r in alerts.rules]
    return rows
