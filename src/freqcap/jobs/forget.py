"""Forgetting users: remove every row and key that holds them, from every store, and leave an audit record.

A user is matched by **every form** of their id: the raw id (data written before pseudonymization, or with
privacy off) and its pseudonym under every retained key (`Pseudonymizer.every_form`); a caller holding only a
pseudonym passes it as is. What each store does (docs: Operations > Forgetting a user):

| store | where | how |
|---|---|---|
| Parquet tables with `user_id` | everything under the data directory (raw and clean events, quarantine, feature runs, offline snapshots, training sets, monitoring samples, users table) and any extra path given | rows left out, file replaced atomically (`adapters.parquet_rows`) |
| online store | Feast SQLite, Redis or Redis Cluster; batch and stream views | scanned and deleted (`adapters.feast.forget`) |
| stream | event and dead-letter streams, pair state, unpushed list, dedup marks; the replay's dead-letter file | `adapters.stream.forget` |

Then an audit record (`DataLayout.forget_audit`, JSON lines): time, request id, a SHA-256 of each subject's active
pseudonym (never the raw id, nor the pseudonym itself: the audit must not be one more place holding it), the counts
removed per store, and the files (paths only) that still contain a form of the id after all of it (`residual`).
Idempotent: a second run finds nothing and records zero counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from freqcap.adapters.audit_log import append_record
from freqcap.adapters.feast.forget import forget_online
from freqcap.adapters.parquet_rows import forget_in_tree
from freqcap.adapters.residual_scan import files_containing
from freqcap.adapters.secrets import load_pseudonymizer
from freqcap.adapters.stream.forget import forget_dead_letter_file, forget_stream
from freqcap.adapters.stream.status import stream_redis_client
from freqcap.config import Settings
from freqcap.domain.privacy import Pseudonymizer, is_pseudonym
from freqcap.errors import FreqcapError
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)

# Raw ids shorter than this are not searched byte-wise afterwards (`residual`): "u1" occurs by chance everywhere.
MIN_SCANNED_ID = 6
REQUEST_SUFFIXES = (".json", ".txt")


class ForgetRequestError(FreqcapError, ValueError):
    """A deletion request is malformed (the message names the field); nothing was deleted."""


@dataclass(frozen=True)
class Subject:
    """One person to forget: every form of their id, and what the audit may say about them."""

    forms: tuple[str, ...]
    audit_id: str  # sha256 of the active pseudonym (or of the raw id when no key exists)


def _pseudonymizer(settings: Settings) -> Pseudonymizer | None:
    """The keys that may have pseudonymized stored data; None when none exist (nothing was pseudonymized)."""
    on = settings.model_copy(update={"privacy": settings.privacy.model_copy(update={"enabled": True})})
    try:
        # Never generate a key here: a key made now pseudonymized nothing that is stored.
        return load_pseudonymizer(on, create=False)
    except FileNotFoundError:
        return None


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def subjects_for(
    raw_ids: Sequence[str], pseudonyms: Sequence[str], pseudonymizer: Pseudonymizer | None
) -> list[Subject]:
    """The subjects of a request; raises ForgetRequestError naming the bad field."""
    out: list[Subject] = []
    for i, raw in enumerate(raw_ids):
        if not isinstance(raw, str) or not raw.strip():
            raise ForgetRequestError(f"users[{i}]: a user id must be a non-empty string")
        if pseudonymizer is None:
            out.append(Subject((raw,), _digest(raw)))
        else:
            forms = pseudonymizer.every_form(raw)
            out.append(Subject((raw, *forms), _digest(forms[0])))
    for i, form in enumerate(pseudonyms):
        if not isinstance(form, str) or not is_pseudonym(form):
            raise ForgetRequestError(f"pseudonyms[{i}]: not a pseudonym (u.<key id>.<22 characters>)")
        out.append(Subject((form,), _digest(form)))
    if not out:
        raise ForgetRequestError("users: give at least one user id or pseudonym")
    return out


def _parquet_roots(layout: DataLayout, extra_paths: Iterable[str]) -> list[Path]:
    roots = [layout.root]
    for extra in extra_paths:
        path = Path(extra).resolve()
        if not path.is_relative_to(layout.root):
            roots.append(path)
    return roots


def _needles(subjects: Sequence[Subject]) -> list[bytes]:
    forms = {f for s in subjects for f in s.forms if is_pseudonym(f) or len(f) >= MIN_SCANNED_ID}
    return sorted(f.encode("utf-8") for f in forms)


def forget_users(
    raw_ids: Sequence[str],
    settings: Settings,
    *,
    pseudonyms: Sequence[str] = (),
    request_id: str | None = None,
    extra_paths: Sequence[str] = (),
    stream: bool | None = None,
    verify: bool = True,
    stream_client: Any = None,
) -> dict[str, Any]:
    """Remove the users `raw_ids` (every form of each) and `pseudonyms` from every store; append the audit record.

    `extra_paths`: event directories or tables outside the data directory (`--events`, `--users` of a run).
    `stream`: visit the stream's Redis (True: required; False: never; None: required when streaming is enabled,
    tried when the online store is Redis — unreachable then means no stream, noted in the record).
    `verify`: afterwards, search every file under the data directory for the forms (the `residual` list).
    Returns the audit record (counts, no ids)."""
    started = time.perf_counter()
    layout = DataLayout.of(settings)
    subjects = subjects_for(list(raw_ids), list(pseudonyms), _pseudonymizer(settings))
    forms = sorted({f for s in subjects for f in s.forms})
    counts: Counter[str] = Counter()
    files_rewritten = 0

    event_ids: set[str] = set()
    for root in _parquet_roots(layout, extra_paths):
        for result in forget_in_tree(root, forms):
            counts[layout.store_of(result.path)] += result.removed
            event_ids |= result.event_ids
            files_rewritten += 1

    online = forget_online(settings, layout.feast_repo, forms)
    counts[f"online_{online.store}"] += online.removed

    # Visit the stream's Redis when asked, when streaming is on (then it must answer), or when the online store is
    # Redis (the stream usually shares it; if nothing answers at `stream.redis_url` there is no stream to forget).
    required = bool(stream) or (stream is None and settings.stream.enabled)
    stream_note = None
    if stream is not False and (required or settings.feast.online.is_redis):
        client = stream_client or stream_redis_client(settings.stream, socket_timeout=10.0)
        try:
            streamed = forget_stream(client, settings.stream, forms, event_ids)
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException) as exc:
            if required:
                raise
            streamed = None
            stream_note = f"stream.redis_url did not answer ({type(exc).__name__}): stream not visited"
            log.warning("forget: %s", stream_note)
        if streamed is not None:
            counts["stream_entries"] += streamed.stream_entries
            counts["stream_dead_letters"] += streamed.dead_letters
            counts["stream_pair_states"] += streamed.pair_states
            counts["stream_dedup_marks"] += streamed.dedup_marks
            stream = True
    counts["stream_dead_letter_file"] += forget_dead_letter_file(layout.stream_dead_letters, forms)

    residual: list[str] = []
    if verify:
        hits = files_containing(layout.root, _needles(subjects), skip=[layout.forget_audit])
        residual = [str(p.relative_to(layout.root)) for p in hits]
        if residual:
            log.warning("forget: %d files still contain a form of a forgotten id: %s", len(residual), residual)

    record = {
        "ts": datetime.now(UTC).isoformat(),
        "request_id": request_id or uuid.uuid4().hex,
        "subjects": sorted(s.audit_id for s in subjects),
        "counts": dict(sorted(counts.items())),
        "removed_total": sum(counts.values()),
        "files_rewritten": files_rewritten,
        "online_store": online.store,
        "stream_visited": stream is True,
        "stream_note": stream_note,
        "residual": residual,
        "seconds": round(time.perf_counter() - started, 3),
    }
    append_record(layout.forget_audit, record)
    log.info("forget %s: %d subjects, %d removed", record["request_id"], len(subjects), record["removed_total"])
    return {**record, "audit": str(layout.forget_audit)}


# ------------------------------------------------------------------------------------------- deletion requests


def read_request_file(path: Path) -> tuple[list[str], list[str]]:
    """(user ids, pseudonyms) of a request file: JSON `{"users": [...], "pseudonyms": [...]}`, or text with one id
    per line (blank lines and `#` comments skipped; a line that is a pseudonym counts as one)."""
    text = Path(path).read_text()
    if Path(path).suffix == ".json":
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise ForgetRequestError(f"{Path(path).name}: not JSON ({exc.msg})") from None
        if not isinstance(body, dict):
            raise ForgetRequestError(f"{Path(path).name}: expected an object with `users` and/or `pseudonyms`")
        users, pseudonyms = body.get("users") or [], body.get("pseudonyms") or []
        for name, value in (("users", users), ("pseudonyms", pseudonyms)):
            if not isinstance(value, list):
                raise ForgetRequestError(f"{Path(path).name}: `{name}` must be a list of strings")
        return [str(u) for u in users], [str(p) for p in pseudonyms]
    lines = [line.strip() for line in text.splitlines()]
    ids = [line for line in lines if line and not line.startswith("#")]
    return [i for i in ids if not is_pseudonym(i)], [i for i in ids if is_pseudonym(i)]


def pending_requests(settings: Settings) -> list[str]:
    """The request files waiting in the drop folder (`DataLayout.forget_requests`), oldest name first."""
    folder = DataLayout.of(settings).forget_requests
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix in REQUEST_SUFFIXES)


def forget_requests_job(
    files: Sequence[str], settings: Settings, users: Sequence[str] = (), pseudonyms: Sequence[str] = ()
) -> dict[str, Any]:
    """One forget run for a batch: every request file in `files` plus ids given directly (a triggered run's
    conf). A malformed file fails the run before anything is deleted (its message names the file and field).
    Request files are deleted once the forget succeeded: they hold raw ids, and the audit record (request id =
    the file names) is what remains. Returns the audit record."""
    all_users, all_pseudonyms = list(users), list(pseudonyms)
    for name in files:
        u, p = read_request_file(Path(name))
        all_users += u
        all_pseudonyms += p
    if not all_users and not all_pseudonyms:
        return {"request_id": None, "subjects": [], "removed_total": 0, "skipped": "no pending request"}
    request_id = ",".join(Path(f).stem for f in files) or None
    record = forget_users(all_users, settings, pseudonyms=all_pseudonyms, request_id=request_id)
    for name in files:
        Path(name).unlink(missing_ok=True)
    return record
