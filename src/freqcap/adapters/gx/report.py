"""The result of one event validation run, as written to `validation_report.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ExpectationOutcome:
    """One rule of the suite (or the per-file schema rule) over the whole batch."""

    rule: str
    expectation_type: str
    columns: tuple[str, ...]
    on_failure: str  # quarantine | dedup | error
    success: bool | None  # None when skipped
    unexpected_count: int = 0
    element_count: int = 0
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def counts_toward_bad_share(self) -> bool:
        return self.on_failure == "quarantine"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "rule": self.rule,
            "expectation_type": self.expectation_type,
            "columns": list(self.columns),
            "on_failure": self.on_failure,
            "counts_toward_bad_share": self.counts_toward_bad_share,
            "success": self.success,
            "unexpected_count": self.unexpected_count,
            "element_count": self.element_count,
        }
        if self.skipped:
            out["skipped"] = self.skipped
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class EventValidationReport:
    """Totals reconcile: `clean_rows + invalid_rows + duplicates_removed == total_rows`.

    `invalid_rows` counts each bad row once (it may fail several rules: see `invalid_by_rule`, where it counts
    once per rule). Duplicates are not bad data: they are removed, counted and quarantined with the reason
    `duplicate` (identical to the kept row) or `duplicate_differs`, but not included in `bad_share`.
    """

    as_of: datetime
    events_dir: str
    ads_catalog: str | None
    suite_name: str
    suite_path: str
    max_bad_share: float
    total_rows: int
    clean_rows: int
    invalid_rows: int
    duplicates_removed: int
    duplicates_differing: int
    invalid_by_rule: dict[str, int]
    expectations: tuple[ExpectationOutcome, ...]
    files_total: int
    schema_failures: tuple[dict[str, Any], ...]
    clean_path: str | None  # None when the run failed: no clean output is left behind then
    quarantine_path: str
    report_path: str
    seconds: float
    timings: dict[str, float]
    gx_version: str
    failure: str | None = None  # why the run failed (the EventValidationError message)
    data_docs: str | None = None  # the Data Docs index this run was published to, if any
    # Events later than as_of (+ tolerance) but not after the run's wall clock: real, outside this run's as-of
    # time (a backfill over a lake that has grown since). Not in total_rows, neither clean nor quarantined.
    after_as_of_rows: int = 0

    @property
    def bad_share(self) -> float:
        return self.invalid_rows / self.total_rows if self.total_rows else 0.0

    @property
    def passed(self) -> bool:
        return self.failure is None

    @property
    def quarantined_rows(self) -> int:
        return self.invalid_rows + self.duplicates_removed

    @property
    def failed_expectations(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(e for e in self.expectations if e.success is False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failure": self.failure,
            "as_of": self.as_of.isoformat(),
            "events_dir": self.events_dir,
            "ads_catalog": self.ads_catalog,
            "suite": {"name": self.suite_name, "path": self.suite_path},
            "total_rows": self.total_rows,
            "after_as_of_rows": self.after_as_of_rows,
            "clean_rows": self.clean_rows,
            "invalid_rows": self.invalid_rows,
            "duplicates_removed": self.duplicates_removed,
            "duplicates_differing": self.duplicates_differing,
            "quarantined_rows": self.quarantined_rows,
            "bad_share": self.bad_share,
            "max_bad_share": self.max_bad_share,
            "invalid_by_rule": dict(self.invalid_by_rule),
            "failed_expectations": [e.to_dict() for e in self.failed_expectations],
            "expectations": [e.to_dict() for e in self.expectations],
            "files": {"total": self.files_total, "schema_failures": list(self.schema_failures)},
            "clean_path": self.clean_path,
            "quarantine_path": self.quarantine_path,
            "report_path": self.report_path,
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "great_expectations_version": self.gx_version,
            "data_docs": self.data_docs,
        }

    def write(self, path: Path | None = None) -> Path:
        path = Path(path or self.report_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path
