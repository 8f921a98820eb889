"""Append-only JSON-lines audit records (the forget audit): one line per record, flushed to disk before returning.

Records are appended with `O_APPEND` in one `write` (a line from two writers never interleaves on a local file
system) and `fsync`ed: an audit line that was reported written survives a crash. Reading tolerates a torn last
line (a crash mid-write) by skipping what does not parse.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append `record` as one JSON line to `path` (created with its folder, mode 0600: it names who was forgotten
    in hashed form only, yet it is nobody else's business)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete record of `path`, oldest first ([] when there is none)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
