"""The stream worker's status as serving and monitoring read it: watermark, lag, coverage, counters.

Stored per partition in the Redis hash `<state_prefix>:{p<k>}:status`, by the partition's owner (the watermark and
counters inside its atomic flush): `max_ts_us` (newest event time applied), `fresh_at_us` (wall clock of the newest
read after which the worker had applied *and pushed* everything the partition held when that read was issued),
`heartbeat_us`, `coverage_start_us` (the stream holds every event with a later event time), `owner`, `last_id`,
counters `applied`, `duplicates`, `late`, `dead_letters` (and `dead:<reason>`), `pushed`.

The stream's status is the partitions' combined (`combine`): fresh only as of the least fresh partition (a partition
nobody consumes makes the whole stream stale, since its users' counts would be old), the oldest watermark and
heartbeat, the latest coverage start, counters summed. A stream is *stale* when `now - fresh_at > stream.max_lag`:
every event produced up to `fresh_at` is visible in the online store, so the lag of anything older is bounded by
that difference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from freqcap.config import Settings, StreamConfig
from freqcap.domain.stream.partitions import state_base

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


def status_keys(cfg: StreamConfig) -> list[str]:
    """The status hash of every partition."""
    return [f"{state_base(cfg.state_prefix, p)}:status" for p in range(cfg.partitions)]


def _ints(raw: dict[Any, Any]) -> dict[str, int]:
    out = {}
    for k, v in raw.items():
        k = k.decode() if isinstance(k, bytes) else k
        try:
            out[k] = int(v)
        except (TypeError, ValueError):
            continue
    return out


def combine(raws: list[dict[Any, Any]]) -> dict[str, int]:
    """The partitions' status hashes as one (see the module docstring); {} when no partition has a status."""
    parts = [_ints(r) for r in raws]
    if not any(parts):
        return {}
    out: dict[str, int] = {}
    for name in ("fresh_at_us", "heartbeat_us"):  # every partition must have one, the oldest counts
        values = [p.get(name) for p in parts]
        if all(v is not None for v in values):
            out[name] = min(values)  # type: ignore[type-var]
    marks = [p["max_ts_us"] for p in parts if "max_ts_us" in p]
    if marks:
        out["max_ts_us"] = min(marks)
    starts = [p["coverage_start_us"] for p in parts if "coverage_start_us" in p]
    if starts:
        out["coverage_start_us"] = max(starts)
    for p in parts:
        for name, value in p.items():
            if name in ("applied", "duplicates", "late", "dead_letters", "pushed") or name.startswith("dead:"):
                out[name] = out.get(name, 0) + value
    return out


def read_combined(client: Any, cfg: StreamConfig) -> dict[str, int]:
    """Every partition's status hash in one round trip, combined."""
    pipe = client.pipeline(transaction=False)
    for key in status_keys(cfg):
        pipe.hgetall(key)
    return combine(pipe.execute())


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """Start-up nodes of `h1:p1,h2:p2` (a redis:// URL names one)."""
    nodes = []
    for part in url.split(","):
        part = part.strip().removeprefix("redis://").split("/", 1)[0]
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "6379")
        nodes.append((host or "127.0.0.1", int(port or 6379)))
    return nodes


def stream_redis_client(cfg: StreamConfig, socket_timeout: float = 1.0):
    """A client of the stream's Redis (`stream.redis_url`): a `redis.Redis`, or on a Redis Cluster a
    `RedisCluster` (single-key commands and non-transactional pipelines route themselves by slot)."""
    if cfg.redis_kind == "redis_cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes(cfg.redis_url)],
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )
    return redis_client(cfg.redis_url, socket_timeout=socket_timeout)


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
        client = client or stream_redis_client(cfg)
        raw = read_combined(client, cfg)
    except Exception:  # no Redis: no stream (monitoring reports it absent, serving falls back to batch)
        return None
    if not raw:
        return None
    return status_from_hash(raw, cfg.seconds("max_lag"))
