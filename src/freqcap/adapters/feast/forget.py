"""Removing one person from Feast's online store: SQLite, Redis or Redis Cluster, batch and stream views alike.

How the user's entries are found — by **scanning**, not by rebuilding keys from the offline data. Every view of
freqcap is keyed by `user_id`, alone or with one hierarchy id, and `user_id` sorts last among the join keys, so in
Feast's serialized entity key (`online_format`) the user's id is the last value: the key *ends* with the user
(SQLite's `entity_key`) or with the user and the project (Redis). Keys rebuilt from the offline snapshots would miss
pairs the offline data no longer (or never) had: pairs only the stream worker pushed, pairs whose snapshots were
pruned by retention while their Redis hash still lives out its TTL. A scan finds them all, at the cost of one pass
over the keyspace per *batch* of users (the DAG batches requests for that reason), however many users it holds.

* SQLite: one `DELETE` per view table of the project, on the key's trailing bytes; every candidate is decoded with
  Feast's own `deserialize_entity_key` before it is deleted (exact match, never a byte-suffix coincidence); then
  `VACUUM`, so no copy of the key survives in index pages, free pages or the write-ahead log.
* Redis / Redis Cluster: `SCAN` of every master (`MATCH *<project>`: only this project's keys come back), each key
  decoded the same way, then `UNLINK`. One hash holds every view on one entity key (batch and stream views share
  it), so one key deleted removes the pair from both paths.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from feast.infra.key_encoding_utils import deserialize_entity_key

from freqcap.adapters.feast import online_format as fmt
from freqcap.adapters.feast.store import repo_config_dict
from freqcap.config import Settings

log = logging.getLogger(__name__)

USER_KEY = "user_id"
_SCAN_COUNT = 1000


@dataclass(frozen=True)
class OnlineForgetResult:
    store: str  # sqlite | redis | redis_cluster
    removed: int  # SQLite rows (one per entity x feature) or Redis keys (one per entity key)
    scanned: int  # entries looked at


def user_value_suffix(user: str) -> bytes:
    """The last value of a serialized entity key whose last join key is `user_id` = `user`."""
    raw = user.encode("utf-8")
    return fmt.STRING_TYPE + struct.pack("<I", len(raw)) + raw


def user_of_entity_key(serialized: bytes, version: int) -> str | None:
    """The `user_id` of a serialized entity key (None when the key has none or is not a Feast entity key)."""
    try:
        key = deserialize_entity_key(bytes(serialized), entity_key_serialization_version=version)
    except (ValueError, struct.error, UnicodeDecodeError):
        return None
    if USER_KEY not in key.join_keys:
        return None
    value = key.entity_values[list(key.join_keys).index(USER_KEY)]
    return value.string_val if value.WhichOneof("val") == "string_val" else None


# ----------------------------------------------------------------------------------------------------- SQLite


def _view_tables(con: sqlite3.Connection, project: str) -> list[str]:
    """Tables of the project's views: Feast names them `<project>_<view>` with an `entity_key` column."""
    names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    tables = []
    for name in names:
        if not name.startswith(f"{project}_"):
            continue
        columns = {r[1] for r in con.execute(f'PRAGMA table_info("{name}")')}
        if "entity_key" in columns:
            tables.append(name)
    return tables


def forget_sqlite(db_path: Path, project: str, forms: Collection[str], version: int) -> OnlineForgetResult:
    """Delete the rows of `forms` from every view table of `project` in Feast's SQLite online store."""
    if not db_path.exists():
        return OnlineForgetResult("sqlite", 0, 0)
    wanted = set(forms)
    removed = scanned = 0
    con = sqlite3.connect(db_path, timeout=30)
    try:
        # Without it SQLite leaves deleted rows' bytes in free pages (and the WAL) until they are reused: the id
        # would still be in the file. With it, deleted content is overwritten with zeros.
        con.execute("PRAGMA secure_delete = ON")
        with con:  # one transaction: all of the user's rows go, or none
            for table in _view_tables(con, project):
                keys: set[bytes] = set()
                for form in wanted:
                    suffix = user_value_suffix(form)
                    rows = con.execute(
                        f'SELECT DISTINCT entity_key FROM "{table}" '
                        "WHERE length(entity_key) >= ? AND substr(entity_key, length(entity_key) - ? + 1) = ?",
                        (len(suffix), len(suffix), suffix),
                    ).fetchall()
                    scanned += len(rows)
                    keys.update(bytes(r[0]) for r in rows if user_of_entity_key(r[0], version) in wanted)
                for key in keys:
                    removed += con.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', (key,)).rowcount
        if removed:
            # Deleting is not enough for the bytes to leave the file: an index b-tree keeps copies of keys as
            # dividers in its interior pages, and those stay after the entry is deleted (measured: the id was
            # still in online.db). VACUUM rebuilds the file from the live rows; the checkpoint first empties the
            # write-ahead log, which may hold old pages too. Costs a rewrite of the file (the embedded store).
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.execute("VACUUM")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return OnlineForgetResult("sqlite", removed, scanned)


