"""The local Great Expectations Data Docs site: every gate run is published to it; `make data-docs` opens it.

The site lives in a GX file-mode context under `<data_dir>/gx/`. Gates validate in ephemeral contexts (fast, no
shared state); afterwards each run's suite and result are stored in the file context and only their pages and the
index are rebuilt. Runs in parallel (two DAG tasks) take turns through a lock file, because a file context
rewrites its config and stores on disk.

GX's own index (`<data_dir>/gx/uncommitted/data_docs/local_site/index.html`) draws its tables with scripts from
public CDNs, so it is blank on a machine without internet. Next to it, `freqcap_runs.html` lists the newest runs
(gate, table, as-of, passed/failed, failed rules) in plain HTML and links to each GX validation page, which
renders without those scripts. Gates report that page as their `data_docs`.

The events gate validates in chunks with per-row results; it publishes one summary result per rule (counts over
all chunks, observed values) built from its report instead of GX's raw per-chunk results.

Publishing never decides a gate: if the site cannot be written, a warning is logged and the verdict stands.
`python -m freqcap.adapters.gx.docs [--data-dir DIR] [--no-open]` rebuilds the whole site and prints its index.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
import webbrowser
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any, Protocol

from freqcap.adapters.gx.runtime import import_gx
from freqcap.config import load_settings
from freqcap.layout import gx_dir


class ValidatedTable(Protocol):
    """What the site needs of one table's validation (`freqcap.adapters.gx.gate.TableRun` is one)."""

    table: str
    suite_name: str
    expectations: list[dict[str, Any]]
    gx_result: Any


log = logging.getLogger(__name__)

# Inside the GX context directory (`freqcap.layout.gx_dir`), as GX lays it out.
SITE_RELPATH = Path("uncommitted") / "data_docs" / "local_site"
INDEX_RELPATH = SITE_RELPATH / "index.html"
RUNS_RELPATH = SITE_RELPATH / "freqcap_runs.html"
RESULTS_RELPATH = Path("uncommitted") / "validations"
RUNS_LISTED = 300  # newest results listed on the runs page
_LOCK = ".freqcap-docs.lock"


def docs_root(data_dir: str | Path) -> Path:
    """The Data Docs root of a data directory: the directory itself (the GX context is `gx_dir(root)`)."""
    return Path(data_dir).resolve()


def index_path(root: str | Path) -> Path:
    """Where GX's index page is (whether or not it was built yet). It draws its tables with scripts from CDNs."""
    return gx_dir(Path(root).resolve()) / INDEX_RELPATH


def runs_page_path(root: str | Path) -> Path:
    """freqcap's overview of the newest gate runs: plain HTML that works offline, linking to each GX page."""
    return gx_dir(Path(root).resolve()) / RUNS_RELPATH


