"""The layer contracts hold on the code, and each of them fails on a tree that breaks it.

Each case copies the package to a temporary folder, adds one offending import and runs import-linter on the copy
with the project's own contracts (pyproject.toml): a contract that could not fail would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path, tmp: Path, contract: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}  # the copy shadows the installed package
    only = ["--contract", contract] if contract else []
    return subprocess.run(
        [str(LINT), "--no-cache", *only, str(REPO_ROOT / "pyproject.toml")],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_with(tmp: Path, module: str, line: str) -> Path:
    src = tmp / "src"
    shutil.copytree(REPO_ROOT / "src" / "freqcap", src / "freqcap", ignore=shutil.ignore_patterns("__pycache__"))
    path = src / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}\n")
    return src


def test_the_code_keeps_every_contract(tmp_path):
    out = _lint(REPO_ROOT / "src", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("KEPT") >= 3 and "BROKEN" not in out.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "shown"),
    [
        (
            "freqcap.domain.policy.engine",
            "import freqcap.jobs.features  # upward",
            "layers",
            "freqcap.domain.policy.engine -> freqcap.jobs.features",
        ),
        ("freqcap.adapters.gx.report", "import freqcap.api.app  # upward", "layers", "freqcap.adapters.gx.report -> "),
        ("freqcap.domain.curves.caps", "import duckdb  # I/O in the domain", "pure-domain", "-> duckdb"),
        (
            "freqcap.adapters.gx.docs",
            "import freqcap.adapters.gx.gate  # a cycle",
            "no-cycles",
            "No cycles are allowed in freqcap.adapters.gx",
        ),
    ],
)
def test_a_tree_that_breaks_a_contract_fails_naming_the_import(tmp_path, module, line, contract, shown):
    src = _copy_with(tmp_path, module, line)
    out = _lint(src, tmp_path, contract)
    assert out.returncode == 1 and "BROKEN" in out.stdout, out.stdout
    assert shown in out.stdout, out.stdout
    assert _lint(REPO_ROOT / "src", tmp_path, contract).returncode == 0  # the same contract, the untouched tree
