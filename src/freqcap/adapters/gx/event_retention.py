"""Retention of what events validation writes per features run: the clean events and the quarantine.

A run's validation directory holds `clean/events.parquet` (the rows the run aggregated) and `quarantine.parquet`
with `validation_report.json` (the rows set aside and why). They have separate horizons: the clean copy is only
re-read by a re-run of the same as-of; the quarantine is evidence for investigating bad data and is kept longer.
The report goes with the quarantine it describes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Literal

from freqcap.adapters.gx.events import CLEAN_FILE, QUARANTINE_FILE, REPORT_FILE
from freqcap.adapters.stamped_dirs import remove, remove_if_empty

log = logging.getLogger(__name__)

Part = Literal["clean", "quarantine"]


def _paths(validation_dir: Path, part: Part) -> list[Path]:
    if part == "clean":
        return [validation_dir / CLEAN_FILE.parent]
    return [validation_dir / QUARANTINE_FILE, validation_dir / REPORT_FILE]


def prune_validation_outputs(
    validation_dirs: Iterable[tuple[datetime, Path]], cutoff: datetime, part: Part, dry_run: bool = False
) -> int:
    """Remove `part` (the clean events or the quarantine with its report) of every run stamped before `cutoff`;
    `validation_dirs` pairs each run's as-of time with its validation directory. Returns the number of runs."""
    removed = 0
    for as_of, validation_dir in validation_dirs:
        if as_of >= cutoff:
            continue
        present = [p for p in _paths(validation_dir, part) if p.exists()]
        if not present:
            continue
        for path in present:
            remove(path, dry_run)
        remove_if_empty(validation_dir, dry_run)
        removed += 1
    if removed:
        log.info(
            "%s the %s of %d runs older than %s",
            "would remove" if dry_run else "removed",
            part,
            removed,
            cutoff.isoformat(),
        )
    return removed
