"""The stream worker's status as serving and monitoring read it: watermark, lag, coverage, counters.

Stored in the Redis hash `<state_prefix>:status` by the worker (and, for the watermark, by its apply script):
`max_ts_us` (newest event time applied), `fresh_at_us` (wall clock of the newest read after which the worker had
applied *and pushed* everything the stream held when that read was issued), `heartbeat_us`, `coverage_start_us`
(the stream holds every event with a later event time), counters `applied`, `duplicates`, `late`, `dead_letters`,
`pushed`. A stream is *stale* when `now - fresh_at > stream.max_lag`: every event produced up to `fresh_at` is
visible in the online store, so the lag of anything older is bounded by that difference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from freqcap.config import Settings

_US = 1_000_000


@dataclass(frozen=True)
class StreamStatus:
    watermark: datetime | None  # newest event time applied
    fresh_at: datetime | None  # wall clock: everything produced before it is visible online
    heartbeat: datetime | None
    coverage_start: datetime | None
    lag_seconds: float | None  # now - fresh_at
    stale: bool
    counters: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "watermark": iso(self.watermark),
            "fresh_at": iso(self.fresh_at),
            "heartbeat": iso(self.heartbeat),
            "coverage_start": iso(self.coverage_start),
            "lag_seconds": self.lag_seconds,
            "stale": self.stale,
            **self.counters,
        }


def _dt(us: int | None) -> datetime | None:
    return datetime.fromtimestamp(us / _US, UTC) if us is not None else None


def status_from_hash(raw: dict[Any, Any], max_lag_s: float, now: float | None = None) -> StreamStatus:
    """Interpret the status hash (bytes or str keys) at wall time `now` (epoch seconds)."""
    now = time.time() if now is None else now
    values: dict[str, int] = {}
    for k, v in raw.items():
        k = k.decode() if isinstance(k, bytes) else k
        try:
            values[k] = int(v)
        except (TypeError, ValueError):
            continue
    fresh = values.get("fresh_at_us")
    lag = now - fresh / _US if fresh is not None else None
    counters = {k: values.get(k, 0) for k in ("applied", "duplicates", "late", "dead_letters", "pushed")}
    return StreamStatus(
        watermark=_dt(values.get("max_ts_us")),
        fresh_at=_dt(fresh),
        heartbeat=_dt(values.get("heartbeat_us")),
        coverage_start=_dt(values.get("coverage_start_us")),
        lag_seconds=lag,
        stale=lag is None or lag > max_lag_s,
        counters=counters,
    )


def redis_client(url: str, socket_timeout: float = 1.0):
    """A redis-py client for `host:port` (or a redis:// URL)."""
    if "://" in url:
        return redis.Redis.from_url(url, socket_timeout=socket_timeout)
    host, _, port = url.partition(":")
    return redis.Redis(
        host=host, port=int(port or 6379), socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
    )


def read_status(settings: Settings, client: Any = None) -> StreamStatus | None:
    """The stream's status, or None when streaming is not configured or its Redis cannot be reached."""
    cfg = settings.stream
    if not cfg.enabled and client is None:
        return None
    try:
        client = client or redis_client(cfg.redis_url)
        raw = client.hgetall(f"{cfg.state_prefix}:status")
    except Exception:  # no Redis: no stream (monitoring reports it absent, serving falls back to batch)
        return None
    if not raw:
        return None
    return status_from_hash(raw, cfg.seconds("max_lag"))
