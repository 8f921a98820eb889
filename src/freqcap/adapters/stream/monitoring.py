"""The streaming worker's status, as monitoring sees it: one adapter, so that monitoring works with or without it.

`freqcap.adapters.stream.status.read_status(settings)` returns a `StreamStatus` (lag_seconds, watermark, fresh_at,
stale) or None. Where the streaming package is not installed or no stream is configured, there is no stream: the
metrics are absent and no stream alarm can fire.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from freqcap.domain.monitoring.metrics import ALL, MetricRow

log = logging.getLogger(__name__)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def stream_status(settings: Any) -> dict[str, Any] | None:
    """The stream's status as plain values, or None when there is no stream (module missing or not configured)."""
    try:
        from freqcap.adapters.stream.status import read_status  # redis: a stream-less install reports no stream
    except ImportError:
        return None
    status = read_status(settings)
    if status is None:
        return None
    return {
        "lag_seconds": None if status.lag_seconds is None else float(status.lag_seconds),
        "watermark": _iso(status.watermark),
        "fresh_at": _iso(status.fresh_at),
        "stale": bool(status.stale),
    }


def stream_rows(status: dict[str, Any] | None) -> list[MetricRow]:
    """`stream_lag_seconds` (when the worker reports a lag) and `stream_stale` (1 or 0); none without a stream."""
    if status is None:
        return []
    rows = [MetricRow("stream_stale", ALL, 1.0 if status["stale"] else 0.0, 1.0)]
    if status["lag_seconds"] is not None:
        rows.append(MetricRow("stream_lag_seconds", ALL, float(status["lag_seconds"]), 1.0))
    return rows
