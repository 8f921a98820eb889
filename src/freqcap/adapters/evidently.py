"""Evidently 0.7: drift reports, freqcap's own numbers as Evidently metrics, and the workspace project.

- **Drift**: `ValueDrift` per compared column (and for the champion's `prediction`), plus `DriftedColumnsCount`,
  with the stat tests fixed by configuration (Evidently's automatic choice changes with the sample size, which
  would split a dashboard series in two). A column has drifted when Evidently's own drift test fails.
- **`FreqcapValue`**: a custom single-value metric holding one row of the run's metric table (name + segment), so
  every cap hit rate, fail-open rate, realized-frequency number, stream lag and alarm state becomes a time series
  of the workspace project. Its value is read from the report's additional dataset `freqcap_metrics`.
- **Workspace**: one project (`monitoring.project`), its dashboard rebuilt from `resources/monitoring/dashboard.yaml` with
  stable panel ids (rewriting it is idempotent), one snapshot added per monitoring run. `evidently ui --workspace
  <dir>` serves it (`make ui`); it reads the snapshots without importing this module.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric
from evidently.core.report import Snapshot
from evidently.metrics import DriftedColumnsCount, ValueDrift

from freqcap.domain.monitoring.rules import DashboardConfig

log = logging.getLogger(__name__)

METRICS_DATASET = "freqcap_metrics"
PREDICTION = "prediction"
_NAMESPACE = uuid.UUID("6f1d3f52-8a4e-4b8e-9a56-3c1f6f0d2b7e")


class FreqcapValue(SingleValueMetric):
    """One row (`name`, `segment`) of a freqcap monitoring run's metric table."""

    name: str
    segment: str = "all"


class FreqcapValueCalculation(SingleValueCalculation[FreqcapValue]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any):
        data = context.additional_data.get(METRICS_DATASET)
        if data is None:
            raise ValueError(f"FreqcapValue needs the additional dataset {METRICS_DATASET!r}")
        frame = data.as_dataframe()
        match = frame[(frame["name"] == self.metric.name) & (frame["segment"] == self.metric.segment)]
        if match.empty:
            raise ValueError(f"no metric row {self.metric.name} [{self.metric.segment}]")
        return self.result(float(match["value"].iloc[0]))

    def display_name(self) -> str:
        return f"{self.metric.name} [{self.metric.segment}]"


