"""Directories named by an as-of stamp (`<parent>/<YYYYMMDDTHHMMSSZ>/`), and removing what is past a horizon.

Features runs, training sets, curves and monitoring runs are all laid out this way (`freqcap.layout`); their age is
the as-of time in the name, not the files' mtime (a backfill writes old as-of times today). Every pruning function
of the retention job returns how many items it removed, or would remove with `dry_run` (the same list either way).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from freqcap.layout import parse_stamp

log = logging.getLogger(__name__)


def stamped_dirs(parent: Path) -> list[tuple[datetime, Path]]:
    """The `<stamp>/` directories directly under `parent`, oldest first (other names are not ours: left alone)."""
    if not parent.is_dir():
        return []
    found = []
    for child in parent.iterdir():
        if not child.is_dir():
            continue
        try:
            found.append((parse_stamp(child.name), child))
        except ValueError:
            continue
    return sorted(found)


def remove(path: Path, dry_run: bool) -> None:
    """Delete a file or a directory tree (nothing with `dry_run`)."""
    if dry_run:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_if_empty(path: Path, dry_run: bool) -> None:
    """Remove a directory left empty (and no error when it is not)."""
    if not dry_run and path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def prune_stamped_dirs(parent: Path, cutoff: datetime, dry_run: bool, keep: Collection[Path] = ()) -> int:
    """Remove the `<stamp>/` directories under `parent` stamped before `cutoff`, except those in `keep`."""
    kept = {Path(p).resolve() for p in keep}
    removed = 0
    for as_of, path in stamped_dirs(parent):
        if as_of >= cutoff or path.resolve() in kept:
            continue
        remove(path, dry_run)
        removed += 1
    if removed:
        log.info("%s %d directories under %s older than %s", _verb(dry_run), removed, parent, cutoff.isoformat())
    return removed


def _verb(dry_run: bool) -> str:
    return "would remove" if dry_run else "removed"


def prune_stamped_contents(parent: Path, cutoff: datetime, dry_run: bool, spare: Collection[str]) -> int:
    """Remove everything inside the `<stamp>/` directories stamped before `cutoff` except the children named in
    `spare` (kept for a longer horizon of their own); a directory left empty goes too. Returns the number of
    directories that had something removed."""
    removed = 0
    for as_of, path in stamped_dirs(parent):
        if as_of >= cutoff:
            continue
        doomed = [child for child in path.iterdir() if child.name not in spare]
        for child in doomed:
            remove(child, dry_run)
        remove_if_empty(path, dry_run)
        removed += bool(doomed)
    if removed:
        log.info(
            "%s the contents of %d directories under %s older than %s",
            _verb(dry_run),
            removed,
            parent,
            cutoff.isoformat(),
        )
    return removed
