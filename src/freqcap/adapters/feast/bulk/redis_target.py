"""Writing into Feast's Redis online store (`RedisOnlineStore` layout), pipelined over one dedicated connection
per node: the server, or each master of a Redis Cluster (`redis_nodes`: rows split by key slot, every master sent
its part of a batch before any replies are read).

The layout is Feast's as `freqcap.adapters.feast.online_format` writes it down (one hash per entity key, shared
by every view on that key; a field per feature and `_ts:<view>`); `EXPIRE key_ttl_seconds` after every write, as
Feast does. Commands are encoded as RESP for a whole batch at once (`commands`) and sent by `resp`; every reply is
checked.

A key that does not exist yet is written as one `RESTORE key ttl_ms payload` of exactly the hash that HSET would
build (`freqcap.adapters.feast.redis_dump`: about half the Redis CPU per row). `RESTORE` never overwrites, so an
existing key (other views' fields, an older write) answers `BUSYKEY` and gets `HSET` + `EXPIRE`. Per view and run a
real row is first written both ways under scratch keys and the server's `DUMP`s must be byte-identical
(`_check_restore`), else every row uses `HSET`.

Unchanged rows of an incremental run get the same `EXPIRE` without a rewrite (`touch`), so TTLs track the newest
snapshot exactly as with `materialize`; an `EXPIRE` that answers 0 reveals a key that vanished, and that row is
rewritten.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import redis
from feast.infra.online_stores.redis import RedisOnlineStore

from freqcap.adapters.feast import online_format as fmt
from freqcap.adapters.feast import redis_dump
from freqcap.adapters.feast.bulk.binary import ascii_lengths, join
from freqcap.adapters.feast.bulk.encoders import Batch, entity_keys
from freqcap.adapters.feast.bulk.errors import BulkMaterializeError, LayoutMismatchError, UnsupportedOnlineStoreError
from freqcap.adapters.feast.bulk.plan import ViewPlan
from freqcap.adapters.feast.bulk.redis_nodes import RedisNodes
from freqcap.adapters.feast.bulk.reports import BulkState
from freqcap.adapters.feast.bulk.resp import (
    CRLF,
    buffer_view,
    bulk_string,
    read_and_check,
    read_lines,
    send_and_check,
    send_and_read_lines,
)
from freqcap.adapters.feast.bulk.target import Target, Worker

log = logging.getLogger(__name__)

STATE_KEY_PREFIX = b"freqcap:bulk_state:"


class RedisTarget(Target):
    kind = "redis"

    def __init__(self, store: Any):
        self.store = store
        self.config = store.config
        online = self.config.online_store
        provider_store = store._get_provider().online_store
        if not isinstance(provider_store, RedisOnlineStore):
            raise UnsupportedOnlineStoreError(f"unexpected online store {type(provider_store).__name__}")
        self.client = provider_store._get_client(online)
        # Per-node connections; on a cluster the slot map is read at the first `begin` (reading the state is free).
        self.nodes = RedisNodes(self.client, online)
        self.ttl = online.key_ttl_seconds
        self.project = fmt.redis_key_suffix(self.config)
        self._worker: Worker | None = None
        self.plan: ViewPlan | None = None
        self.fields: fmt.RedisFields | None = None  # the plan's hash fields
        self.use_restore = True  # tests and benchmarks turn it off to measure the HSET path alone
        self.restore_reason = ""
        self.rows_restored = 0

    # -- layout ------------------------------------------------------------------------------------------------
    def store_name(self, view: Any) -> str:
        return fmt.redis_view_name(view, self.config)

    # -- state -------------------------------------------------------------------------------------------------
    def _state_key(self, view: str) -> bytes:
        return STATE_KEY_PREFIX + self.project + b":" + view.encode("utf8")

    def read_state(self, view: str) -> BulkState | None:
        raw = self.client.get(self._state_key(view))
        return BulkState(**json.loads(raw)) if raw else None

    def write_state(self, view: str, state: BulkState) -> None:
        self.client.set(self._state_key(view), json.dumps(asdict(state)), ex=self.ttl or None)

    def clear_state(self, view: str) -> None:
        self.client.delete(self._state_key(view))

    # -- writing -----------------------------------------------------------------------------------------------
    def begin(self, plan: ViewPlan, as_of: datetime) -> None:
        self.plan = plan
        try:  # the fields Feast's own online_read asks for, or nothing is written
            self.fields = fmt.redis_fields(plan.view, plan.feature_names, self.config)
        except fmt.FormatMismatch as exc:
            raise LayoutMismatchError(f"{plan.name}: {exc}") from exc
        fields = self.fields.features
        self._ts_field_bulk = bulk_string(self.fields.ts)
        self._field_bulks = [bulk_string(f) for f in fields]
        self._header = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(fields) + 1))
        self._expire = b"*3\r\n$6\r\nEXPIRE\r\n"
        self._ttl_bulk = bulk_string(str(self.ttl).encode()) if self.ttl else b""
        self.nodes.refresh()
        self._worker = Worker(self._send)
        self.rows_restored = 0
        self._restore: tuple[int, bytes] | None = None  # (RDB type, RDB version) once the probe passed
        self._restore_checked = False
        self._busy_share = 0.0
        self._hset_batches = 0
        self._ttl_ms_bulk = bulk_string(str(self.ttl * 1000).encode() if self.ttl else b"0")

    def _key_bulks(self, keys: pa.Array) -> pa.Array:
        redis_keys = join(keys, self.project)
        return join(b"$", ascii_lengths(redis_keys), CRLF, redis_keys, CRLF)

    def commands(self, batch: Batch) -> tuple[pa.Array, int]:
        """RESP for HSET key _ts:<view> ts <field> <value> ... [+ EXPIRE key ttl] per row, and the reply count."""
        key_bulks = self._key_bulks(batch.keys)
        ts_pieces = pa.array(
            [self._ts_field_bulk + bulk_string(fmt.event_timestamp(t)) for t in batch.ts_uniques], pa.binary()
        ).take(pa.array(batch.ts_indices))
        parts: list[Any] = [self._header, key_bulks, ts_pieces]
        parts += [col.resp_piece(fb) for col, fb in zip(batch.columns, self._field_bulks, strict=True)]
        if self.ttl:
            parts += [self._expire, key_bulks, self._ttl_bulk]
        return join(*parts), batch.n * (2 if self.ttl else 1)

    # -- RESTORE: a key that does not exist yet is written as a whole hash (freqcap.adapters.feast.redis_dump) ---------
    def _listpack_entries(self, batch: Batch) -> tuple[list[Any], np.ndarray]:
        """Each row's listpack entries (field, value, ... in `commands`' HSET order), and a mask of rows that
        cannot be a short-string listpack (those are written with HSET)."""
        ts_entries = pa.array([redis_dump.entry(fmt.event_timestamp(t)) for t in batch.ts_uniques], pa.binary()).take(
            pa.array(batch.ts_indices)
        )
        parts: list[Any] = [redis_dump.entry(self.fields.ts), ts_entries]
        bad = np.zeros(batch.n, dtype=bool)
        for col, field in zip(batch.columns, self.fields.features, strict=True):
            values, col_bad = col.lp_entries()
            parts += [redis_dump.entry(field), values]
            bad |= col_bad
        return parts, bad

    def restore_payloads(self, batch: Batch) -> tuple[pa.Array, np.ndarray]:
        """DUMP payload of each row's hash (the same fields, order and bytes as `commands`' HSET), and a mask of
        rows that cannot be a short-string listpack (those are written with HSET)."""
        parts, bad = self._listpack_entries(batch)
        rdb_type, version = self._restore
        return redis_dump.payloads(join(*parts), len(parts), rdb_type, version), bad

    def restore_commands(self, batch: Batch) -> tuple[pa.Array, np.ndarray]:
        """RESP `RESTORE key ttl_ms payload` for the rows that can be restored, and those rows' indices."""
        payloads, bad = self.restore_payloads(batch)
        rows = np.flatnonzero(~bad)
        keys = batch.keys
        if bad.any():
            keep = pa.array(~bad)
            payloads, keys = payloads.filter(keep), keys.filter(keep)
        cmds = join(
            b"*4\r\n$7\r\nRESTORE\r\n",
            self._key_bulks(keys),
            self._ttl_ms_bulk,
            b"$",
            ascii_lengths(payloads),
            CRLF,
            payloads,
            CRLF,
        )
        return cmds, rows

    def _check_restore(self, batch: Batch) -> str:
        """Whether RESTORE may write this view's new keys; '' if so, else why not.

        One real row of the batch is written twice under two scratch keys: with this module's HSET commands and
        with its RESTORE payload. The server's DUMPs of the two keys must be byte-identical (same listpack, same
        encoding); the payload's RDB type and version are taken from the server's own DUMP.
        """
        try:  # every node's: on a cluster the masters could be configured differently
            configs = self.nodes.config_get("hash-max-listpack-*")
        except redis.RedisError as exc:
            return f"CONFIG GET unavailable ({exc})"
        try:
            max_entries = min(int(c.get("hash-max-listpack-entries", 0)) for c in configs)
            max_value = min(int(c.get("hash-max-listpack-value", 0)) for c in configs)
        except (TypeError, ValueError):
            return f"unreadable listpack limits {configs!r}"
        nfields = len(self.plan.features) + 1
        if max_entries < nfields or max_value < redis_dump.MAX_SHORT:
            return f"hash-max-listpack-entries {max_entries} / -value {max_value} below {nfields} / 63"
        try:
            for name in (self.fields.ts, *self.fields.features):
                redis_dump.entry(name)
        except ValueError:
            return "a hash field name would be stored as an integer"
        _, bad = self._listpack_entries(batch)
        good = np.flatnonzero(~bad)
        if not len(good):
            return "no row of the first batch fits a short-string listpack"
        # The {hash tag} puts both scratch keys in one cluster slot (one master, one connection).
        scratch = STATE_KEY_PREFIX[: -len(b"bulk_state:")] + b"bulk_probe:{" + uuid.uuid4().hex.encode() + b"}"
        row = batch.take(good[:1])
        as_hset = replace(row, keys=pa.array([scratch + b":hset:"], pa.binary()))
        as_restore = replace(row, keys=pa.array([scratch + b":restore:"], pa.binary()))
        hset_key, restore_key = scratch + b":hset:" + self.project, scratch + b":restore:" + self.project
        conn = self.nodes.connection(self.nodes.node_of(hset_key))
        try:
            cmds, replies = self.commands(as_hset)
            send_and_check(conn, buffer_view(cmds), replies)
            reference = self.client.dump(hset_key)
            rdb_type, version = redis_dump.dump_header(reference or b"")
            if rdb_type != redis_dump.RDB_TYPE_HASH_LISTPACK:
                return f"the server dumps this hash as RDB type {rdb_type}, not a listpack hash"
            self._restore = (rdb_type, version)
            cmds, _ = self.restore_commands(as_restore)
            replies = send_and_read_lines(conn, buffer_view(cmds), 1)
            if replies != [b"+OK"]:
                return f"RESTORE of the probe row answered {replies[0].decode(errors='replace')}"
            restored = self.client.dump(restore_key)
            ttl_ms = (self.client.pttl(hset_key), self.client.pttl(restore_key))
        except (redis.RedisError, BulkMaterializeError, ValueError) as exc:
            return f"probe failed: {exc}"
        finally:
            self.client.delete(hset_key, restore_key)
            conn.disconnect()
        if restored != reference:
            return "the DUMP of a RESTOREd row differs from the same row written with HSET"
        if (ttl_ms[0] < 0) != (ttl_ms[1] < 0) or abs(ttl_ms[0] - ttl_ms[1]) > 60_000:
            return f"TTL after RESTORE {ttl_ms[1]} ms differs from after HSET+EXPIRE {ttl_ms[0]} ms"
        return ""

    def write(self, batch: Batch) -> None:
        if not self._restore_checked:
            self._restore_checked = True
            self.restore_reason = self._check_restore(batch) if self.use_restore else "disabled"
            if self.restore_reason:
                self._restore = None
            log.info(
                "bulk %s: new keys via %s",
                self.plan.name,
                "RESTORE" if not self.restore_reason else f"HSET ({self.restore_reason})",
            )
        # Mostly existing keys (BUSYKEY) -> HSET straight away, trying RESTORE again every 8th batch.
        use_restore = self._restore is not None and (self._busy_share <= 0.5 or self._hset_batches >= 8)
        self._hset_batches = 0 if use_restore else self._hset_batches + 1
        # One work item holds at most one job per node (a connection's replies are read once, in order), so rows
        # that cannot be restored go in an item of their own, before.
        hsets, restores = [], []
        for node, rows in self.nodes.split(batch.keys, self.project):
            part = batch if rows is None else batch.take(rows)
            if not use_restore:
                hsets.append((node, "hset", *self.commands(part)))
                continue
            cmds, restorable = self.restore_commands(part)
            if len(restorable) < part.n:
                rest = np.setdiff1d(np.arange(part.n), restorable)
                hsets.append((node, "hset", *self.commands(part.take(rest))))
            restores.append((node, "restore", cmds, restorable, part))
        for item in (hsets, restores):
            if item:
                self._worker.put(item)

    def _send(self, jobs: list[tuple]) -> None:
        """Write every node's job, then read each node's replies: the nodes work at the same time."""
        for node, _, cmds, *_ in jobs:
            self.nodes.writer(node)._sock.sendall(buffer_view(cmds))
        restored = busy_rows = total = 0
        for node, kind, _, *rest in jobs:
            conn = self.nodes.writer(node)
            if kind == "hset":
                read_and_check(conn, rest[0])
                continue
            rows, batch = rest
            lines = read_lines(conn, len(rows))
            ok = np.fromiter((line == b"+OK" for line in lines), dtype=bool, count=len(lines))
            busy = np.fromiter((line.startswith(b"-BUSYKEY") for line in lines), dtype=bool, count=len(lines))
            if not (ok | busy).all():
                first = lines[int(np.argmin(ok | busy))]
                raise BulkMaterializeError(f"Redis rejected a bulk RESTORE: {first.decode(errors='replace')}")
            restored += int(ok.sum())
            busy_rows += int(busy.sum())
            total += len(lines)
            if busy.any():  # the key exists (other views' fields, an older write): merge into it with HSET
                cmds, replies = self.commands(batch.take(rows[busy]))
                send_and_check(conn, buffer_view(cmds), replies)
        if total:
            self.rows_restored += restored
            self._busy_share = busy_rows / total

    def touch(self, batch: pa.RecordBatch, plan: ViewPlan) -> np.ndarray:
        """Refresh the TTL of unchanged keys (EXISTS without a TTL); rows whose key is gone come back to be written."""
        keys = entity_keys(batch, plan)
        # With a TTL, EXPIRE refreshes it and answers 0 for a key that is gone; without one, EXISTS just finds those.
        exists = b"*2\r\n$6\r\nEXISTS\r\n"
        sent = []
        for node, rows in self.nodes.split(keys, self.project):
            key_bulks = self._key_bulks(keys if rows is None else keys.take(pa.array(rows)))
            cmds = join(self._expire, key_bulks, self._ttl_bulk) if self.ttl else join(exists, key_bulks)
            self.nodes.probe(node)._sock.sendall(buffer_view(cmds))
            sent.append((node, rows, len(key_bulks)))
        gone = []
        for node, rows, n in sent:
            lines = read_lines(self.nodes.probe(node), n)
            errors = [line for line in lines if line.startswith(b"-")]
            if errors:
                raise BulkMaterializeError(
                    f"Redis rejected a bulk probe: {errors[:1]!r} ({len(errors)} of {n} replies)"
                )
            missing = np.flatnonzero(np.array([line == b":0" for line in lines], dtype=bool))
            gone.append(missing if rows is None else rows[missing])
        return np.sort(np.concatenate(gone)) if gone else np.zeros(0, np.int64)

    def finish(self) -> None:
        worker, self._worker = self._worker, None
        try:
            if worker is not None:
                worker.close()
        finally:
            self.nodes.disconnect()

    def verify_row(self, batch, plan, row, entity_key, values, event_ts, created_ts) -> None:
        # The hash fields were checked against Feast's in `begin`; here the key and the `_ts` value of the row.
        fmt.check_redis_key(batch.keys[row].as_py() + self.project, entity_key, self.config)
        fmt.check_event_timestamp(batch.ts_uniques[batch.ts_indices[row]], event_ts)

    def close(self) -> None:
        self.finish()
        self.nodes.close()
