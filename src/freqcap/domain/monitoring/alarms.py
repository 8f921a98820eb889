"""Alarm rules over the metric table, and incidents that fire once.

An **incident** is one rule breaching for one segment (e.g. `cap_hit_rate_shift` for `cohort=cold/engaged`).
Each monitoring run turns the metric rows into observations (`observe`) and steps the incident state machine
(`step`):

- breaching, no open incident → **fire** (opened_at = this run); logged, written to the snapshot and the page;
- breaching, incident open → stay quiet (last value and peak updated): no alarm spam;
- not breaching, incident open → count a clear run; after the rule's `clear_after` clear runs → **resolve**;
- no observation (metric absent or below `min_support`) → the incident stays as it is: no data is not "clear";
- incidents of rules no longer configured resolve (reason `rule removed`).

A run at or before the last evaluated time changes nothing (`stale`): a retried or backfilled run never fires an
alarm twice. State persists between runs in a small JSON file (`freqcap.adapters.incident_store.IncidentStore`): open incidents and the last
evaluated time; every fired or resolved event is appended to `alarms.jsonl` beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from freqcap.domain.monitoring.metrics import MetricRow
from freqcap.domain.monitoring.rules import AlertsConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observation:
    rule: str
    segment: str
    value: float
    support: float
    threshold: float
    breaching: bool


@dataclass(frozen=True)
class Incident:
    rule: str
    segment: str
    metric: str
    severity: str
    retrain: bool
    threshold: float
    opened_at: str
    last_breach_at: str
    value: float  # the latest observed value
    peak: float  # the value furthest beyond the threshold so far
    clear_runs: int = 0

    @property
    def key(self) -> str:
        return f"{self.rule}|{self.segment}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AlarmOutcome:
    """What one evaluation did: incidents fired and resolved now, and what is open after it."""

    as_of: str
    stale: bool
    fired: tuple[Incident, ...]
    resolved: tuple[dict[str, Any], ...]
    open: tuple[Incident, ...]
    observations: tuple[Observation, ...]
    state: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def retrain(self) -> bool:
        """A new incident of a rule that triggers retraining (drift) fired in this run."""
        return any(i.retrain for i in self.fired)

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "stale": self.stale,
            "retrain": self.retrain,
            "fired": [i.to_dict() for i in self.fired],
            "resolved": list(self.resolved),
            "open": [i.to_dict() for i in self.open],
            "observations": [asdict(o) for o in self.observations],
        }


def observe(config: AlertsConfig, rows: Iterable[MetricRow]) -> list[Observation]:
    """Judge every metric row that a rule selects (and that has enough support)."""
    rows = list(rows)
    out = []
    for rule in config.rules:
        for row in rows:
            if rule.matches(row.name, row.segment) and row.support >= rule.min_support:
                out.append(
                    Observation(
                        rule.name, row.segment, row.value, row.support, rule.threshold, rule.breaches(row.value)
                    )
                )
    return out


def _further(rule_absolute: bool, above: bool, new: float, old: float) -> float:
    a, b = (abs(new), abs(old)) if rule_absolute else (new, old)
    return new if (a > b if above else a < b) else old


def step(
    state: dict[str, Any], config: AlertsConfig, observations: Iterable[Observation], as_of: datetime
) -> AlarmOutcome:
    """Advance the incident state machine by one run (pure: returns the new state in the outcome)."""
    stamp = as_of.isoformat()
    current = {k: Incident(**v) for k, v in (state.get("open") or {}).items()}
    observations = tuple(observations)
    last = state.get("last_as_of")
    if last is not None and datetime.fromisoformat(last) >= as_of:
        return AlarmOutcome(stamp, True, (), (), tuple(current.values()), observations, state)

    fired: list[Incident] = []
    resolved: list[dict[str, Any]] = []
    seen: set[str] = set()
    for obs in observations:
        rule = config.rule(obs.rule)
        assert rule is not None
        key = f"{obs.rule}|{obs.segment}"
        seen.add(key)
        incident = current.get(key)
        if obs.breaching:
            if incident is None:
                incident = Incident(
                    rule=rule.name,
                    segment=obs.segment,
                    metric=rule.metric,
                    severity=rule.severity,
                    retrain=rule.retrain,
                    threshold=rule.threshold,
                    opened_at=stamp,
                    last_breach_at=stamp,
                    value=obs.value,
                    peak=obs.value,
                )
                fired.append(incident)
            else:
                peak = _further(rule.absolute, rule.above is not None, obs.value, incident.peak)
                incident = replace(incident, last_breach_at=stamp, value=obs.value, peak=peak, clear_runs=0)
            current[key] = incident
        elif incident is not None:
            incident = replace(incident, value=obs.value, clear_runs=incident.clear_runs + 1)
            if incident.clear_runs >= rule.clear_after:
                del current[key]
                resolved.append({**incident.to_dict(), "resolved_at": stamp, "reason": "cleared"})
            else:
                current[key] = incident
    for key, incident in list(current.items()):
        if config.rule(incident.rule) is None:
            del current[key]
            resolved.append({**incident.to_dict(), "resolved_at": stamp, "reason": "rule removed"})
    new_state = {"last_as_of": stamp, "open": {k: v.to_dict() for k, v in sorted(current.items())}}
    return AlarmOutcome(
        stamp, False, tuple(fired), tuple(resolved), tuple(current[k] for k in sorted(current)), observations, new_state
    )


def log_outcome(outcome: AlarmOutcome) -> None:
    """One log line per fired or resolved incident (WARNING: someone may be paged on these)."""
    for i in outcome.fired:
        log.warning(
            "ALARM fired: %s [%s] %s=%.4g beyond %.4g (severity %s%s)",
            i.rule,
            i.segment,
            i.metric,
            i.value,
            i.threshold,
            i.severity,
            ", triggers retraining" if i.retrain else "",
        )
    for r in outcome.resolved:
        log.warning(
            "ALARM resolved: %s [%s] open since %s (%s, last %s=%.4g)",
            r["rule"],
            r["segment"],
            r["opened_at"],
            r["reason"],
            r["metric"],
            r["value"],
        )
