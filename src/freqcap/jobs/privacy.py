"""The batch ingestion edge for jobs that read a raw events directory themselves (training, monitoring).

The features DAG pseudonymizes while it validates. The training DAG (snapshot backfills, the training set, the
curves) and the monitoring job (realized frequency, the drift sample) read an events directory of their own: they
read `pseudonymous_events(...)` instead, a copy of it with pseudonymous user ids and its users table beside it, so
nothing they write (snapshots, training sets, MLflow artifacts, Evidently snapshots) holds a raw id and their user
keys match the online store's.

The copy is made once per source content and key: `<data_dir>/pseudonymized/<digest>/` where the digest covers the
source files (path, size, mtime), the users table and the active key; a later call with the same inputs reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

from freqcap.adapters.duckdb.pseudonymize import pseudonymize_events_dir, pseudonymize_users_file
from freqcap.adapters.secrets import load_pseudonymizer
from freqcap.config import Settings
from freqcap.domain.privacy import Pseudonymizer
from freqcap.layout import DataLayout, ads_path_for, users_path_for

log = logging.getLogger(__name__)

EVENTS_FILE = Path("events") / "events.parquet"
USERS_FILE = "users.parquet"
ADS_FILE = "ads.parquet"
_KEEP = 3  # copies kept (newest first): a job reading an older copy while a newer one is written keeps its files


def pseudonymous_events(
    settings: Settings, events_dir: str | Path, users: str | Path | None = None
) -> tuple[str, str | None]:
    """(events directory, users table) to read instead of the raw ones: a pseudonymized copy when
    `privacy.enabled`, else the inputs as they are (`users` defaulting to `users.parquet` beside the events)."""
    source_users = users_path_for(events_dir, users)
    pseudonymizer = load_pseudonymizer(settings)
    root = DataLayout.of(settings).pseudonymized_root
    if pseudonymizer is None or _is_inside(Path(events_dir), root):
        return str(events_dir), str(source_users) if source_users else None
    source = Path(events_dir).resolve()
    digest = _fingerprint(source, source_users, pseudonymizer)
    target = root / digest
    if not (target / "manifest.json").exists():
        _write_copy(source, source_users, pseudonymizer, root, target)
    users_copy = target / USERS_FILE
    return str(target / EVENTS_FILE.parent), str(users_copy) if users_copy.exists() else None


def _is_inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _fingerprint(source: Path, users: Path | None, pseudonymizer: Pseudonymizer) -> str:
    files = [source] if source.is_file() else sorted(source.rglob("*.parquet"))
    parts = [str(source), pseudonymizer("\0key-fingerprint")]  # names the key without revealing it
    for path in [*files, *([users] if users else [])]:
        st = path.stat()
        parts.append(f"{path}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _write_copy(source: Path, users: Path | None, pseudonymizer: Pseudonymizer, root: Path, target: Path) -> None:
    """Write the copy into a temporary folder and rename it into place (two jobs racing: one rename wins)."""
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        n_users = pseudonymize_events_dir(source, tmp / EVENTS_FILE, pseudonymizer)
        if users is not None:
            pseudonymize_users_file(users, tmp / USERS_FILE, pseudonymizer)
        ads = ads_path_for(source) if source.is_dir() else None
        if ads is not None:  # the catalog holds no user data: copied so `ads_path_for` finds it beside the copy
            shutil.copyfile(ads, tmp / ADS_FILE)
        manifest = {"key": pseudonymizer.active, "users": n_users, "has_users_table": users is not None}
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        try:
            os.rename(tmp, target)
        except OSError:  # another job wrote the same copy first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("pseudonymized %d user(s) of %s into %s", n_users, source, target)
    _prune(root, keep=target)


def _prune(root: Path, keep: Path) -> None:
    copies = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=os.path.getmtime)
    for old in [p for p in copies if p != keep][: max(0, len(copies) - _KEEP)]:
        shutil.rmtree(old, ignore_errors=True)
