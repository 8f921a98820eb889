"""Serving's view of the stream: is it usable right now, from when does it cover, and where does batch stop.

Read off the request path's critical section: the status hash and the batch watermarks are refreshed at most every
`stream.status_refresh` (0.5 s) by whichever lookup thread finds them old; a failed refresh marks the stream
unusable (serving answers from batch and flags `stream_stale`) rather than failing the request.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from freqcap.adapters.stream.status import StreamStatus, read_combined, status_from_hash, stream_redis_client
from freqcap.config import Settings
from freqcap.domain.stream.buckets import window_seconds
from freqcap.domain.stream.seam import Seam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeamSnapshot:
    """What one request uses: the seam if the stream is usable (else None), and the batch views' watermarks."""

    seam: Seam | None
    batch_watermarks: dict[str, float]  # level -> epoch seconds of the view's last complete bulk write
    status: StreamStatus | None


class StreamSeamSource:
    """Cached stream status + batch watermarks for the fast reader."""

    def __init__(self, settings: Settings, store: Any, client: Any = None, socket_timeout: float = 0.1):
        cfg = settings.stream
        self.settings = settings
        self.store = store
        self.client = client or stream_redis_client(cfg, socket_timeout=socket_timeout)
        self.cfg = cfg
        self.refresh_s = cfg.seconds("status_refresh")
        self.max_lag_s = cfg.seconds("max_lag")
        self.bucket_s = int(cfg.seconds("bucket"))
        self.alone = frozenset(window_seconds(cfg.windows))
        self._lock = threading.Lock()
        self._snapshot = SeamSnapshot(None, {}, None)
        self._at = float("-inf")

    def current(self) -> SeamSnapshot:
        if time.monotonic() - self._at < self.refresh_s:
            return self._snapshot
        with self._lock:
            if time.monotonic() - self._at >= self.refresh_s:
                self._snapshot = self._load()
                self._at = time.monotonic()
        return self._snapshot

    def invalidate(self) -> None:
        self._at = float("-inf")

    def _load(self) -> SeamSnapshot:
        try:
            raw = read_combined(self.client, self.cfg)
        except Exception as exc:  # stream's Redis unreachable: batch alone, flagged
            log.warning("stream status unreadable (%s): serving from batch", exc)
            return SeamSnapshot(None, self._snapshot.batch_watermarks, None)
        status = status_from_hash(raw, self.max_lag_s) if raw else None
        watermarks = self._batch_watermarks()
        if status is None or status.stale or status.coverage_start is None:
            return SeamSnapshot(None, watermarks, status)
        seam = Seam(self.bucket_s, self.alone, status.coverage_start.timestamp())
        return SeamSnapshot(seam, watermarks, status)

    def _batch_watermarks(self) -> dict[str, float]:
        """Per level, the cut-off of the batch view: the bulk materializer's as-of, else the end of Feast's newest
        materialization interval floored to the bucket (the features job materializes (as_of - 1 s, as_of + 1 s),
        so that is the as-of). A pair with no row had no event up to it; without one, the seam cannot rule out a
        gap for such pairs and does not use the stream for them."""
        names = {f"user_{level}": level for level in ("advertiser", "campaign", "ad")}
        out: dict[str, float] = {}
        try:
            from freqcap.adapters.feast.bulk import online_state

            states = online_state(self.store, self.settings, list(names))
            out = {names[v]: s.as_of_dt.timestamp() for v, s in states.items() if s is not None}
        except Exception as exc:  # no bulk state (Feast's own materialize): Feast's intervals below
            log.debug("no bulk watermarks: %s", exc)
        for view, level in names.items():
            if level in out:
                continue
            try:
                end = self.store.get_feature_view(view, allow_registry_cache=True).most_recent_end_time
            except Exception as exc:
                log.debug("no materialization interval for %s: %s", view, exc)
                continue
            if end is not None:
                seconds = end.timestamp() - 1e-6  # the interval's end is exclusive
                out[level] = seconds - seconds % self.bucket_s
        return out
