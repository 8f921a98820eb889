"""The documentation site and the README stay in step with the code.

Fast (no Airflow, Feast or GX import): settings come from `freqcap.config`, the CLI from building its argparse
parser, everything else (DAG ids, tasks and params, API routes, degraded reasons, Makefile targets, import
contracts, packaged resources, the data layout) from the source files themselves.
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import tomllib
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from freqcap.cli.main import build_parser
from freqcap.config import Settings
from freqcap.layout import DataLayout, FeaturesRun, MonitoringRun

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "freqcap"
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"

# Nothing about how the project is run internally belongs in user-facing text.
FORBIDDEN = [
    (re.compile(r"(?<![\w&])#\d+\b"), "an issue reference (#<digits>)"),
    (re.compile(r"\bissue\s*\d+", re.I), "an issue reference"),
    (re.compile(r"DESIGN\.md", re.I), "DESIGN.md"),
    (re.compile(r"LIBRARY[-_ ]NOTES", re.I), "LIBRARY-NOTES"),
    (re.compile(r"seed system", re.I), "seed system"),
    (re.compile(r"\bsessions?\b", re.I), "sessions"),
    (re.compile(r"\bhelpers?\b", re.I), "helpers"),
    # Paths of the machine the docs were written on (this checkout and its siblings) are not the reader's paths.
    (
        re.compile(r"(?<![\w.])" + re.escape(str(ROOT.parent if len(ROOT.parent.parts) > 1 else ROOT)) + "/"),
        "a machine path",
    ),
]
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<ranges>[-0-9:,]+))?"\s*$', re.M)


def _page(relative: str) -> str:
    return (DOCS / relative).read_text()


def _doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _section(text: str, heading: str) -> str:
    """The text under the `## heading` line, up to the next heading of level 1 or 2."""
    lines = text.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"#{1,2} ", lines[i])), len(lines))
    return "\n".join(lines[start:end])


def _violations(text: str) -> list[str]:
    return [f"{what}: {m.group(0)!r}" for pattern, what in FORBIDDEN for m in pattern.finditer(text)]


# ------------------------------------------------------------------------------------------------ configuration


def _model_of(annotation: typing.Any) -> tuple[type[BaseModel] | None, bool]:
    """(the pydantic model inside an annotation, whether it is a sequence of them)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not Ellipsis and a is not type(None)]
    if origin in (tuple, list) and args:
        inner, _ = _model_of(args[0])
        return inner, inner is not None
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _model_of(args[0])
    return None, False


def settings_paths(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = prefix + name
        paths.append(path)
        inner, many = _model_of(field.annotation)
        if inner is not None:
            paths += settings_paths(inner, path + ("[]." if many else "."))
    return paths


def test_every_setting_is_in_the_configuration_reference():
    page = _page("reference/configuration.md")
    documented = set(re.findall(r"^\| `([a-z_\[\]\.]+)` \|", page, re.M))
    expected = set(settings_paths())
    # Sections with sub-keys are documented through their keys, not as a row of their own.
    leaves = {p for p in expected if not any(q.startswith(p + ".") or q.startswith(p + "[].") for q in expected)}
    assert leaves - documented == set(), "settings missing from docs/reference/configuration.md"
    assert documented - expected == set(), "docs/reference/configuration.md documents settings that do not exist"


# ------------------------------------------------------------------------------------------------------- CLI


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_cli_command_and_option_is_in_the_cli_reference():
    page = _page("reference/cli.md")
    headings = set(re.findall(r"^## `freqcap ([a-z -]+)`$", page, re.M))
    commands = {}
    for path, parser in _commands(build_parser()):
        if not path:
            for action in parser._actions:
                for option in action.option_strings:
                    if option not in ("-h", "--help"):
                        assert f"`{option}" in page, f"global option {option} missing from docs/reference/cli.md"
            continue
        commands[" ".join(path)] = parser
    # A group such as `features` or `curves` is documented through its subcommands.
    runnable = {name for name in commands if not any(other.startswith(name + " ") for other in commands)}
    runnable |= {name for name, p in commands.items() if p.get_default("func") is not None}
    assert runnable - headings == set(), "commands missing from docs/reference/cli.md"
    assert headings - set(commands) == set(), "docs/reference/cli.md documents commands that do not exist"
    for name in runnable:
        section = _section(page, f"## `freqcap {name}`")
        for action in commands[name]._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}" in section, f"freqcap {name} {option} missing from its section"


