"""Writing into Feast's SQLite online store (`SqliteOnlineStore` layout), one transaction per batch or per view.

Table `online_format.sqlite_table_name` (`<project>_<view>`), one row per (entity_key, feature_name) with value, value_text, event_ts and created_ts;
rows are written in serialized-key order. Two strategies (`sqlite_strategy`):

* *upsert* (what "auto" does) — Feast's own `ON CONFLICT` statement shape, many entities per statement, one
  transaction per batch, WAL checkpoints on a thread of their own (`sqlite_wal`) so the writer never waits for the
  fsync;
* *rebuild* — the table rebuilt in one transaction from Feast's own DDL; readers keep the old table until the
  commit (see the comment above `_begin_rebuild`).

Measured on 1 M rows (benchmarks/results/materialize.md): the upsert is faster at every share of changed rows on a
table in key order (which is what this writer leaves), because in-place updates of a key-ordered table touch only
table pages while a rebuild rewrites all three B-trees and must checkpoint its whole WAL after the commit; the
rebuild only won on a table in foreign physical order (1.3x at 90 % changed, 300 k rows), which it leaves in key
order.

SQLite has no TTL: after each run (at most once per `cleanup_every`) the entities whose last write is older than
`as_of - settings.online_key_ttl` and that are absent from the current snapshot are deleted (`cleanup`), so
the table tracks the same key set Redis would.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from feast.infra.key_encoding_utils import deserialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.utils import to_naive_utc

from freqcap.adapters.feast import online_format as fmt
from freqcap.adapters.feast.bulk.diff import sql_str
from freqcap.adapters.feast.bulk.encoders import Batch, object_array
from freqcap.adapters.feast.bulk.errors import BulkMaterializeError, UnsupportedOnlineStoreError
from freqcap.adapters.feast.bulk.plan import ViewPlan, source_name
from freqcap.adapters.feast.bulk.reports import BulkState
from freqcap.adapters.feast.bulk.sqlite_wal import Checkpointer
from freqcap.adapters.feast.bulk.target import Target, Worker
from freqcap.config import Settings

log = logging.getLogger(__name__)

STATE_TABLE = "freqcap_bulk_state"


def _feast_sqlite() -> Any:
    """Feast's SQLite online store module (its quoting, database path and sqlite3 adapters)."""
    # why here: importing it registers process-wide sqlite3 datetime adapters; only SQLite runs should get them.
    import feast.infra.online_stores.sqlite as feast_sqlite

    return feast_sqlite


def _quote_id(identifier: str) -> str:
    return _feast_sqlite()._quote_id(identifier)


