"""From the tallies of a run to its verdict: every rule's outcome, the gate's failure message, and the per-rule
summary published to Data Docs."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from freqcap.adapters.gx.docs import publish_summary
from freqcap.adapters.gx.event_expectations import RuleTally
from freqcap.adapters.gx.report import ExpectationOutcome
from freqcap.adapters.gx.suite import EventSuite


def rule_outcomes(
    suite: EventSuite,
    tallies: dict[str, RuleTally],
    skipped: dict[str, str],
    n_schema: int,
    total_rows: int,
    schema_failures: tuple[dict[str, Any], ...],
    n_events: int,
) -> tuple[ExpectationOutcome, ...]:
    """The per-file schema rule, then every rule of the suite in order (skipped ones with the reason)."""
    out = [
        ExpectationOutcome(
            rule=suite.schema_rule,
            expectation_type="parquet_file_schema",
            columns=(),
            on_failure="quarantine",
            success=n_schema == 0 and not schema_failures,
            unexpected_count=n_schema,
            element_count=total_rows,
            details={"files": [f["file"] for f in schema_failures]} if schema_failures else {},
        )
    ]
    for rule in suite.rules:
        if rule.name in skipped:
            out.append(
                ExpectationOutcome(
                    rule.name, rule.expectation_type, rule.columns, rule.on_failure, None, skipped=skipped[rule.name]
                )
            )
            continue
        tally = tallies[rule.name]
        if n_events == 0:
            out.append(
                ExpectationOutcome(
                    rule.name, rule.expectation_type, rule.columns, rule.on_failure, None, skipped="no rows to validate"
                )
            )
            continue
        out.append(
            ExpectationOutcome(
                rule.name,
                rule.expectation_type,
                rule.columns,
                rule.on_failure,
                tally.success,
                tally.unexpected,
                tally.elements,
                details={"observed": tally.observed} if tally.observed is not None else {},
            )
        )
    return tuple(out)


def gate_message(
    outcomes: tuple[ExpectationOutcome, ...], invalid_rows: int, total_rows: int, max_bad_share: float
) -> str | None:
    """The failure message when the run must stop, else None."""
    errors = [o for o in outcomes if o.on_failure == "error" and o.success is False]
    bad_share = invalid_rows / total_rows if total_rows else 0.0
    if not errors and bad_share <= max_bad_share:
        return None
    failed = [o for o in outcomes if o.success is False and o.on_failure != "dedup"]
    listed = "; ".join(
        f"{o.rule} ({o.expectation_type}{' on ' + ', '.join(o.columns) if o.columns else ''}): "
        + (f"{o.unexpected_count} rows" if o.on_failure == "quarantine" else "failed")
        + (f", observed {json.dumps(o.details['observed'])}" if "observed" in o.details else "")
        for o in failed
    )
    head = f"event validation failed: {invalid_rows} of {total_rows} rows invalid ({100 * bad_share:.2f}%)"
    if bad_share > max_bad_share:
        head += f", above max_bad_share {100 * max_bad_share:.2f}%"
    if errors:
        head += f"; batch-level expectation(s) failed: {', '.join(o.rule for o in errors)}"
    return f"{head}. Failed expectations: {listed or 'none'}"


def publish_docs(
    root: Path,
    suite: EventSuite,
    skipped: dict[str, str],
    outcomes: tuple[ExpectationOutcome, ...],
    parameters: dict[str, Any],
    as_of: datetime,
) -> str | None:
    """One summary result per rule (counts over all chunks) on the Data Docs site; None if it cannot be written."""
    by_rule = {o.rule: o for o in outcomes}
    rules = []
    for rule in suite.rules:
        o = by_rule.get(rule.name)
        if o is None or rule.name in skipped:
            continue
        outcome = {"success": o.success, "unexpected_count": o.unexpected_count, "element_count": o.element_count}
        if "observed" in o.details:
            outcome["observed"] = o.details["observed"]
        rules.append((rule.gx_config(), outcome))
    return publish_summary(
        root, suite_name=suite.name, table="events", run_name=as_of.isoformat(), rules=rules, parameters=parameters
    )
