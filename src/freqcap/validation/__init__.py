"""Event validation with Great Expectations: bad rows to a quarantine with a reason, a bad-share gate.

`validate_events` runs before any aggregation; see `freqcap.validation.events` for how a run goes and
`monitoring/gx/events.json` for the rules. Great Expectations is imported lazily, inside the call.
"""

from freqcap.validation.errors import EventValidationError, ValidationSuiteError
from freqcap.validation.events import (
    CLEAN_FILE,
    QUARANTINE_FILE,
    QUARANTINE_SCHEMA,
    REPORT_FILE,
    validate_events,
)
from freqcap.validation.report import EventValidationReport, ExpectationOutcome
from freqcap.validation.suite import load_suite

__all__ = [
    "CLEAN_FILE",
    "QUARANTINE_FILE",
    "QUARANTINE_SCHEMA",
    "REPORT_FILE",
    "EventValidationError",
    "EventValidationReport",
    "ExpectationOutcome",
    "ValidationSuiteError",
    "load_suite",
    "validate_events",
]