class SqliteTarget(Target):
    kind = "sqlite"

    def __init__(self, store: Any, settings: Settings):
        self.store = store
        self.config = store.config
        online = self.config.online_store
        if getattr(online, "vector_enabled", False) or getattr(online, "enable_openai_compatible_store", False):
            raise UnsupportedOnlineStoreError("SQLite with vector/value_num columns: use store.materialize")
        self.path = _feast_sqlite().SqliteOnlineStore._get_db_path(self.config)
        self.ttl = settings.online_key_ttl
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        # WAL: readers (serving) are never blocked by the bulk writer's long transactions; persistent per database.
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA cache_size=-65536")  # 64 MB page cache
        # Python's bundled SQLite is often built with SECURE_DELETE: every freed page is overwritten with zeros and
        # written again (a rebuild's DROP of the old table took 5.7 s instead of 0.3 s per 200 k entity rows). FAST
        # still zeroes deleted content on pages that are written anyway; freed pages keep stale bytes until reused.
        self.conn.execute("PRAGMA secure_delete=FAST")
        # After a rebuild the WAL holds the whole new table; shrink it back once checkpointed.
        self.conn.execute("PRAGMA journal_size_limit=67108864")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (project TEXT, view TEXT, state TEXT, PRIMARY KEY(project, view))"
        )
        self._worker: Worker | None = None
        self.strategy = "upsert"
        self._rebuilding = False
        self._checkpointer: Checkpointer | None = None

    # -- layout ------------------------------------------------------------------------------------------------
    def store_name(self, view: Any) -> str:
        return fmt.sqlite_table_name(self.config, view)

    # -- state -------------------------------------------------------------------------------------------------
    def read_state(self, view: str) -> BulkState | None:
        row = self.conn.execute(
            f"SELECT state FROM {STATE_TABLE} WHERE project = ? AND view = ?", (self.config.project, view)
        ).fetchone()
        return BulkState(**json.loads(row[0])) if row else None

    def write_state(self, view: str, state: BulkState) -> None:
        self.conn.execute(
            f"INSERT OR REPLACE INTO {STATE_TABLE} VALUES (?, ?, ?)",
            (self.config.project, view, json.dumps(asdict(state))),
        )

    def clear_state(self, view: str) -> None:
        self.conn.execute(f"DELETE FROM {STATE_TABLE} WHERE project = ? AND view = ?", (self.config.project, view))

    # -- writing -----------------------------------------------------------------------------------------------
    def set_strategy(self, strategy: str) -> None:
        if strategy not in ("upsert", "rebuild"):
            raise ValueError(strategy)
        self.strategy = strategy

    def begin(self, plan: ViewPlan, as_of: datetime) -> None:
        self.plan = plan
        table = _quote_id(plan.store_name)
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (plan.store_name,)
        ).fetchone()
        if not exists:
            raise BulkMaterializeError(f"SQLite table {plan.store_name} missing: apply the Feast repo first")
        nfeat = len(plan.features)
        self.per_entity = 1 + 2 * nfeat + 2  # key, (value, text) per feature, event_ts, created_ts
        self.entities_per_statement = max(1, min(64, 32000 // self.per_entity))
        self._sql_cache: dict[int, str] = {}
        self.table = table
        names = [n.replace("'", "''") for n in plan.feature_names]
        self._names = names
        if self.strategy == "rebuild":
            self._begin_rebuild(plan)
            self._worker = Worker(self._execute_rebuild)
        else:
            self._checkpointer = Checkpointer(self.path)
            self._autocheckpoint = self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            self.conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it, overlapped
            self._worker = Worker(self._execute)

    def _sql(self, k: int) -> str:
        """An upsert of k entities (k * features rows) in one statement, same effect as Feast's per-row upsert."""
        sql = self._sql_cache.get(k)
        if sql is None:
            rows = []
            per = self.per_entity
            # Rows of one entity in feature-name order: with entities in key order, every row appends to the
            # PRIMARY KEY(entity_key, feature_name) index of a rebuilt table.
            order = sorted(range(len(self._names)), key=lambda j: self.plan.feature_names[j])
            for e in range(k):
                base = e * per
                ts, created = base + per - 1, base + per
                for j in order:
                    name = self._names[j]
                    rows.append(f"(?{base + 1}, '{name}', ?{base + 2 + 2 * j}, ?{base + 3 + 2 * j}, ?{ts}, ?{created})")
            cols = "(entity_key, feature_name, value, value_text, event_ts, created_ts)"
            if self.strategy == "rebuild":
                # A fresh table: a plain insert (OR REPLACE: a key twice in the snapshot ends as the upsert ends).
                sql = f"INSERT OR REPLACE INTO {self.table} {cols} VALUES {', '.join(rows)}"
            else:
                sql = (
                    f"INSERT INTO {self.table} {cols} "
                    f"SELECT column1, column2, column3, column4, column5, column6 FROM (VALUES {', '.join(rows)}) "
                    "WHERE true ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
                    "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts"
                )
            self._sql_cache[k] = sql
        return sql

    @staticmethod
    def _event_ts(dt: datetime) -> Any:
        """What Feast binds for event_ts: the naive-UTC datetime through the sqlite3 adapter Feast registers."""
        return sqlite3.adapt(to_naive_utc(dt), sqlite3.PrepareProtocol)

    def write(self, batch: Batch) -> None:
        n, per = batch.n, self.per_entity
        params = np.empty((n, per), dtype=object)
        params[:, 0] = batch.keys.to_numpy(zero_copy_only=False)
        for j, col in enumerate(batch.columns):
            params[:, 1 + 2 * j] = col.objects()
            params[:, 2 + 2 * j] = col.texts()
        params[:, per - 2] = object_array([self._event_ts(t) for t in batch.ts_uniques])[batch.ts_indices]
        if batch.created is None:
            params[:, per - 1] = None
        else:
            params[:, per - 1] = [None if c is None else self._event_ts(c) for c in batch.created]
        k = self.entities_per_statement
        whole = (n // k) * k
        groups = []
        if whole:
            groups.append((k, params[:whole].reshape(whole // k, k * per).tolist()))
        if n > whole:
            groups.append((n - whole, [params[whole:].reshape(-1).tolist()]))
        if self.strategy == "rebuild":
            self._worker.put((groups, params[n - 1, 0]))  # rows are in key order: the batch's last key
        else:
            self._worker.put(groups)

    def _execute(self, groups: list[tuple[int, list[list[Any]]]]) -> None:
        self._checkpointer.bound_wal(self.conn)
        self.conn.execute("BEGIN")
        try:
            for k, rows in groups:
                self.conn.executemany(self._sql(k), rows)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self._checkpointer.kick()

    # -- rebuild: the whole table in one transaction ------------------------------------------------------------
    #
    # BEGIN IMMEDIATE; the live table is renamed aside (SQLite rewrites its DDL; its PRIMARY KEY index follows it);
    # its explicit indexes are dropped; Feast's own CREATE TABLE / CREATE INDEX statements, as stored in
    # sqlite_master, are executed verbatim (so the schema is Feast's, whatever Feast version created it); indexes
    # led by entity_key are created before the load (rows arrive in key order: they grow by appends; measured
    # 1.0 s per 200 k entity rows during the load vs 2.3 s for CREATE INDEX after it), others after it. The
    # snapshot's rows to write are inserted in (entity_key, feature_name) order; after each batch, the old table's
    # rows in that batch's key range that were not overwritten — entities the load did not write (unchanged rows of
    # an incremental run, with their stored event_ts; keys absent from the snapshot) and features outside the
    # plan — are copied (INSERT OR IGNORE: a snapshot row always wins); the old table is dropped; COMMIT; one
    # checkpoint. Readers (WAL) see the old table until the commit and the new one after it; an error anywhere
    # rolls everything back. The write lock is held for the whole rebuild: another writer of the same database
    # (e.g. a Feast push into another view) waits, and fails after its busy timeout (Feast: 5 s).

    def _begin_rebuild(self, plan: ViewPlan) -> None:
        name = plan.store_name
        self._old = _quote_id(f"{name}__freqcap_old")
        # No automatic checkpoint at COMMIT (it would run inside the commit); one explicit checkpoint after it.
        self._autocheckpoint = self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.conn.execute("BEGIN IMMEDIATE")
        self._rebuilding = True
        try:
            ddl = self.conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()[0]
            indexes = self.conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL "
                "ORDER BY name",
                (name,),
            ).fetchall()
            early, self._late_indexes = [], []
            for index, sql in indexes:
                info = self.conn.execute(f"PRAGMA index_info({_quote_id(index)})").fetchall()
                (early if info and info[0][2] == "entity_key" else self._late_indexes).append(sql)
            # Every column of the table as it is (Feast may add some), for the copy of kept rows.
            columns = [r[1] for r in self.conn.execute(f"PRAGMA table_info({self.table})").fetchall()]
            self._cols = ", ".join(_quote_id(c) for c in columns)
            self._copied_upto: bytes | None = None
            self._rows_copied = 0
            self.conn.execute(f"ALTER TABLE {self.table} RENAME TO {self._old}")
            for index, _ in indexes:
                self.conn.execute(f"DROP INDEX {_quote_id(index)}")
            self.conn.execute(ddl)
            for sql in early:
                self.conn.execute(sql)
        except BaseException:
            self._rollback()
            raise

    def _execute_rebuild(self, item: tuple[list[tuple[int, list[list[Any]]]], bytes]) -> None:
        groups, last = item
        for k, rows in groups:
            self.conn.executemany(self._sql(k), rows)
        self._copy_old(last)

    def _copy_old(self, upto: bytes | None) -> None:
        """Copy the old table's rows with keys in (previous batch's last key, `upto`] that the load did not write.

        Entities the load did not write keep all their rows (an incremental run's unchanged rows with their stored
        event_ts; keys absent from the snapshot); entities it wrote keep their features outside the plan (OR IGNORE:
        a snapshot row always wins). Done right after each batch, so these inserts land on the pages just written
        (in cache) instead of all over the finished table. Correct whatever the order: the ranges cover every key.
        """
        cond, args = [], []
        if self._copied_upto is not None:
            cond.append("entity_key > ?")
            args.append(self._copied_upto)
        if upto is not None:
            cond.append("entity_key <= ?")
            args.append(upto)
        where = f" WHERE {' AND '.join(cond)}" if cond else ""
        cur = self.conn.execute(
            f"INSERT OR IGNORE INTO {self.table} ({self._cols}) SELECT {self._cols} FROM {self._old}{where}", args
        )
        self._rows_copied += max(cur.rowcount, 0)
        self._copied_upto = upto

    def _finish_rebuild(self) -> None:
        """Copy the old rows after the last batch, drop the old table, build late indexes, commit, checkpoint."""
        started = time.perf_counter()
        try:
            self._copy_old(None)
            copy_s = time.perf_counter() - started
            self.conn.execute(f"DROP TABLE {self._old}")
            for sql in self._late_indexes:
                self.conn.execute(sql)
            drop_s = time.perf_counter() - started - copy_s
            self.conn.execute("COMMIT")
            self._rebuilding = False
        except BaseException:
            self._rollback()
            raise
        finally:
            self.conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint}")
        commit_s = time.perf_counter() - started - copy_s - drop_s
        # The WAL now holds the whole new table: copy it into the database now, without waiting for readers.
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        checkpoint_s = time.perf_counter() - started - copy_s - drop_s - commit_s
        log.info(
            "bulk %s: rebuild copied %d old rows not overwritten (tail %.2fs), drop+indexes %.2fs, commit %.2fs, "
            "checkpoint %.2fs",
            self.plan.name,
            self._rows_copied,
            copy_s,
            drop_s,
            commit_s,
            checkpoint_s,
        )

    def _rollback(self) -> None:
        if self._rebuilding:
            self._rebuilding = False
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint}")

    def finish(self) -> None:
        worker, self._worker = self._worker, None
        try:
            if worker is not None:
                try:
                    worker.close()
                except BaseException:
                    self._rollback()
                    raise
            if self._rebuilding:
                self._finish_rebuild()
        finally:
            self._stop_checkpointer()

    def abort(self) -> None:
        worker, self._worker = self._worker, None
        try:
            if worker is not None:
                worker.close()
        finally:
            try:
                self._rollback()
            finally:
                self._stop_checkpointer()

    def _stop_checkpointer(self) -> None:
        """Upsert runs: wait for the checkpointer, checkpoint what is left, back to automatic checkpoints."""
        ckpt, self._checkpointer = self._checkpointer, None
        if ckpt is None:
            return
        try:
            ckpt.close()
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            self.conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint}")

    def verify_row(self, batch, plan, row, entity_key, values, event_ts, created_ts) -> None:
        for (name, _), col in zip(plan.features, batch.columns, strict=True):
            if col.texts()[row] != extract_text_and_num(values[name], False)[0]:
                raise fmt.FormatMismatch(f"value_text of {name} differs from Feast's")
        if self._event_ts(batch.ts_uniques[batch.ts_indices[row]]) != self._event_ts(event_ts):
            raise fmt.FormatMismatch("event_ts differs from Feast's")
        mine = None if batch.created is None else batch.created[row]
        if (None if mine is None else self._event_ts(mine)) != (
            None if created_ts is None else self._event_ts(created_ts)
        ):
            raise fmt.FormatMismatch("created_ts differs from Feast's")

    def cleanup(self, plan: ViewPlan, snapshot: Path, as_of: datetime, con: duckdb.DuckDBPyConnection) -> int:
        """Delete entities last written before as_of - TTL that the current snapshot no longer has."""
        if self.ttl is None:
            return 0
        threshold = self._event_ts(as_of - self.ttl)
        stale = self.conn.execute(
            f"SELECT entity_key FROM {self.table} WHERE feature_name = ? AND event_ts < ?",
            (plan.feature_names[0], threshold),
        ).fetchall()
        if not stale:
            return 0
        version = self.config.entity_key_serialization_version
        keys = [r[0] for r in stale]
        decoded = [deserialize_entity_key(k, entity_key_serialization_version=version) for k in keys]
        columns: dict[str, list[Any]] = {name: [] for name in plan.key_columns}
        for ek in decoded:
            by_name = {k: v.string_val for k, v in zip(ek.join_keys, ek.entity_values, strict=True)}
            for name in plan.key_columns:
                columns[name].append(by_name.get(name))
        candidates = pa.table({"__row": pa.array(range(len(keys)), pa.int64()), **columns})
        con.register("__candidates", candidates)
        try:
            on = " AND ".join(f'c."{k}" = s."{source_name(plan, k)}"' for k in plan.key_columns)
            rows = con.sql(
                f"SELECT c.__row FROM __candidates c ANTI JOIN read_parquet({sql_str(str(snapshot))}) s ON {on}"
            ).fetchall()
        finally:
            con.unregister("__candidates")
        gone = [(keys[r[0]],) for r in rows]
        if gone:
            self.conn.execute("BEGIN")
            self.conn.executemany(f"DELETE FROM {self.table} WHERE entity_key = ?", gone)
            self.conn.execute("COMMIT")
        return len(gone)

    def close(self) -> None:
        try:
            self.abort()  # normally a no-op: finish() ran; never commit a rebuild from here
        finally:
            self.conn.close()