# ------------------------------------------------------------------------------------------------------ DAGs


def _dag_files() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text()) for p in sorted((SRC / "dags").glob("freqcap_*.py"))}


def _dag_facts(tree: ast.Module) -> tuple[str, list[str], list[str]]:
    """(dag_id, task names, param names) read from a DAG file's source."""
    dag_id, params, tasks = None, [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dag":
            for kw in node.keywords:
                if kw.arg == "dag_id":
                    dag_id = kw.value.value
                if kw.arg == "params":
                    params = [k.value for k in kw.value.keys]
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if getattr(target, "id", None) == "task":
                    tasks.append(node.name)
    assert dag_id, "no dag_id found"
    return dag_id, tasks, params


def test_every_dag_task_and_param_is_in_the_dags_reference():
    page = _page("reference/dags.md")
    files = _dag_files()
    assert files, "no DAG files found"
    for stem, tree in files.items():
        dag_id, tasks, params = _dag_facts(tree)
        assert dag_id == stem
        section = _section(page, f"## {dag_id}")
        for name in tasks + params:
            assert f"`{name}`" in section, f"{dag_id}: `{name}` missing from docs/reference/dags.md"


# ------------------------------------------------------------------------------------------------------- API


def test_every_route_and_degraded_reason_is_in_the_api_reference():
    page = _page("reference/api.md")
    # The endpoints are on the router in api/routes.py; the reasons /metrics always reports are in api/metrics.py.
    modules = [ast.parse((SRC / "api" / name).read_text()) for name in ("routes.py", "metrics.py")]
    tree = ast.Module(body=[node for module in modules for node in module.body], type_ignores=[])
    routes = []
    for node in ast.walk(tree):
        is_route = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
        if is_route and node.func.attr in ("get", "post") and getattr(node.func.value, "id", None) == "router":
            routes.append(f"{node.func.attr.upper()} {node.args[0].value}")
    assert len(routes) >= 6
    for route in routes:
        assert f"`{route}`" in page, f"{route} missing from docs/reference/api.md"
    # The fail-open reasons /metrics always reports, plus the batch-only answer.
    reasons = {"stream_stale"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Set) and all(isinstance(e, ast.Constant) for e in node.elts):
            reasons |= {e.value for e in node.elts}
    assert {"timeout", "no_policy"} <= reasons
    for reason in reasons:
        assert f"`{reason}" in page, f"degraded reason {reason} missing from docs/reference/api.md"


# -------------------------------------------------------------------------------- make, contracts, resources


def test_every_make_target_is_documented():
    page = _page("reference/make.md")
    targets = re.findall(r"^([a-z-]+):.*##", (ROOT / "Makefile").read_text(), re.M)
    assert targets
    for target in targets:
        assert f"`make {target}`" in page, f"make {target} missing from docs/reference/make.md"


def test_every_import_contract_is_documented():
    page = _page("architecture/contracts.md")
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    for contract in contracts:
        assert f"`{contract['id']}`" in page, f"contract {contract['id']} missing from docs/architecture/contracts.md"


def test_every_packaged_resource_and_layout_path_is_documented():
    page = _page("reference/resources.md")
    root = SRC / "resources"
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts:
            assert f"`{path.relative_to(root).as_posix()}`" in page, f"{path.name} missing from resources.md"
    layout = _page("reference/data-layout.md")
    for cls in (DataLayout, FeaturesRun, MonitoringRun):
        for name in vars(cls):
            if not name.startswith("_") and name not in ("of", "decision_log_override", "workspace_override"):
                assert f"`{name}`" in layout or f"`{name}(" in layout, f"{cls.__name__}.{name} missing"


# --------------------------------------------------------------------------------------------- site structure


class _Loader(yaml.SafeLoader):
    """mkdocs.yml uses `!relative`; its value does not matter here."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _nav_files(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [f for item in node for f in _nav_files(item)]
    if isinstance(node, dict):
        return [f for value in node.values() for f in _nav_files(value)]
    return []


def test_every_module_is_on_the_architecture_page():
    """The architecture page walks the tree: a new module must be placed there (named by its file stem)."""
    page = (DOCS / "architecture" / "index.md").read_text()
    blocks = re.findall(r"```.*?```", page, flags=re.S)  # a tree drawn in a code block names modules too
    spans = blocks + re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", page, flags=re.S))
    named = {token for span in spans for token in re.findall(r"\w+", span)}
    missing = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and path.stem not in named
    )
    assert not missing, f"modules not on docs/architecture/index.md: {missing}"


def test_every_page_is_in_the_nav_and_the_build_stays_offline():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)
    nav = _nav_files(config["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in _doc_pages()}
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"
    assert set(nav) == pages, f"not in nav: {sorted(pages - set(nav))}; missing files: {sorted(set(nav) - pages)}"
    assert config["theme"]["font"] is False
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config.get("plugins", [])]
    assert not {"social", "offline", "privacy"} & set(plugins)


def test_every_recorded_benchmark_has_a_page_that_includes_it_in_full():
    """Each results file is included by line ranges; only blocks with text that must not be published are left
    out. When a rerun moves lines, this fails until the ranges are updated."""
    included: dict[str, set[int]] = {}
    for page in sorted((DOCS / "benchmarks").glob("*.md")):
        for m in SNIPPET.finditer(page.read_text()):
            path = ROOT / m.group("path")
            assert path.is_file(), f"{page.name} includes a missing file {m.group('path')}"
            total = len(path.read_text().splitlines())
            lines = included.setdefault(path.name, set())
            for span in (m.group("ranges") or f"1:{total}").split(","):
                start, _, end = span.partition(":")
                lines |= set(range(int(start or 1), int(end or total) + 1))
    for result in sorted(RESULTS.glob("*.md")):
        assert result.name in included, f"benchmarks/results/{result.name} has no page in docs/benchmarks/"
        text = result.read_text().splitlines()
        block: list[int] = []
        blocks = []
        for number, line in enumerate(text, 1):
            if line.strip():
                block.append(number)
            elif block:
                blocks.append(block)
                block = []
        if block:
            blocks.append(block)
        for block in blocks:
            tainted = any(_violations(text[n - 1]) for n in block)
            shown = [n for n in block if n in included[result.name]]
            if tainted:
                assert not shown, f"{result.name} lines {shown} must not be published: {_violations(' '.join(text))}"
            else:
                assert len(shown) == len(block), f"{result.name}: lines {sorted(set(block) - set(shown))} not included"


# ------------------------------------------------------------------------------------ README and every page


def test_readme_is_short_and_points_at_the_docs():
    text = README.read_text()
    assert len(text.splitlines()) <= 160
    assert "make demo" in text and "make test" in text
    for link in re.findall(r"\]\(([^)#]+)", text):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), f"README links to a missing file {link}"


@pytest.mark.parametrize("path", [README, *_doc_pages()], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_internal_references(path):
    assert _violations(path.read_text()) == []


@functools.cache
def _top_level_names(module: Path) -> set[str]:
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
    return names


def _source_strings() -> set[str]:
    """`freqcap.*` strings the code itself uses as names (MLflow tags such as `freqcap.gate_reason`)."""
    found = set()
    for module in SRC.rglob("*.py"):
        found |= set(re.findall(r"[\"'](freqcap(?:\.\w+)+)[\"']", module.read_text()))
    return found


TAG_NAMES = _source_strings()


def _resolves(dotted: str) -> bool:
    if dotted in TAG_NAMES:
        return True
    parts = dotted.split(".")[1:]
    base = SRC
    for i, part in enumerate(parts):
        if (base / part).is_dir() and (base / part / "__init__.py").exists():
            base = base / part
            continue
        if (base / f"{part}.py").exists():
            module = base / f"{part}.py"
            rest = parts[i + 1 :]
        else:
            module = base / "__init__.py"
            rest = parts[i:]
        return not rest or rest[0] in _top_level_names(module)
    return True


@pytest.mark.parametrize("path", [README, *_doc_pages()], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_module_and_function_named_exists(path):
    names = set(re.findall(r"\bfreqcap(?:\.[A-Za-z_]\w*)+", path.read_text()))
    assert [n for n in sorted(names) if not _resolves(n)] == []
