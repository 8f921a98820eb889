"""The decision log: a sampled record of what serving decided, for monitoring cap hit rates. Never raw user ids.

One JSON line per candidate of a sampled request, with the user's cohort (audience, signal tier) but not the user:

| field | meaning |
|---|---|
| ts, date, hour | request time (context.ts, UTC) and its date and hour of day |
| format | the placement format from the request context |
| audience, signal_tier | the user's cohort as read from the online store (null when the lookup failed) |
| policy_version | the policy that decided |
| ad_id, campaign_id, advertiser_id | the candidate (ids of ads, not of people) |
| level, binding_kind, window, cap, count | the binding constraint (null when no cap applies) |
| distance_to_cap, penalty, eligible | what the ranker got |
| hit | the binding constraint is reached: count ≥ cap (distance ≤ 0), or an active min_gap / stop after click or conversion |
| degraded, degraded_reason | the answer is degraded: failed open, or decided from batch alone (`stream_stale`) |
| fail_open | the request failed open (then no cohort and no binding) |

Requests are sampled whole (all candidates or none) with probability `sample_rate`. Records are buffered in memory
and written by a background thread every `flush_seconds` to `<dir>/date=YYYY-MM-DD/part-*.jsonl` (write to a temp
name, then rename: readers never see half a file). The hot path only appends to a bounded buffer; when the buffer is
full, records are dropped and counted rather than blocking a request.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from freqcap.domain.monitoring.metrics import prepare_log
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)

FIELDS = (
    "ts",
    "date",
    "hour",
    "format",
    "audience",
    "signal_tier",
    "policy_version",
    "ad_id",
    "campaign_id",
    "advertiser_id",
    "level",
    "binding_kind",
    "window",
    "cap",
    "count",
    "distance_to_cap",
    "penalty",
    "eligible",
    "hit",
    "degraded",
    "degraded_reason",
    "fail_open",
)
_FIELD_SET = frozenset(FIELDS)
_encode_lines = msgspec.json.Encoder().encode_lines  # JSON lines, newline after each


def is_hit(decision: Any) -> bool:
    """A decision hits its cap when the binding constraint is reached (distance ≤ 0) or a recency /
    stop-after-conversion constraint is active (those bind only while active)."""
    binding = decision.binding
    if binding is None:
        return False
    if binding.kind != "cap":
        return True
    return decision.distance_to_cap is not None and decision.distance_to_cap <= 0


def decision_rows(
    *,
    ts: datetime,
    fmt: str,
    audience: str | None,
    signal_tier: str | None,
    policy_version: str | None,
    candidates: Sequence[Any],
    decisions: Sequence[Any] | None,
    degraded_reason: str | None = None,
) -> list[dict[str, Any]]:
    """The log rows of one request (one per candidate). `decisions` is None when the request failed open."""
    ts = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    # degraded: the answer is not the full-information one; fail_open: no decision at all (penalty 1 for every
    # candidate). A stale stream degrades (batch counts alone) without failing open.
    fail_open = decisions is None
    degraded = fail_open or degraded_reason is not None
    stamp, date, hour = ts.isoformat(), ts.date().isoformat(), ts.hour
    rows = []
    append = rows.append
    # Each row built whole, in FIELDS order (the file's column order): a sampled request is 100-500 rows, and this
    # runs on the serving process (profiled: per-row dict updates and json.dumps cost a fifth of a worker's CPU).
    if fail_open:
        for c in candidates:
            append(
                {
                    "ts": stamp, "date": date, "hour": hour, "format": fmt, "audience": None, "signal_tier": None,
                    "policy_version": policy_version,
                    "ad_id": c.ad_id, "campaign_id": c.campaign_id, "advertiser_id": c.advertiser_id,
                    "level": None, "binding_kind": None, "window": None, "cap": None, "count": None,
                    "distance_to_cap": None, "penalty": 1.0, "eligible": True, "hit": False,
                    "degraded": degraded, "degraded_reason": degraded_reason, "fail_open": True,
                }
            )  # fmt: skip
        return rows
    for c, d in zip(candidates, decisions, strict=True):
        b = d.binding
        append(
            {
                "ts": stamp, "date": date, "hour": hour, "format": fmt, "audience": audience,
                "signal_tier": signal_tier, "policy_version": policy_version,
                "ad_id": c.ad_id, "campaign_id": c.campaign_id, "advertiser_id": c.advertiser_id,
                "level": b.level if b else None, "binding_kind": b.kind if b else None,
                "window": b.window if b else None, "cap": b.cap if b else None, "count": b.count if b else None,
                "distance_to_cap": d.distance_to_cap, "penalty": d.penalty, "eligible": d.eligible, "hit": is_hit(d),
                "degraded": degraded, "degraded_reason": degraded_reason, "fail_open": False,
            }
        )  # fmt: skip
    return rows


class DecisionLog:
    """Sampled, buffered, never-blocking decision log written as date-partitioned JSON lines."""

    def __init__(
        self,
        directory: str | Path,
        *,
        sample_rate: float,
        flush_seconds: float = 1.0,
        max_pending: int = 200_000,
        seed: int | None = None,
    ):
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError("sample_rate must be within [0, 1]")
        self.directory = Path(directory)
        self.sample_rate = sample_rate
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self._random = random.Random(seed)
        self._pending: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.sampled_requests = 0
        self.written = 0
        self.dropped = 0

    def sample(self) -> bool:
        """Should this request be logged? (whole requests are sampled)"""
        return self.sample_rate > 0 and (self.sample_rate >= 1 or self._random.random() < self.sample_rate)

    def record(self, rows: Iterable[dict[str, Any]]) -> None:
        """Queue one sampled request's rows; drops (and counts) them when the buffer is full, never blocks."""
        rows = list(rows)
        with self._lock:
            self.sampled_requests += 1
            if len(self._pending) + len(rows) > self.max_pending:
                self.dropped += len(rows)
                return
            self._pending.extend(rows)

    def flush(self) -> int:
        """Write what is buffered (one file per date); returns the number of rows written."""
        with self._write_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            if not batch:
                return 0
            by_date: dict[str, list[dict[str, Any]]] = {}
            for row in batch:
                by_date.setdefault(row["date"], []).append(row)
            for date, rows in by_date.items():
                part = self.directory / f"date={date}"
                part.mkdir(parents=True, exist_ok=True)
                self._seq += 1
                name = f"part-{int(time.time() * 1000)}-{os.getpid()}-{self._seq:06d}.jsonl"
                tmp = part / f".{name}.tmp"
                # The documented fields only, in their order (decision_rows builds exactly those; a row from
                # elsewhere is projected): one msgspec call per file instead of json.dumps per row.
                lines = _encode_lines([r if r.keys() == _FIELD_SET else {k: r.get(k) for k in FIELDS} for r in rows])
                tmp.write_bytes(lines)
                tmp.replace(part / name)
            self.written += len(batch)
            return len(batch)

    def start(self) -> None:
        """Start the background flusher (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="freqcap-decision-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the flusher and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # a full disk must not take serving down; the rows are lost and said so
                log.exception("decision log flush failed")


def decision_log_from_settings(settings: Any) -> DecisionLog | None:
    """The decision log configured in `settings.serving` (None when the sample rate is 0)."""
    serving = settings.serving
    if serving.decision_log_sample_rate <= 0:
        return None
    directory = DataLayout.of(settings).decision_log_dir
    return DecisionLog(
        directory, sample_rate=serving.decision_log_sample_rate, flush_seconds=serving.decision_log_flush_seconds
    )


def partition_files(directory: str | Path, start: datetime | None = None, end: datetime | None = None) -> list[Path]:
    """The log files, in order; with `start`/`end` only the date partitions from start's date to end's date."""
    directory = Path(directory)
    if start is None or end is None:
        return sorted(directory.glob("date=*/part-*.jsonl"))
    files: list[Path] = []
    day = start.date()
    while day <= end.date():
        files.extend(sorted((directory / f"date={day.isoformat()}").glob("part-*.jsonl")))
        day += timedelta(days=1)
    return files


def read_log_rows(directory: str | Path, start: datetime | None = None, end: datetime | None = None):
    """Every field of every line (of the partitions that can hold [start, end], when given), not filtered by
    time: the decision-log gate must see exactly what was written, an undocumented field (a user id) included."""
    import pandas as pd  # serving imports this module for its writer; only the readers need pandas

    rows = [
        json.loads(line)
        for f in partition_files(directory, start, end)
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(FIELDS))


def read_decision_log(directory: str | Path):
    """All logged rows, the documented fields only, as a pandas DataFrame (empty with the right columns)."""
    return read_log_rows(directory).reindex(columns=list(FIELDS))


def read_log_window(directory: str | Path, start: datetime, end: datetime):
    """Decision-log rows (the documented fields, typed for the metrics) with start < ts ≤ end."""
    import pandas as pd  # as in read_log_rows: serving imports this module for the writer alone

    frame = prepare_log(read_log_rows(directory, start, end).reindex(columns=list(FIELDS)))
    return frame[(frame["ts"] > pd.Timestamp(start)) & (frame["ts"] <= pd.Timestamp(end))].reset_index(drop=True)


def prune_decision_log(directory: str | Path, cutoff: datetime, dry_run: bool = False) -> int:
    """Remove the `date=YYYY-MM-DD` partitions whose whole day ended at or before `cutoff` (a day that straddles
    the cut-off is kept whole: its newest records are still inside the horizon). Returns the number of days."""
    directory = Path(directory)
    removed = 0
    for part in sorted(directory.glob("date=*")) if directory.is_dir() else []:
        try:
            day = datetime.strptime(part.name[len("date=") :], "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            continue  # not a partition of ours
        if day + timedelta(days=1) > cutoff:
            continue
        if not dry_run:
            shutil.rmtree(part)
        removed += 1
    if removed:
        log.info(
            "%s %d decision-log days before %s", "would remove" if dry_run else "removed", removed, cutoff.isoformat()
        )
    return removed