# ------------------------------------------------------------------------------------------------------ Redis


def _glob_escape(raw: bytes) -> bytes:
    """`raw` as a literal inside a Redis glob pattern."""
    out = bytearray()
    for b in raw:
        if b in b"*?[]\\":
            out += b"\\"
        out.append(b)
    return bytes(out)


def _tails(forms: Collection[str]) -> dict[int, set[bytes]]:
    """The key tails of `forms` (`user_value_suffix`), grouped by length: a key is a candidate when its tail of
    one of these lengths is in the set — a couple of dict look-ups per key instead of a full decode."""
    out: dict[int, set[bytes]] = {}
    for form in forms:
        tail = user_value_suffix(form)
        out.setdefault(len(tail), set()).add(tail)
    return out


def _matching_keys(client: Any, project: bytes, wanted: set[str], version: int) -> tuple[list[bytes], int]:
    """Keys of one Redis server (a cluster master) whose entity key holds a user in `wanted`."""
    found: list[bytes] = []
    scanned = 0
    pattern = b"*" + _glob_escape(project)
    tails = _tails(wanted)
    cut = len(project)
    for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
        scanned += 1
        if not key.endswith(project):
            continue
        body = key[:-cut]
        # Candidates by their tail, then confirmed by Feast's own decoder (exact, never a byte coincidence).
        if any(body[-n:] in group for n, group in tails.items()) and user_of_entity_key(body, version) in wanted:
            found.append(key)
    return found, scanned


def redis_clients(connection_string: str, cluster: bool, socket_timeout: float = 10.0) -> list[Any]:
    """A client per server holding online keys: the one server, or every master of the cluster."""
    config = SimpleNamespace(connection_string=connection_string)
    if cluster:
        from freqcap.adapters.feast.cluster_routing import cluster_topology_for

        return [client for _, client in cluster_topology_for(config, socket_timeout).clients()]
    from freqcap.adapters.feast.fast_reader import redis_client_for

    return [redis_client_for(config, socket_timeout)]


def forget_redis(clients: Iterable[Any], project: str, forms: Collection[str], version: int) -> OnlineForgetResult:
    """Delete every online hash of `forms` in `project` from each server in `clients` (a cluster's masters)."""
    wanted = set(forms)
    suffix = project.encode("utf-8")
    removed = scanned = 0
    for client in clients:
        keys, n = _matching_keys(client, suffix, wanted, version)
        scanned += n
        removed += _unlink_each(client, keys)
    return OnlineForgetResult("redis", removed, scanned)


def _unlink_each(client: Any, keys: list[bytes]) -> int:
    """UNLINK one key per command, pipelined, on the server that returned the keys from SCAN (on a cluster
    master, keys of different slots cannot share one command; each key is where SCAN found it: no routing)."""
    if not keys:
        return 0
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    return sum(int(n) for n in pipe.execute())


# ----------------------------------------------------------------------------------------------------- settings


def forget_online(settings: Settings, repo_dir: Path, forms: Collection[str]) -> OnlineForgetResult:
    """Remove `forms` from the online store `settings` configure (the Feast runtime repo at `repo_dir`)."""
    config = repo_config_dict(settings, repo_dir.resolve())
    version = int(config["entity_key_serialization_version"])
    online = settings.feast.online
    if not online.is_redis:
        return forget_sqlite(Path(config["online_store"]["path"]), settings.feast.project, forms, version)
    cluster = online.kind == "redis_cluster"
    clients = redis_clients(online.redis_connection_string, cluster)
    try:
        result = forget_redis(clients, settings.feast.project, forms, version)
    finally:
        for client in clients:
            client.close()
    return OnlineForgetResult(online.kind, result.removed, result.scanned)
