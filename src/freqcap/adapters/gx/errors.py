"""Errors of the validation gates: events (row-level, with a quarantine) and the later hand-offs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freqcap.errors import FreqcapError

if TYPE_CHECKING:
    from freqcap.adapters.gx.report import EventValidationReport


class DataValidationError(FreqcapError):
    """A Great Expectations gate at a hand-off (events, feature tables, training set, decision log) failed.

    The message names every failed expectation by its rule name with what Great Expectations observed (a count of
    unexpected rows with a sample of their values, or the observed aggregate); `report` has every outcome (a
    `freqcap.adapters.gx.gate.GateReport`; for events an `EventValidationReport`). Nothing downstream may run.
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class EventValidationError(DataValidationError):
    """The events failed validation: nothing downstream may run on them.

    Raised after the quarantine and the report are written, when the share of invalid rows is above
    `ValidationConfig.max_bad_share`, when a batch-level expectation fails, or when a file cannot be read at all.
    The message names the failed expectations with their counts and the threshold; `report` has the details
    (None only when the failure happened before any report could be built).
    """

    def __init__(self, message: str, report: EventValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class ValidationSuiteError(FreqcapError):
    """The expectation suite is malformed, or Great Expectations returned something the step cannot trust."""
