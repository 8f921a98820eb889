"""One view's bulk write: choose full or incremental, stream the snapshot in batches, encode, guard, write, record.

Per view: read the recorded bulk state; trust it only if it is older than this snapshot's as-of, has the same
fingerprint (`plan`), its snapshot file is unchanged and a sample reads back the same through Feast (`diff`); then
diff against it, else write everything. Unchanged rows keep their stored values *and their stored event timestamp*
(the as-of time at which those values were last written) and go to the target's `touch`; the snapshot's as-of is
the view's watermark (`online_state`). Every batch is encoded once (`encoders`), checked against Feast
(`verify`) and written by the target. The state is cleared first and written last, so a run that dies midway
leaves none and the next run rewrites the view in full.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from freqcap.adapters.feast.bulk.diff import (
    UNCHANGED,
    file_id,
    previous_snapshot_matches_online,
    record_batches,
    source_query,
)
from freqcap.adapters.feast.bulk.encoders import Encoders, encode_batch
from freqcap.adapters.feast.bulk.errors import StaleSnapshotError
from freqcap.adapters.feast.bulk.plan import ViewPlan
from freqcap.adapters.feast.bulk.reports import BulkState, ViewReport
from freqcap.adapters.feast.bulk.target import Target
from freqcap.adapters.feast.bulk.verify import verify
from freqcap.config import Settings

log = logging.getLogger(__name__)

# SQLite "auto": rebuild the view's table instead of upserting in place when at least this share of the snapshot's
# rows must be written; None: never. Measured (benchmarks/results/materialize.md): on a table in key order —
# what this writer always leaves, since it writes in key order — the in-place upsert is faster at every share, so
# "auto" upserts. A rebuild paid off only on a table in foreign physical order (e.g. written by Feast's own
# materialize; 1.3x at 90 % changed, 300 k rows) and leaves it in key order: ask for it with
# sqlite_strategy="rebuild" (or a rebuild_share).
REBUILD_SHARE: float | None = None


def materialize_view(
    store: Any,
    settings: Settings,
    target: Target,
    plan: ViewPlan,
    snapshot: Path,
    as_of: datetime,
    *,
    incremental: bool,
    batch_rows: int,
    verify_rows: int,
    cleanup: bool,
    cleanup_every: timedelta,
    duckdb_memory_limit: str,
    sqlite_strategy: str = "auto",
    rebuild_share: float | None = REBUILD_SHARE,
    progress: Callable[[str, int], None] | None = None,
) -> ViewReport:
    started = time.perf_counter()
    if not snapshot.exists():
        raise FileNotFoundError(snapshot)
    con = duckdb.connect()
    con.execute(f"SET threads = {max(1, settings.features.threads)}")
    con.execute(f"SET memory_limit = '{duckdb_memory_limit}'")
    con.execute("SET preserve_insertion_order = false")

    state = target.read_state(plan.name)
    previous: Path | None = None
    mode, reason = "full", "no recorded state"
    if state is not None:
        if state.as_of_dt > as_of:
            con.close()
            raise StaleSnapshotError(f"{plan.name}: online store holds {state.as_of}, newer than {as_of.isoformat()}")
        if not incremental:
            reason = "incremental disabled"
        elif state.fingerprint != plan.fingerprint:
            reason = "layout or schema changed since the recorded state"
        elif not Path(state.snapshot).exists():
            reason = f"recorded snapshot {state.snapshot} is gone"
        elif file_id(Path(state.snapshot)) != state.snapshot_id:
            reason = f"recorded snapshot {state.snapshot} was rewritten since"
        else:
            ok, why = previous_snapshot_matches_online(target, plan, Path(state.snapshot), con)
            if ok:
                previous, mode, reason = Path(state.snapshot), "incremental", f"diff against {state.as_of}"
            else:
                reason = why
    share = 1.0
    strategy = "upsert"
    if target.kind == "sqlite":
        strategy = sqlite_strategy
        if previous is not None and strategy == "auto" and rebuild_share is not None:
            # One exact count of the rows to write (the same diff the writer streams below, unordered).
            total, changed = con.sql(
                f"SELECT count(*), count(*) FILTER (WHERE NOT {UNCHANGED}) "
                f"FROM ({source_query(plan, snapshot, previous, ordered=False)})"
            ).fetchall()[0]
            share = changed / total if total else 0.0
        if strategy == "auto":
            strategy = "rebuild" if rebuild_share is not None and share >= rebuild_share else "upsert"
    log.info("bulk %s: %s (%s), %s", plan.name, mode, reason, strategy)

    snapshot_id = file_id(snapshot)
    target.clear_state(plan.name)  # a run that dies midway leaves no state: the next run rewrites in full
    enc = Encoders()
    rng = np.random.default_rng(0)
    rows_read = rows_written = rows_unchanged = rows_repaired = batches = 0
    target.set_strategy(strategy)
    target.begin(plan, as_of)
    try:
        query = source_query(plan, snapshot, previous, ordered=target.kind == "sqlite")
        reader = con.sql(query).to_arrow_reader(batch_rows)
        for batch in record_batches(reader, batch_rows):
            rows_read += batch.num_rows
            batches += 1
            if previous is not None:
                same = batch.column(UNCHANGED).to_numpy(zero_copy_only=False).astype(bool)
                batch = batch.drop_columns([UNCHANGED])
                if same.any():
                    unchanged = batch.filter(pa.array(same))
                    missing = target.touch(unchanged, plan)
                    rows_unchanged += unchanged.num_rows - len(missing)
                    rows_repaired += len(missing)
                    changed_mask = ~same
                    if len(missing):
                        changed_mask[np.flatnonzero(same)[missing]] = True
                    batch = batch.filter(pa.array(changed_mask))
            if batch.num_rows == 0:
                continue
            encoded = encode_batch(batch, plan, enc)
            if verify_rows > 0:
                verify(encoded, plan, target, verify_rows, rng)
            target.write(encoded)
            rows_written += batch.num_rows
            if progress:
                progress(plan.name, rows_read)
        target.finish()
        rows_restored = target.rows_restored
        last_cleanup = state.last_cleanup if state else None
        deleted = 0
        if cleanup and (last_cleanup is None or as_of - datetime.fromisoformat(last_cleanup) >= cleanup_every):
            deleted = target.cleanup(plan, snapshot, as_of, con)
            last_cleanup = as_of.isoformat()
        now = datetime.now(UTC).isoformat()
        target.write_state(
            plan.name,
            BulkState(
                fingerprint=plan.fingerprint,
                as_of=as_of.isoformat(),
                snapshot=str(snapshot),
                snapshot_id=snapshot_id,
                rows=rows_read,
                written_at=now,
                last_cleanup=last_cleanup,
            ),
        )
    except BaseException:
        try:
            target.abort()
        except BaseException as exc:  # the original error matters more
            log.warning("bulk %s: writer cleanup failed: %s", plan.name, exc)
        raise
    finally:
        con.close()
    seconds = time.perf_counter() - started
    log.info(
        "bulk %s (%s): %d rows read, %d written (%d as new hashes), %d unchanged, %d repaired, %d deleted in %.2fs",
        plan.name,
        strategy,
        rows_read,
        rows_written,
        rows_restored,
        rows_unchanged,
        rows_repaired,
        deleted,
        seconds,
    )
    return ViewReport(
        view=plan.name,
        snapshot=str(snapshot),
        mode=mode,
        reason=reason,
        rows_read=rows_read,
        rows_written=rows_written,
        rows_unchanged=rows_unchanged,
        rows_repaired=rows_repaired,
        rows_deleted=deleted,
        batches=batches,
        seconds=seconds,
        rows_restored=rows_restored,
        strategy=strategy,
        write_share=round(rows_written / rows_read, 4) if rows_read else 0.0,
    )
