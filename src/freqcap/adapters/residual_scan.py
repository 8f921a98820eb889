"""Which files under a directory still contain given byte strings (the check after `freqcap forget`).

A plain byte search of every file, whatever its format: Parquet pages are usually compressed, so a hit proves the
bytes are there while a miss in a compressed page proves nothing — the forget job therefore runs this on top of its
own per-store deletions (which read the data decoded), as a second line for the formats it does not know (JSON
reports, logs, HTML). Files are read in chunks with an overlap, so a needle across a chunk boundary is found.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

_CHUNK = 4 << 20


def file_contains(path: Path, needles: Collection[bytes]) -> bool:
    """Whether any of `needles` occurs in the file at `path`."""
    if not needles:
        return False
    overlap = max(len(n) for n in needles) - 1
    tail = b""
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                window = tail + chunk
                if any(n in window for n in needles):
                    return True
                tail = window[-overlap:] if overlap else b""
    except OSError:  # vanished or unreadable meanwhile: nothing to report
        return False
    return False


def files_containing(root: Path, needles: Collection[bytes], skip: Iterable[Path] = ()) -> list[Path]:
    """Files under `root` (sorted) that contain any of `needles`, except those in `skip`."""
    skipped = {Path(p).resolve() for p in skip}
    if not root.is_dir():
        return []
    return [
        p for p in sorted(root.rglob("*")) if p.is_file() and p.resolve() not in skipped and file_contains(p, needles)
    ]
