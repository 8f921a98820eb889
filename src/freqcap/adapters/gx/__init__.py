"""Great Expectations gates at every hand-off, with a local Data Docs site.

`validate_events` runs before any aggregation (bad rows to a quarantine with a reason, a bad-share gate); see
`freqcap.adapters.gx.events` for how a run goes and `resources/gx/events.json` for the rules. The later hand-offs
have one gate each, raising `DataValidationError` naming the failed rules: `features.validate_feature_tables`
(before Feast), `training.validate_training_table` (before XGBoost), `decision_log.validate_decision_log` (before
monitoring). `docs` publishes every run to `<data_dir>/gx`. Great Expectations is imported lazily, inside the calls.
"""

from freqcap.adapters.gx.errors import DataValidationError, EventValidationError, ValidationSuiteError
from freqcap.adapters.gx.events import (
    CLEAN_FILE,
    QUARANTINE_FILE,
    QUARANTINE_SCHEMA,
    REPORT_FILE,
    validate_events,
)
from freqcap.adapters.gx.report import EventValidationReport, ExpectationOutcome
from freqcap.adapters.gx.suite import load_suite

__all__ = [
    "CLEAN_FILE",
    "QUARANTINE_FILE",
    "QUARANTINE_SCHEMA",
    "REPORT_FILE",
    "DataValidationError",
    "EventValidationError",
    "EventValidationReport",
    "ExpectationOutcome",
    "ValidationSuiteError",
    "load_suite",
    "validate_events",
]
