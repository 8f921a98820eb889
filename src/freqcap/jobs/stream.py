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

from freqcap.adapters.feast.cluster_routing import ClusterTopology, cluster_topology_for, key_slot
from freqcap.adapters.feast.stream_push import FeastPusher, RedisDirectPusher
from freqcap.adapters.secrets import load_pseudonymizer
from freqcap.adapters.stream.ownership import LeaseOwnership, StaticOwnership
from freqcap.adapters.stream.state import MemoryPartitionState, RedisPartitionState
from freqcap.adapters.stream.status import (
    cluster_nodes,
    read_combined,
    redis_client,
    status_from_hash,
    status_keys,
    stream_redis_client,
)
from freqcap.adapters.stream.transport import DirectoryReplayTransport, RedisStreamTransport, default_consumer_name
from freqcap.config import Settings, StreamConfig
from freqcap.domain.stream.partitions import dead_letter_name, stream_name, tag
from freqcap.jobs.stream_worker import StreamWorker
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)


def _pusher(settings: Settings, store: Any):
    cfg = settings.stream
    online = settings.feast.online
    if cfg.push_mode in ("lua", "direct", "atomic") and online.kind in ("redis", "redis_cluster"):
        ttl = int(settings.online_key_ttl.total_seconds())
        # A push of a large micro-batch is several MB in one write: a generous timeout on a busy box.
        if online.kind == "redis_cluster":
            topology = cluster_topology_for(store.config.online_store, socket_timeout=30, socket_connect_timeout=5)
            return RedisDirectPusher(store, None, ttl, topology=topology)
        return RedisDirectPusher(store, redis_client(online.redis_connection_string, socket_timeout=30), ttl)
    return FeastPusher(store)


def _partition_client(cfg: StreamConfig, client: Any, topology: ClusterTopology | None, p: int) -> Any:
    """The client a partition's transport and state use: the one server's, or on a Redis Cluster a plain client of
    the master that serves the partition's hash tag (every key of the partition lives there, so its pre-packed
    reads and its one-script flush go to one node as they do on a single server)."""
    if topology is None:
        return client
    slot_map = topology.current
    return topology.client(slot_map.nodes[slot_map.node_of(key_slot(tag(p).encode()))])


def redis_partition_opener(settings: Settings, client: Any, consumer: str, topology: ClusterTopology | None = None):
    """`open_partition(p)` for a worker: the partition's stream transport and its Redis state."""
    cfg = settings.stream
    n = cfg.partitions

    def open_partition(p: int) -> tuple[RedisStreamTransport, RedisPartitionState]:
        client_p = _partition_client(cfg, client, topology, p)
        transport = RedisStreamTransport(
            client_p,
            stream_name(cfg.stream_key, p, n),
            cfg.group,
            consumer,
            dead_letter_name(cfg.dead_letter_key, p, n),
        )
        state = RedisPartitionState(
            client_p, cfg.state_prefix, p, dedup_ttl_s=cfg.seconds("dedup_ttl"), retention_s=cfg.seconds("retention")
        )
        return transport, state

    return open_partition


@contextlib.contextmanager
def redis_worker(
    settings: Settings, store: Any, consumer: str | None = None, crash_hook: Any = None
) -> Iterator[StreamWorker]:
    """A worker consuming the Redis streams of `settings.stream` (the partitions it can lease), its state and
    status in that Redis."""
    cfg = settings.stream
    name = consumer or default_consumer_name()
    timeout = max(30.0, cfg.block_ms / 1000 + 2)
    # Leases, membership and status are single-key commands (or one partition's hash tag): on a cluster the
    # RedisCluster client routes them; a partition's stream and state use its master's own client.
    client = stream_redis_client(cfg, socket_timeout=timeout)
    topology = None
    if cfg.redis_kind == "redis_cluster":
        topology = ClusterTopology(
            cluster_nodes(cfg.redis_url), {"socket_timeout": timeout, "socket_connect_timeout": 5}
        )
    ownership = LeaseOwnership(client, cfg.state_prefix, cfg.partitions, name, cfg.seconds("lease_ttl"))
    worker = StreamWorker(
        cfg,
        ownership,
        redis_partition_opener(settings, client, name, topology),
        _pusher(settings, store),
        status_client=client,
        allowed_formats=settings.validation.allowed_formats,
        crash_hook=crash_hook,
        pseudonymizer=load_pseudonymizer(settings),
    )
    try:
        yield worker
    finally:
        client.close()
        if topology is not None:
            topology.close()


def replay_worker(settings: Settings, store: Any, events_dir: Path) -> StreamWorker:
    """Embedded mode: replay an event directory through in-memory state into Feast (`FeatureStore.push`)."""
    cfg = settings.stream.model_copy(update={"block_ms": 0, "partitions": 1})
    transport = DirectoryReplayTransport(Path(events_dir), DataLayout.of(settings).stream_dead_letters)
    state = MemoryPartitionState(0)
    return StreamWorker(
        cfg,
        StaticOwnership(1),
        lambda p: (transport, state),
        FeastPusher(store),
        allowed_formats=settings.validation.allowed_formats,
        pseudonymizer=load_pseudonymizer(settings),
    )


def metrics_text(worker: StreamWorker, settings: Settings) -> str:
    """Prometheus text: the worker's counters plus watermark and lag from its status."""
    lines = []
    for name, value in asdict(worker.stats).items():
        if isinstance(value, int | float):
            shown = f"{value:.6f}" if isinstance(value, float) else value
            lines += [f"# TYPE freqcap_stream_{name}_total counter", f"freqcap_stream_{name}_total {shown}"]
    for reason, n in sorted(worker.stats.dead_by_reason.items()):
        lines.append(f'freqcap_stream_dead_letters_by_reason_total{{reason="{reason}"}} {n}')
    client = worker.status_client
    if client is not None:
        cfg = settings.stream
        max_lag = cfg.seconds("max_lag")
        status = status_from_hash(read_combined(client, cfg), max_lag)
        if status.watermark is not None:
            lines += [
                "# TYPE freqcap_stream_watermark_seconds gauge",
                f"freqcap_stream_watermark_seconds {status.watermark.timestamp():.3f}",
            ]
        if status.lag_seconds is not None:
            lines += ["# TYPE freqcap_stream_lag_seconds gauge", f"freqcap_stream_lag_seconds {status.lag_seconds:.3f}"]
        lines += ["# TYPE freqcap_stream_stale gauge", f"freqcap_stream_stale {int(status.stale)}"]
        pipe = client.pipeline(transaction=False)
        for key in status_keys(cfg):
            pipe.hgetall(key)
        lines.append("# TYPE freqcap_stream_partition_lag_seconds gauge")
        for p, raw in enumerate(pipe.execute()):
            lag = status_from_hash(raw, max_lag).lag_seconds
            if lag is not None:
                lines.append(f'freqcap_stream_partition_lag_seconds{{partition="{p}"}} {lag:.3f}')
        lines += [
            "# TYPE freqcap_stream_partitions_owned gauge",
            f"freqcap_stream_partitions_owned {len(worker.consumers)}",
        ]
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
