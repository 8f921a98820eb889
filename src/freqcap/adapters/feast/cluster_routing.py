"""Feast's Redis Cluster online store, read and written by hand: the topology for its connection string, and one
pipelined round trip per master for a list of pre-packed commands.

The commands of one request (or one bulk batch) are grouped by the master that serves each key's slot
(`freqcap.adapters.redis_cluster`); each master gets its group in one write, all masters before any reply is read,
so they work at the same time and the request costs about the slowest master's round trip, not their sum. A reply
that says the map is out of date (`MOVED`, `ASK`, `CLUSTERDOWN`) or a master that cannot be reached fails the
request and makes the topology re-read the slot map; the request is not retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feast.infra.online_stores.redis import RedisOnlineStore
from redis.backoff import NoBackoff
from redis.retry import Retry

from freqcap.adapters.redis_cluster import ClusterTopology, key_slot, topology_from_connection_string

__all__ = ["ClusterTopology", "cluster_topology_for", "key_slot", "round_trip_by_node"]


def cluster_topology_for(
    online_store_config: Any,
    socket_timeout: float | None,
    socket_connect_timeout: float | None = None,
    client_name: str | None = None,
) -> ClusterTopology:
    """The topology of Feast's `redis_cluster` online store: per-master clients with a socket timeout and no
    retries (a frozen master raises `redis.TimeoutError` after `socket_timeout` instead of blocking)."""
    options: dict[str, Any] = {
        "decode_responses": False,  # values are protobuf bytes
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout or socket_timeout,
        # redis-py retries timeouts and connection errors 3 times with backoff (seconds) by default.
        "retry": Retry(NoBackoff(), 0),
    }
    if client_name:
        options["client_name"] = client_name
    return topology_from_connection_string(
        online_store_config.connection_string, RedisOnlineStore._parse_connection_string, **options
    )


def round_trip_by_node(topology: ClusterTopology, commands: Sequence[bytes], slots: Sequence[int]) -> list[Any]:
    """The replies (in `commands`' order) of pre-packed single-key commands whose keys are in `slots`: one write
    per master, every master written before any is read. Any error closes the connections this call used (none can
    hold an unread reply afterwards), tells the topology, and is raised."""
    slot_map = topology.current
    nodes = slot_map.nodes
    opened: list[tuple[Any, Any, list[int]]] = []
    replies: list[Any] = [None] * len(commands)
    try:
        groups = slot_map.group(slots)
        for index, positions in groups.items():
            pool = topology.client(nodes[index]).connection_pool
            conn = pool.get_connection()
            opened.append((pool, conn, positions))
            conn.send_packed_command([b"".join([commands[i] for i in positions])], check_health=False)
        for _, conn, positions in opened:
            for i in positions:
                replies[i] = conn.read_response()
    except BaseException as exc:
        for _, conn, _ in opened:
            conn.disconnect()
        topology.report_failure(exc)
        raise
    finally:
        for pool, conn, _ in opened:
            pool.release(conn)
    return replies
