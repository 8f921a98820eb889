"""The runbook backs its statements with tests: every `tests/<file>.py::<test>` it names is a test function that
exists, and every failure mode says what the ad server sees and cites at least one test.

Fast: the test files are parsed (ast), not imported.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "operations" / "runbook.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
MODES = [
    "online store slow",
    "online store down",
    "stream lagging",
    "stream worker dead",
    "serving overloaded",
    "a failed great expectations gate",
    "a failed or retried airflow task",
    "a guardrail refusing a policy",
    "mlflow tracking server down",
    "postgresql down",
    "spark feature build failing",
    "a cohort capped far from its curve",
    "paging not delivered",
    "a campaign to consolidate",
]


@functools.cache
def _test_functions(path: Path) -> frozenset[str]:
    """Names of the test functions a test file defines (module level, or methods of a `Test*` class)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {n.name for n in node.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
    return frozenset(names)


def _references() -> list[tuple[str, str]]:
    return sorted(set(REFERENCE.findall(RUNBOOK.read_text())))


def _sections() -> dict[str, str]:
    """The numbered `## N. title {#anchor}` sections: lower-cased title -> text."""
    parts = re.split(r"^## (\d+)\. (.+?) \{#[\w-]+\}$", RUNBOOK.read_text(), flags=re.M)
    return {parts[i + 1].strip().lower(): parts[i + 2] for i in range(1, len(parts) - 1, 3)}


def test_the_runbook_cites_tests():
    assert len(_references()) >= 30


@pytest.mark.parametrize(("path", "name"), _references(), ids=lambda v: v)
def test_every_cited_test_exists(path: str, name: str):
    file = ROOT / path
    assert file.is_file(), f"{path} does not exist"
    assert name in _test_functions(file), f"{path} has no test function {name}"


def test_every_failure_mode_has_its_section_with_tests():
    sections = _sections()
    assert list(sections) == MODES
    for title, text in sections.items():
        assert "**What the ad server sees.**" in text, title
        assert "**What on-call does.**" in text, title
        assert REFERENCE.search(text), f"section {title!r} cites no test"


def test_the_alerts_table_points_at_every_section():
    text = RUNBOOK.read_text()
    table = text.split("## Alerts → runbook", 1)[1].split("\n## ", 1)[0]
    anchors = set(re.findall(r"\(#([\w-]+)\)", table))
    want = {re.sub(r"[^a-z0-9]+", "-", mode).strip("-") for mode in MODES}
    assert anchors == want, anchors ^ want
