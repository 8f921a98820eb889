"""Where the bulk writer's commands go: the one Redis server, or each master of a Redis Cluster by key slot.

On a single node every row goes down one writer connection (`split` returns the batch whole, no per-key work). On a
cluster each batch is split by the master that serves each key's slot (`freqcap.adapters.redis_cluster`), and each
master has its own writer and probe connection; `RedisTarget` sends every master its part before reading any
replies, so the masters write at the same time. The slot map is re-read at the start of every view; a slot that
moves during a write makes Redis answer `MOVED`, which fails the view (its state is not recorded, so the next run
rewrites it in full).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from feast.infra.online_stores.redis import RedisType

from freqcap.adapters.feast.cluster_routing import ClusterTopology, cluster_topology_for, key_slot
from freqcap.adapters.redis_cluster import Node

# A bulk write may legitimately take long per reply batch: no socket timeout, a bounded connect.
CONNECT_TIMEOUT = 10.0


class RedisNodes:
    """The connections of one bulk run: `writer(node)` and `probe(node)` per node, opened on first use.

    `node` is None on a single server, a (host, port) master on a cluster."""

    def __init__(self, client: Any, online_config: Any):
        self.client = client  # Feast's client (redis.Redis, or RedisCluster): single-key commands route themselves
        self.cluster = online_config.redis_type == RedisType.redis_cluster
        self.online_config = online_config
        self._topology: ClusterTopology | None = None
        self._writers: dict[Node | None, Any] = {}
        self._probes: dict[Node | None, Any] = {}

    @property
    def topology(self) -> ClusterTopology:
        if self._topology is None:
            self._topology = cluster_topology_for(self.online_config, None, CONNECT_TIMEOUT)
        return self._topology

    def refresh(self) -> None:
        """Re-read the cluster's slot map (a view's write starts from the cluster as it is now)."""
        if self.cluster:
            self.topology.refresh(force=True)

    def nodes(self) -> list[Node | None]:
        return list(self.topology.current.nodes) if self.cluster else [None]

    def redis(self, node: Node | None) -> Any:
        """A redis-py client that talks to `node` only."""
        return self.topology.client(node) if node is not None else self.client

    def connection(self, node: Node | None) -> Any:
        """A new, connected redis-py connection to `node` (the caller disconnects it)."""
        conn = self.redis(node).connection_pool.make_connection()
        conn.connect()
        return conn

    def writer(self, node: Node | None) -> Any:
        conn = self._writers.get(node)
        if conn is None:
            conn = self._writers[node] = self.connection(node)
        return conn

    def probe(self, node: Node | None) -> Any:
        conn = self._probes.get(node)
        if conn is None:
            conn = self._probes[node] = self.connection(node)
        return conn

    def node_of(self, key: bytes) -> Node | None:
        if not self.cluster:
            return None
        slot_map = self.topology.current
        return slot_map.nodes[slot_map.node_of(key_slot(key))]

    def split(self, keys: pa.Array, suffix: bytes) -> list[tuple[Node | None, np.ndarray | None]]:
        """(node, row indices) per node serving some of `keys` (each with `suffix` appended, as stored); one
        (None, None) on a single server: the whole batch, nothing computed per key."""
        if not self.cluster:
            return [(None, None)]
        slot_map = self.topology.current
        groups = slot_map.group(key_slot(key + suffix) for key in keys.to_pylist())
        return [(slot_map.nodes[index], np.asarray(rows, dtype=np.int64)) for index, rows in groups.items()]

    def config_get(self, pattern: str) -> list[dict]:
        """`CONFIG GET pattern` of every node (every master of a cluster)."""
        return [self.redis(node).config_get(pattern) for node in self.nodes()]

    def disconnect(self) -> None:
        """Close the writer and probe connections (the run's end, or after an error)."""
        conns = [*self._writers.values(), *self._probes.values()]
        self._writers, self._probes = {}, {}
        for conn in conns:
            conn.disconnect()

    def close(self) -> None:
        self.disconnect()
        if self._topology is not None:
            self._topology.close()
            self._topology = None
