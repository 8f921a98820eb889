"""Declarative monitoring config: alarm rules (`resources/monitoring/alerts.yaml`) and dashboard panels
(`resources/monitoring/dashboard.yaml`), validated into frozen models. Invalid files raise `MonitoringConfigError` naming the
file and each offending field.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from freqcap.errors import FreqcapError
from freqcap.resources import alerts_path, dashboard_path

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MonitoringConfigError(FreqcapError):
    """An alerts or dashboard file is missing or invalid; the message names the file and the fields."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AlertRule(_Frozen):
    """One alarm rule: a metric (optionally per segment) compared with a threshold.

    Each metric row whose `name` is `metric` and whose `segment` matches the glob `segments` is judged on its own
    (one incident per rule and segment: "which cohort" is the segment). Rows with less `support` than
    `min_support` are not judged (too little data to say anything; an open incident stays as it is).
    """

    name: str
    description: str = ""
    metric: str = Field(min_length=1)
    segments: str = "all"
    above: float | None = None
    below: float | None = None
    # Compare |value| (for signed changes such as cap_hit_rate_change).
    absolute: bool = False
    min_support: float = Field(0.0, ge=0.0)
    # `page`: someone must look now (and "serving degraded" on the page when the metric is fail_open_rate).
    severity: Literal["page", "warn"] = "warn"
    # A new incident of this rule updates the Airflow Asset `freqcap_drift_alarm` (which schedules training).
    retrain: bool = False
    # Consecutive clear runs before an open incident resolves (1: the first clear run resolves it).
    clear_after: int = Field(1, ge=1)

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("must be lower_snake_case (letters, digits, underscores)")
        return name

    @model_validator(mode="after")
    def _one_threshold(self) -> AlertRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of `above` or `below`")
        return self

    @property
    def threshold(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    def matches(self, name: str, segment: str) -> bool:
        return name == self.metric and fnmatch.fnmatchcase(segment, self.segments)

    def breaches(self, value: float) -> bool:
        """Is `value` beyond the threshold (strictly: a value equal to the threshold is fine)?"""
        v = abs(value) if self.absolute else value
        return v > self.above if self.above is not None else v < self.below  # type: ignore[operator]


class AlertsConfig(_Frozen):
    rules: tuple[AlertRule, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> AlertsConfig:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {dupes}")
        return self

    def rule(self, name: str) -> AlertRule | None:
        return next((r for r in self.rules if r.name == name), None)


class PanelSeries(_Frozen):
    """One series of a panel: an Evidently metric type and the parameters that select it."""

    metric: str = Field(min_length=1)  # e.g. FreqcapValue, DriftedColumnsCount, ValueDrift
    labels: dict[str, str] = Field(default_factory=dict)
    legend: str | None = None


class Panel(_Frozen):
    title: str = Field(min_length=1)
    description: str | None = None
    type: Literal["line", "bar", "counter", "text"] = "line"
    size: Literal["full", "half"] = "full"
    # For counters: how the series is reduced over the selected period.
    aggregation: Literal["last", "sum", "avg"] = "last"
    series: tuple[PanelSeries, ...] = ()

    @model_validator(mode="after")
    def _series(self) -> Panel:
        if self.type != "text" and not self.series:
            raise ValueError(f"a {self.type} panel needs at least one series")
        return self


class Tab(_Frozen):
    title: str = Field(min_length=1)
    panels: tuple[Panel, ...] = Field(min_length=1)


class DashboardConfig(_Frozen):
    description: str = ""
    tabs: tuple[Tab, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_titles(self) -> DashboardConfig:
        titles = [(t.title, p.title) for t in self.tabs for p in t.panels]
        dupes = sorted({f"{t}/{p}" for t, p in titles if titles.count((t, p)) > 1})
        if dupes:
            raise ValueError(f"panel titles must be unique within a tab: {dupes}")
        return self


def _load(path: Path, model: type[BaseModel]) -> Any:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MonitoringConfigError(f"cannot read {path}: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in exc.errors())
        raise MonitoringConfigError(f"invalid {path}: {fields}") from exc


def load_alerts(path: str | Path | None = None) -> AlertsConfig:
    """Alarm rules from `path` (default: the packaged `resources/monitoring/alerts.yaml`)."""
    return _load(Path(path) if path else alerts_path(), AlertsConfig)


def load_dashboard(path: str | Path | None = None) -> DashboardConfig:
    """Dashboard tabs and panels from `path` (default: the packaged `resources/monitoring/dashboard.yaml`)."""
    return _load(Path(path) if path else dashboard_path(), DashboardConfig)