@contextmanager
def file_context(root: Path) -> Iterator[Any]:
    """The file-mode context under `root/gx`, held under an exclusive lock for the duration."""
    gx = import_gx()
    root = Path(root).resolve()
    gx_dir(root).mkdir(parents=True, exist_ok=True)
    with open(gx_dir(root) / _LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield gx.get_context(mode="file", project_root_dir=str(root))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _store(
    context: Any, suite_name: str, expectations: Sequence[Mapping[str, Any]], result: Any, table: str, run_name: str
) -> list[Any]:
    """Store a suite and one validation result of it in the file context; returns the identifiers to render."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    gx = import_gx()
    context.suites.add_or_update(
        gx.ExpectationSuite(name=suite_name, expectations=json.loads(json.dumps(list(expectations), default=str)))
    )
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
    # What a ValidationDefinition run would have recorded: the pages show the run and the table from these.
    result.meta["run_id"] = run_id
    result.meta["validation_time"] = run_id.run_time
    result.meta["batch_spec"] = {**dict(result.meta.get("batch_spec") or {}), "data_asset_name": table}
    suite_id = ExpectationSuiteIdentifier(name=suite_name)
    result_id = ValidationResultIdentifier(expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier=table)
    context.validation_results_store.store_validation_results(result, result_id, suite_id)
    return [result_id, suite_id]


def publish_runs(root: Path, gate: str, runs: Sequence[ValidatedTable], *, run_name: str) -> str | None:
    """Store the GX results of `runs` in the site and rebuild their pages; returns the index path (None on error)."""
    runs = [r for r in runs if r.gx_result is not None]
    if not runs:
        return None
    try:
        with file_context(root) as context:
            identifiers: list[Any] = []
            for run in runs:
                suite_name = run.suite_name
                identifiers += _store(context, suite_name, run.expectations, run.gx_result, run.table, run_name)
            context.build_data_docs(resource_identifiers=identifiers)
            path = write_runs_page(root)
    except Exception as exc:  # the docs site is a convenience: it must never decide or break a gate
        log.warning("%s gate: could not publish Data Docs under %s: %s: %s", gate, root, type(exc).__name__, exc)
        return None
    log.info("%s gate: Data Docs at %s", gate, path)
    return str(path)


def publish_summary(
    root: Path,
    *,
    suite_name: str,
    table: str,
    run_name: str,
    rules: Sequence[tuple[Mapping[str, Any], dict[str, Any]]],
    parameters: Mapping[str, Any],
) -> str | None:
    """Publish a result assembled from per-rule summaries: `rules` = [(expectation config, outcome dict)].

    An outcome dict has `success` (None: skipped, left out), `unexpected_count`, `element_count` and
    `observed`. `$PARAMETER` references in the kwargs are replaced by their values, so the page shows them.
    """
    try:
        from great_expectations.core.expectation_validation_result import (
            ExpectationSuiteValidationResult,
            ExpectationValidationResult,
        )
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        expectations, results = [], []
        for exp, outcome in rules:
            if outcome.get("success") is None:
                continue
            kwargs = {k: _resolve(v, parameters) for k, v in exp["kwargs"].items()}
            config = {"type": exp["type"], "kwargs": kwargs, "meta": dict(exp.get("meta") or {})}
            expectations.append(config)
            result: dict[str, Any] = {}
            elements, unexpected = outcome.get("element_count"), outcome.get("unexpected_count")
            if elements:
                result["element_count"] = elements
                result["unexpected_count"] = unexpected or 0
                result["unexpected_percent"] = 100.0 * (unexpected or 0) / elements
                result["missing_count"] = 0
                result["partial_unexpected_list"] = []
            if outcome.get("observed") is not None:
                result["observed_value"] = outcome["observed"]
            results.append(
                ExpectationValidationResult(
                    success=bool(outcome["success"]),
                    expectation_config=ExpectationConfiguration(**json.loads(json.dumps(config, default=str))),
                    result=result,
                )
            )
        if not results:
            return None
        passed = sum(1 for r in results if r.success)
        suite_result = ExpectationSuiteValidationResult(
            success=passed == len(results),
            results=results,
            suite_name=suite_name,
            suite_parameters=json.loads(json.dumps(dict(parameters), default=str)),
            statistics={
                "evaluated_expectations": len(results),
                "successful_expectations": passed,
                "unsuccessful_expectations": len(results) - passed,
                "success_percent": 100.0 * passed / len(results),
            },
            meta={"active_batch_definition": {"data_asset_name": table}, "freqcap": "summary over all chunks"},
        )
        with file_context(root) as context:
            identifiers = _store(context, suite_name, expectations, suite_result, table, run_name)
            context.build_data_docs(resource_identifiers=identifiers)
            path = write_runs_page(root)
    except Exception as exc:  # never decide or break a gate
        log.warning("could not publish Data Docs for %s under %s: %s: %s", suite_name, root, type(exc).__name__, exc)
        return None
    return str(path)


def _resolve(value: Any, parameters: Mapping[str, Any]) -> Any:
    if isinstance(value, dict) and set(value) == {"$PARAMETER"}:
        return parameters.get(value["$PARAMETER"], value)
    return value


def _run_rows(root: Path) -> list[dict[str, Any]]:
    """The newest stored results (by file time), newest first, as rows of the runs page."""
    results = gx_dir(root) / RESULTS_RELPATH
    files = sorted(results.rglob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:RUNS_LISTED]
    rows = []
    for path in files:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        run_id = (doc.get("meta") or {}).get("run_id") or {}
        failed = [
            ((r.get("expectation_config") or {}).get("meta") or {}).get("rule") or "?"
            for r in doc.get("results") or ()
            if not r.get("success")
        ]
        stats = doc.get("statistics") or {}
        rows.append(
            {
                "suite": doc.get("suite_name") or path.relative_to(results).parts[0],
                "table": path.stem,
                "run_name": run_id.get("run_name") if isinstance(run_id, dict) else str(run_id),
                "run_time": run_id.get("run_time") if isinstance(run_id, dict) else "",
                "success": bool(doc.get("success")),
                "evaluated": stats.get("evaluated_expectations"),
                "failed": failed,
                "page": (SITE_RELPATH / "validations" / path.relative_to(results)).with_suffix(".html"),
            }
        )
    return rows


def write_runs_page(root: str | Path) -> Path:
    """(Re)write the offline runs page from the stored results; returns its path."""
    root = Path(root).resolve()
    out = runs_page_path(root)
    rows = _run_rows(root)
    body = []
    for r in rows:
        link = os.path.relpath(gx_dir(root) / r["page"], out.parent)
        verdict = "passed" if r["success"] else "FAILED"
        failed = escape(", ".join(r["failed"])) if r["failed"] else ""
        body.append(
            f'<tr class="{verdict.lower()}"><td>{escape(str(r["run_time"] or ""))}</td>'
            f"<td>{escape(str(r['suite']))}</td><td>{escape(r['table'])}</td>"
            f"<td>{escape(str(r['run_name'] or ''))}</td><td>{verdict}</td><td>{r['evaluated'] or ''}</td>"
            f'<td>{failed}</td><td><a href="{escape(link)}">details</a></td></tr>'
        )
    html = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>freqcap data validation runs</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}} tr.failed td{{background:#fde2e2}}
tr.passed td:nth-child(5){{color:#1a7f37}} tr.failed td:nth-child(5){{color:#b42318;font-weight:bold}}</style></head>
<body><h1>freqcap data validation runs</h1>
<p>The newest {len(rows)} Great Expectations gate results (events, feature tables, training set, decision log),
newest first. <a href="index.html">Great Expectations index</a> (its tables load scripts from the internet).</p>
<table><thead><tr><th>validated at (UTC)</th><th>suite</th><th>table</th><th>run (as of)</th><th>result</th>
<th>expectations</th><th>failed rules</th><th>page</th></tr></thead>
<tbody>
{chr(10).join(body) if body else '<tr><td colspan="8">no gate has run yet</td></tr>'}
</tbody></table></body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out


def build_site(root: str | Path) -> Path:
    """Rebuild the whole site from the stored suites and results; returns the runs page (empty before any run)."""
    with file_context(Path(root)) as context:
        context.build_data_docs()
        return write_runs_page(root)


def open_in_browser(path: Path) -> bool:
    """Open `path` in a browser when there is a display; never fails (headless machines just print the path)."""
    if sys.platform != "darwin" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False  # headless: a text-mode browser would take over the terminal

    try:
        return bool(webbrowser.open(path.as_uri()))
    except webbrowser.Error:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m freqcap.adapters.gx.docs`: rebuild the Data Docs site, print its index path, open it if possible."""
    parser = argparse.ArgumentParser(prog="python -m freqcap.adapters.gx.docs", description=main.__doc__)
    parser.add_argument("--data-dir", help="the data directory (default: settings.data_dir)")
    parser.add_argument("--no-open", action="store_true", help="only build and print the path")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else load_settings().data_dir
    root = docs_root(data_dir)
    path = build_site(root)
    print(f"Data Docs (runs overview): {path}")
    print(f"Great Expectations index:  {index_path(root)}")
    if not args.no_open and not open_in_browser(path):
        print("(no display here: open the first file in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
