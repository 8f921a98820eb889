"""Imports inside functions only where they keep a heavy library out of a fast path.

A function-level import is accepted when it imports a heavy library (seconds of import time, or a library only the
`all` extra installs), when it imports a freqcap module that imports one at module level, when it sits in an
entry point (`cli/`, `dags/`: the scheduler parses DAG files every few seconds, `freqcap --help` and
`freqcap serve` must not load the pipeline), or when the line says why in a trailing comment. Anything else
belongs at the top of the module.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tests.conftest import REPO_ROOT

SRC = REPO_ROOT / "src"
HEAVY = {
    "airflow",
    "evidently",
    "fastapi",
    "feast",
    "google",  # protobuf, through Feast
    "great_expectations",
    "httpx",
    "matplotlib",
    "mlflow",
    "pyspark",
    "scipy",
    "sklearn",
    "starlette",
    "uvicorn",
    "xgboost",
}
ENTRY_POINTS = ("freqcap.cli", "freqcap.dags")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in (SRC / "freqcap").rglob("*.py")}


def _top_level_imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return out


@cache
def _pulls_heavy(module: str, seen: frozenset[str] = frozenset()) -> bool:
    """Does importing `module` (and its parent packages) load a heavy library at module level?"""
    if module in seen or module not in MODULES:
        return False
    parents = [".".join(module.split(".")[:i]) for i in range(2, module.count(".") + 1)]
    for name in [*_top_level_imports(module), *parents]:
        if name.split(".")[0] in HEAVY:
            return True
        if name.startswith("freqcap") and name != module and _pulls_heavy(name, seen | {module}):
            return True
    return False


def _function_level_imports(path: Path):
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    subs = [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import module`
                    names = [s if s in MODULES else node.module for s in subs]
                else:
                    continue
                yield node.lineno, names, "#" in lines[node.end_lineno - 1]


def test_every_import_inside_a_function_keeps_something_heavy_out():
    offenders = []
    for module, path in sorted(MODULES.items()):
        for line, names, commented in _function_level_imports(path):
            for name in names:
                top = name.split(".")[0]
                heavy = top in HEAVY or (top == "freqcap" and _pulls_heavy(name))
                if heavy or commented or module.startswith(ENTRY_POINTS):
                    continue
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
    assert not offenders, "import at module top (or say why in a comment):\n" + "\n".join(offenders)


def test_the_check_sees_a_gratuitous_import():
    """The rule above is not vacuous: a light module imported inside a function would be reported."""
    assert not _pulls_heavy("freqcap.layout") and not _pulls_heavy("freqcap.domain.policy.engine")
    assert _pulls_heavy("freqcap.api.app")  # fastapi at module level
