"""Errors of the event validation step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from freqcap.errors import FreqcapError

if TYPE_CHECKING:
    from freqcap.validation.report import EventValidationReport


class EventValidationError(FreqcapError):
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
