"""Wiring the worker from settings (the CLI and tests call these; the core modules know nothing of settings)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from freqcap.adapters.feast.stream_push import FeastPusher, RedisDirectPusher, RedisLuaPusher
from freqcap.adapters.stream.state import MemoryState, RedisState
from freqcap.adapters.stream.status import redis_client, status_from_hash
from freqcap.adapters.stream.transport import DirectoryReplayTransport, RedisStreamTransport, default_consumer_name
from freqcap.config import Settings, parse_duration
from freqcap.jobs.stream_worker import StreamWorker
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)


def _same_redis(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        url = url.split("://", 1)[-1].split(",", 1)[0].split("/", 1)[0]
        return url.replace("localhost", "127.0.0.1")

    return norm(a) == norm(b)


def _pusher(settings: Settings, store: Any, client: Any | None):
    cfg = settings.stream
    online = settings.feast.online
    if cfg.push_mode in ("lua", "direct") and online.kind == "redis":
        ttl = int(parse_duration(settings.feast.online_key_ttl).total_seconds())
        direct = RedisDirectPusher(store, redis_client(online.redis_connection_string), ttl)
        if cfg.push_mode == "lua" and client is not None and _same_redis(cfg.redis_url, online.redis_connection_string):
            return RedisLuaPusher(direct, client, f"{cfg.state_prefix}:dirty", f"{cfg.state_prefix}:s:")
        if cfg.push_mode == "lua":
            log.warning("stream state and online store are different Redis servers: pushing from Python")
        return direct
    return FeastPusher(store)


@contextlib.contextmanager
def redis_worker(settings: Settings, store: Any, consumer: str | None = None) -> Iterator[StreamWorker]:
    """A worker consuming the Redis stream of `settings.stream`, its state and status in that Redis."""
    cfg = settings.stream
    client = redis_client(cfg.redis_url, socket_timeout=max(5.0, cfg.block_ms / 1000 + 2))
    transport = RedisStreamTransport(
        client,
        cfg.stream_key,
        cfg.group,
        consumer or default_consumer_name(),
        cfg.dead_letter_key,
        claim_idle_ms=int(cfg.seconds("claim_idle") * 1000),
    )
    state = RedisState(
        client,
        cfg.state_prefix,
        bucket_s=int(cfg.seconds("bucket")),
        lateness_s=cfg.seconds("allowed_lateness"),
        dedup_ttl_s=cfg.seconds("dedup_ttl"),
        retention_s=cfg.seconds("retention"),
    )
    worker = StreamWorker(
        cfg,
        transport,
        state,
        _pusher(settings, store, client),
        status_client=client,
        allowed_formats=settings.validation.allowed_formats,
    )
    try:
        yield worker
    finally:
        transport.close()
        client.close()


def replay_worker(settings: Settings, store: Any, events_dir: Path) -> StreamWorker:
    """Embedded mode: replay an event directory through in-memory state into Feast (`FeatureStore.push`)."""
    cfg = settings.stream
    transport = DirectoryReplayTransport(Path(events_dir), DataLayout.of(settings).stream_dead_letters)
    state = MemoryState(bucket_s=int(cfg.seconds("bucket")), lateness_s=cfg.seconds("allowed_lateness"))

    return StreamWorker(
        cfg.model_copy(update={"block_ms": 0}),
        transport,
        state,
        FeastPusher(store),
        allowed_formats=settings.validation.allowed_formats,
    )


def metrics_text(worker: StreamWorker, settings: Settings) -> str:
    """Prometheus text: the worker's counters plus watermark and lag from its status."""
    lines = []
    for name, value in asdict(worker.stats).items():
        if isinstance(value, int):
            lines += [f"# TYPE freqcap_stream_{name}_total counter", f"freqcap_stream_{name}_total {value}"]
    for reason, n in sorted(worker.stats.dead_by_reason.items()):
        lines.append(f'freqcap_stream_dead_letters_by_reason_total{{reason="{reason}"}} {n}')
    client = worker.status_client
    if client is not None:
        status = status_from_hash(
            client.hgetall(f"{settings.stream.state_prefix}:status"), settings.stream.seconds("max_lag")
        )
        if status.watermark is not None:
            lines += [
                "# TYPE freqcap_stream_watermark_seconds gauge",
                f"freqcap_stream_watermark_seconds {status.watermark.timestamp():.3f}",
            ]
        if status.lag_seconds is not None:
            lines += ["# TYPE freqcap_stream_lag_seconds gauge", f"freqcap_stream_lag_seconds {status.lag_seconds:.3f}"]
        lines += ["# TYPE freqcap_stream_stale gauge", f"freqcap_stream_stale {int(status.stale)}"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def metrics_server(worker: StreamWorker, settings: Settings, port: int, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve `/metrics` for the worker on `host` (loopback by default) in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/metrics":
                self.send_error(404, "only /metrics")
                return
            body = metrics_text(worker, settings).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="freqcap-stream-metrics")
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
