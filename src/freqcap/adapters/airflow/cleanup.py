"""Retention of Airflow's metadata DB through Airflow's own cleanup, `airflow db clean`.

Run as the `airflow` command of this environment, in a child process: Airflow 3 tasks may not open the metadata
DB themselves, and the command brings Airflow's own rules (the last scheduled run of each DAG is kept, dependent
rows go with their dag run). It reads the DB connection from the environment (`AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`,
`AIRFLOW_HOME`), as every Airflow component does. Rows are deleted without an archive copy (`--skip-archive`): an
archive table would keep what the horizon promises to remove.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)

_TABLE = re.compile(r"^Checking table (\S+)")
_FOUND = re.compile(r"^Found (\d+) rows meeting deletion criteria")


class AirflowCleanupError(RuntimeError):
    """`airflow db clean` failed; the message carries its output."""


def _airflow_command() -> list[str]:
    """The `airflow` script next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("airflow")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("airflow")
    if not found:
        raise AirflowCleanupError("the airflow command is not installed in this environment")
    return [found]


def parse_counts(output: str) -> dict[str, int]:
    """Rows per table from `airflow db clean` output ("Checking table T" then "Found N rows ...")."""
    counts: dict[str, int] = {}
    table = None
    for line in output.splitlines():
        if m := _TABLE.match(line.strip()):
            table = m.group(1)
        elif (m := _FOUND.match(line.strip())) and table is not None:
            counts[table] = int(m.group(1))
            table = None
    return counts


def clean_metadata(cutoff: datetime, dry_run: bool = False, timeout: float = 600.0) -> dict[str, int]:
    """`airflow db clean --clean-before-timestamp <cutoff> --yes --skip-archive [--dry-run]`; returns the rows per
    table it deleted (or would delete), tables with none left out."""
    args = [
        *_airflow_command(),
        "db",
        "clean",
        "--clean-before-timestamp",
        cutoff.isoformat(),
        "--yes",
        "--skip-archive",
        "--error-on-cleanup-failure",
        *(["--dry-run"] if dry_run else []),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=dict(os.environ), check=False)
    if done.returncode != 0:
        raise AirflowCleanupError(f"airflow db clean exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    counts = {table: n for table, n in parse_counts(done.stdout).items() if n}
    log.info(
        "airflow db clean before %s%s: %s",
        cutoff.isoformat(),
        " (dry run)" if dry_run else "",
        ", ".join(f"{t} {n}" for t, n in sorted(counts.items())) or "nothing",
    )
    return counts
