"""Retention of the stream's dead letters: the Redis dead-letter streams and the replay transport's JSON lines.

A dead letter in Redis is stored under its source entry's id, whose first part is the millisecond the event entered
the stream: `XTRIM <key> MINID <cut-off ms>` drops every older one in one command, on the server. The replay
transport's file dates each line with `dead_at`; a line without one (written before it had that field) is kept.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_COUNT_BATCH = 10_000


def _cutoff_ms(cutoff: datetime) -> int:
    return int(cutoff.timestamp() * 1000)


def _count_older(client: Any, key: str, cutoff_ms: int) -> int:
    """Entries of stream `key` with an id before `<cutoff_ms>-0` (what XTRIM MINID would drop), read in pages."""
    count, start = 0, "-"
    while True:
        page = client.xrange(key, start, f"({cutoff_ms}-0", count=_COUNT_BATCH)
        count += len(page)
        if len(page) < _COUNT_BATCH:
            return count
        start = "(" + (page[-1][0].decode() if isinstance(page[-1][0], bytes) else page[-1][0])


def prune_dead_letter_streams(client: Any, keys: Iterable[str], cutoff: datetime, dry_run: bool = False) -> int:
    """Drop the dead letters older than `cutoff` from each stream in `keys` (exact `XTRIM MINID`, not `~`: the
    horizon is a promise). Returns the number of entries."""
    cutoff_ms = _cutoff_ms(cutoff)
    removed = 0
    for key in keys:
        if dry_run:
            removed += _count_older(client, key, cutoff_ms)
        else:
            removed += int(client.xtrim(key, minid=f"{cutoff_ms}-0", approximate=False))
    if removed:
        log.info(
            "%s %d dead letters older than %s", "would drop" if dry_run else "dropped", removed, cutoff.isoformat()
        )
    return removed


def _dead_at(line: str) -> datetime | None:
    try:
        value = json.loads(line).get("dead_at")
        return datetime.fromisoformat(value) if value else None
    except (ValueError, AttributeError, TypeError):
        return None  # not a dated record of ours: kept


def prune_dead_letter_file(path: Path, cutoff: datetime, dry_run: bool = False) -> int:
    """Remove the lines of the replay transport's dead-letter file dead-lettered before `cutoff` (rewritten to a
    temporary file, then renamed over it). Returns the number of lines."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept: list[str] = []
    removed = 0
    with path.open() as f:
        for line in f:
            dead_at = _dead_at(line)
            if dead_at is not None and dead_at < cutoff:
                removed += 1
            else:
                kept.append(line)
    if removed and not dry_run:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
    if removed:
        log.info(
            "%s %d dead-letter lines of %s older than %s",
            "would remove" if dry_run else "removed",
            removed,
            path,
            cutoff.isoformat(),
        )
    return removed