# ---------------------------------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    score: float
    method: str
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Per-column drift of the current rows against the reference, and the share of drifted feature columns."""

    columns: tuple[ColumnDrift, ...]
    drifted_share: float  # over the feature columns (not the prediction)
    drifted_count: int
    prediction: ColumnDrift | None
    current_rows: int
    reference_rows: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_columns"] = self.drifted_columns
        return out


def _is_categorical(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def data_definition(frame: pd.DataFrame, columns: list[str]) -> DataDefinition:
    cat = [c for c in columns if _is_categorical(frame[c])]
    return DataDefinition(numerical_columns=[c for c in columns if c not in cat], categorical_columns=cat)


def drift_metrics(frame: pd.DataFrame, columns: list[str], cfg: Any, prediction: bool) -> list[Any]:
    """`DriftedColumnsCount` over `columns`, `ValueDrift` per column (and for `prediction`), with fixed tests."""
    metrics: list[Any] = [
        DriftedColumnsCount(
            columns=list(columns),
            cat_method=cfg.cat_method,
            num_method=cfg.num_method,
            cat_threshold=cfg.cat_threshold,
            num_threshold=cfg.num_threshold,
        )
    ]
    for c in columns:
        if _is_categorical(frame[c]):
            metrics.append(ValueDrift(column=c, method=cfg.cat_method, threshold=cfg.cat_threshold))
        else:
            metrics.append(ValueDrift(column=c, method=cfg.num_method, threshold=cfg.num_threshold))
    if prediction:
        metrics.append(ValueDrift(column=PREDICTION, method=cfg.num_method, threshold=cfg.prediction_threshold))
    return metrics


def freqcap_metrics(rows: pd.DataFrame) -> list[FreqcapValue]:
    return [FreqcapValue(name=r.name, segment=r.segment) for r in rows.itertuples(index=False)]


def _metrics_dataset(rows: pd.DataFrame) -> Dataset:
    frame = rows[["name", "segment", "value", "support"]].reset_index(drop=True)
    return Dataset.from_pandas(
        frame,
        data_definition=DataDefinition(categorical_columns=["name", "segment"], numerical_columns=["value", "support"]),
    )


def run_report(
    current: pd.DataFrame | None,
    reference: pd.DataFrame | None,
    columns: list[str],
    cfg: Any,
    rows: pd.DataFrame | None,
    *,
    timestamp: datetime,
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Snapshot:
    """One Evidently report: drift (when both sides are given) plus a `FreqcapValue` per metric row (if any)."""
    if rows is not None and rows.empty:
        rows = None
    if rows is None and (current is None or reference is None):
        raise ValueError("nothing to report: no drift inputs and no metric rows")
    metrics: list[Any] = freqcap_metrics(rows) if rows is not None else []
    current_ds: Any
    reference_ds: Any = None
    if current is not None and reference is not None:
        prediction = PREDICTION in current.columns and PREDICTION in reference.columns
        used = [*columns, *([PREDICTION] if prediction else [])]
        definition = data_definition(current, used)
        metrics = drift_metrics(current, columns, cfg, prediction) + metrics
        current_ds = Dataset.from_pandas(current[used].reset_index(drop=True), data_definition=definition)
        reference_ds = Dataset.from_pandas(reference[used].reset_index(drop=True), data_definition=definition)
    else:
        current_ds = _metrics_dataset(rows)  # no drift this run: the report is about the metric table alone
    # Snapshot times are naive UTC (Evidently compares them with naive datetimes).
    stamp = timestamp.astimezone(UTC).replace(tzinfo=None)
    return Report(metrics, include_tests=True).run(
        current_ds,
        reference_ds,
        additional_data={METRICS_DATASET: _metrics_dataset(rows)} if rows is not None else None,
        timestamp=stamp,
        tags=tags or [],
        metadata=metadata or {},
    )


def drift_result(snapshot: Snapshot, columns: list[str], current_rows: int, reference_rows: int) -> DriftResult:
    """Per-column drift read back from a report's metrics and Evidently's own drift tests."""
    data = snapshot.dict()
    failed = {t["metric_config"]["metric_id"] for t in data.get("tests", []) if t.get("status") == "FAIL"}
    by_column: dict[str, ColumnDrift] = {}
    drifted_count, drifted_share = None, None
    for m in data["metrics"]:
        config = m["config"]
        kind = config["type"].rsplit(":", 1)[-1]
        if kind == "ValueDrift":
            by_column[config["column"]] = ColumnDrift(
                config["column"],
                float(m["value"]),
                str(config["method"]),
                float(config["threshold"]),
                m["id"] in failed,
            )
        elif kind == "DriftedColumnsCount":
            drifted_count, drifted_share = int(m["value"]["count"]), float(m["value"]["share"])
    cols = tuple(by_column[c] for c in columns)
    mine = sum(c.drifted for c in cols)
    if drifted_count is not None and drifted_count != mine:
        # Both come from Evidently with the same tests; a mismatch would mean the tests were not fixed.
        log.warning("DriftedColumnsCount says %d drifted columns, per-column tests say %d", drifted_count, mine)
    return DriftResult(
        columns=cols,
        drifted_share=drifted_share if drifted_share is not None else (mine / len(cols) if cols else 0.0),
        drifted_count=mine,
        prediction=by_column.get(PREDICTION),
        current_rows=current_rows,
        reference_rows=reference_rows,
    )


def save_report_html(snapshot: Snapshot, path: Path) -> Path:
    """The self-contained HTML report (written to a temp name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    snapshot.save_html(str(tmp))
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------------ workspace


def _panel_plot(tab: str, panel: Any) -> Any:
    from evidently.sdk.models import DashboardPanelPlot, PanelMetric

    plot_params: dict[str, Any] = {"plot_type": panel.type}
    if panel.type == "counter":
        plot_params["aggregation"] = panel.aggregation
    if panel.type == "bar":
        plot_params["is_stacked"] = False
    return DashboardPanelPlot(
        id=uuid.uuid5(_NAMESPACE, f"panel/{tab}/{panel.title}"),
        title=panel.title,
        subtitle=panel.description,
        size=panel.size,
        values=[PanelMetric(metric=s.metric, metric_labels=dict(s.labels), legend=s.legend) for s in panel.series],
        plot_params=plot_params,
    )


def dashboard_model(config: DashboardConfig) -> Any:
    """The Evidently dashboard for `config`, with ids derived from the titles (stable across runs)."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel

    tabs, panels = [], []
    for tab in config.tabs:
        plots = [_panel_plot(tab.title, p) for p in tab.panels]
        panels += plots
        tabs.append(
            DashboardTabModel(
                id=uuid.uuid5(_NAMESPACE, f"tab/{tab.title}"), title=tab.title, panels=[p.id for p in plots]
            )
        )
    return DashboardModel(tabs=tabs, panels=panels)


def open_project(workspace_dir: Path, name: str, dashboard: DashboardConfig) -> tuple[Any, Any]:
    """The workspace and its project `name` (created when new), with the dashboard set from `dashboard`."""
    from evidently.ui.workspace import Workspace

    workspace_dir.mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(workspace_dir))
    found = [p for p in ws.search_project(name)]
    project = found[0] if found else ws.create_project(name, description=dashboard.description or None)
    model = dashboard_model(dashboard)
    if ws.get_dashboard(project.id) != model:
        ws.save_dashboard(project.id, model)
    return ws, project


def add_snapshot(workspace_dir: Path, name: str, dashboard: DashboardConfig, snapshot: Snapshot) -> dict[str, str]:
    """Add one run's snapshot to the project; returns the project and snapshot ids."""
    ws, project = open_project(workspace_dir, name, dashboard)
    ref = ws.add_run(project.id, snapshot)
    return {"workspace": str(workspace_dir), "project_id": str(project.id), "snapshot_id": str(ref.id)}


def prune_workspace(workspace_dir: Path, cutoff: datetime, dry_run: bool = False) -> int:
    """Delete the snapshots of every project in the workspace whose report time is before `cutoff`, through
    Evidently's own workspace API (it owns the file format). Returns the number of snapshots."""
    from evidently.ui.workspace import Workspace

    if not Path(workspace_dir).is_dir():
        return 0
    ws = Workspace(str(workspace_dir))
    naive_cutoff = cutoff.astimezone(UTC).replace(tzinfo=None)  # snapshot times are naive UTC (run_report)
    removed = 0
    for project in ws.list_projects():
        for snapshot_id in ws.list_runs(project.id):
            snapshot = ws.get_run(project.id, snapshot_id)
            taken = snapshot.timestamp
            if taken.tzinfo is not None:
                taken = taken.astimezone(UTC).replace(tzinfo=None)
            if taken >= naive_cutoff:
                continue
            if not dry_run:
                ws.delete_run(project.id, snapshot_id)
            removed += 1
    if removed:
        log.info(
            "%s %d Evidently snapshots older than %s",
            "would delete" if dry_run else "deleted",
            removed,
            cutoff.isoformat(),
        )
    return removed
