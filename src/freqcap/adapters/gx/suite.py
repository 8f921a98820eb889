"""The declarative event suite (`resources/gx/events.json`): loading, checking, and turning it into a GX suite.

The file is a Great Expectations 1.x ExpectationSuite document (`name`, `expectations: [{type, kwargs, meta}]`,
`meta`), JSON or YAML. freqcap reads three keys of each expectation's `meta`:

- `rule` (required): the stable name written as the row's reason in the quarantine and counted in the report.
- `on_failure`: `quarantine` (default; a row-level expectation whose failing rows are quarantined and count as
  bad), `dedup` (the uniqueness expectation: reported, the rows are handled by deduplication, not counted as
  bad), or `error` (a batch-level expectation: if it fails the run fails, whatever the bad share).
- `requires`: `ads_catalog` for expectations that only make sense with an ad catalog; they are skipped (and
  reported as skipped) without one.

Suite-level `meta.freqcap.schema_rule.rule` names the per-file schema rule (see `freqcap.adapters.gx.files`).
Nothing in this module imports Great Expectations at import time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from freqcap.adapters.gx.errors import ValidationSuiteError
from freqcap.resources import suite_path as packaged_suite

SUITE_FILE = "events.json"
ON_FAILURE = ("quarantine", "dedup", "error")
REQUIRES = ("ads_catalog",)
# Reasons the step itself writes; an expectation may not reuse them.
RESERVED_RULES = ("schema", "duplicate", "duplicate_differs")
_RULE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Rule:
    """One expectation of the suite, with freqcap's reading of its meta."""

    name: str
    expectation_type: str
    kwargs: Mapping[str, Any]
    meta: Mapping[str, Any]
    on_failure: str = "quarantine"
    requires: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        kw = self.kwargs
        if "column" in kw:
            return (kw["column"],)
        if "column_A" in kw:
            return (kw["column_A"], kw["column_B"])
        return tuple(kw.get("column_list", ()))

    @property
    def counts_toward_bad_share(self) -> bool:
        return self.on_failure == "quarantine"

    def gx_config(self) -> dict[str, Any]:
        """The expectation as a GX configuration dict (fresh copies: GX may mutate what it is given)."""
        return json.loads(json.dumps({"type": self.expectation_type, "kwargs": self.kwargs, "meta": self.meta}))

    def describe(self) -> str:
        cols = ", ".join(self.columns)
        return f"{self.expectation_type}({cols})" if cols else self.expectation_type


@dataclass(frozen=True)
class EventSuite:
    name: str
    path: Path
    rules: tuple[Rule, ...]
    schema_rule: str = "schema"
    meta: Mapping[str, Any] = field(default_factory=dict)

    def rule(self, name: str) -> Rule:
        return next(r for r in self.rules if r.name == name)

    def split(self, *, has_catalog: bool) -> tuple[tuple[Rule, ...], dict[str, str]]:
        """(rules to run, {skipped rule: why}) for a run with or without an ads catalog."""
        active, skipped = [], {}
        for r in self.rules:
            if r.requires == "ads_catalog" and not has_catalog:
                skipped[r.name] = "no ads catalog given"
            else:
                active.append(r)
        return tuple(active), skipped


def default_suite_path(suites_dir: str | Path | None = None) -> Path:
    """The event suite: `events.json` in `suites_dir` (`validation.suites_dir`) when set, else the packaged one."""
    return packaged_suite(SUITE_FILE, suites_dir)


def read_document(path: Path) -> dict[str, Any]:
    """A suite file (JSON, or YAML by suffix) with a `name` and a list of `expectations`; else ValidationSuiteError."""
    try:
        text = path.read_text()
        doc = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ValidationSuiteError(f"cannot read expectation suite {path}: {exc}") from exc
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("name"), str)
        or not isinstance(doc.get("expectations"), list)
    ):
        raise ValidationSuiteError(f"{path}: a suite needs a 'name' and a list of 'expectations'")
    return doc


def load_suite(path: str | Path | None = None, suites_dir: str | Path | None = None) -> EventSuite:
    """Read and check the suite file (default: `default_suite_path(suites_dir)`); raise `ValidationSuiteError`
    naming the offending entry."""
    path = Path(path) if path is not None else default_suite_path(suites_dir)
    doc = read_document(path)

    rules: list[Rule] = []
    for i, exp in enumerate(doc["expectations"]):
        where = f"{path}: expectations[{i}]"
        if not isinstance(exp, dict) or not isinstance(exp.get("type"), str) or not isinstance(exp.get("kwargs"), dict):
            raise ValidationSuiteError(f"{where} needs a 'type' and a 'kwargs' mapping")
        meta = exp.get("meta") or {}
        name = meta.get("rule")
        if not isinstance(name, str) or not _RULE_NAME.match(name):
            raise ValidationSuiteError(f"{where} ({exp['type']}) needs meta.rule, a snake_case name, got {name!r}")
        if name in RESERVED_RULES:
            raise ValidationSuiteError(f"{where}: meta.rule {name!r} is reserved")
        if any(r.name == name for r in rules):
            raise ValidationSuiteError(f"{where}: meta.rule {name!r} is used twice")
        on_failure = meta.get("on_failure", "quarantine")
        if on_failure not in ON_FAILURE:
            raise ValidationSuiteError(f"{where}: meta.on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
        requires = meta.get("requires")
        if requires is not None and requires not in REQUIRES:
            raise ValidationSuiteError(f"{where}: meta.requires must be one of {REQUIRES}, got {requires!r}")
        rules.append(Rule(name, exp["type"], exp["kwargs"], meta, on_failure, requires))
    if not rules:
        raise ValidationSuiteError(f"{path}: the suite has no expectations")

    suite_meta = doc.get("meta") or {}
    schema_rule = (suite_meta.get("freqcap", {}).get("schema_rule") or {}).get("rule", "schema")
    return EventSuite(name=doc["name"], path=path, rules=tuple(rules), schema_rule=schema_rule, meta=suite_meta)


def build_gx_suite(suite: EventSuite, rules: tuple[Rule, ...]) -> Any:
    """A `great_expectations.ExpectationSuite` of `rules`; every one must load (GX itself only logs bad ones).

    Rules that quarantine rows must be map expectations, since only those give per-row results.
    """
    import great_expectations as gx
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    gx_suite = gx.ExpectationSuite(name=suite.name, expectations=[r.gx_config() for r in rules])
    loaded = {e.meta.get("rule"): e for e in gx_suite.expectations}
    missing = [r.name for r in rules if r.name not in loaded]
    if missing:
        raise ValidationSuiteError(
            f"{suite.path}: Great Expectations rejected the expectations of rule(s) {missing}; check their type and kwargs"
        )
    row_level = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
    for r in rules:
        if r.on_failure in ("quarantine", "dedup") and not isinstance(loaded[r.name], row_level):
            raise ValidationSuiteError(
                f"{suite.path}: rule {r.name!r} ({r.expectation_type}) gives no per-row results; "
                "set meta.on_failure to 'error' or use a map expectation"
            )
    return gx_suite
