"""Publishing feature builds into the offline store as timestamped snapshots, with tombstones.

Feature tables are sparse: a pair with no event in its longest window has no row. Feast would then keep
serving that pair's last non-zero row (online) and pick it in point-in-time joins, so counts of a pair that
went quiet would never return to zero. Each snapshot therefore also carries a zero row ("tombstone") for every
key that was active in the previous snapshot and is absent from this one; a later snapshot does not repeat it.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from freqcap.domain.features import COUNT_PREFIXES, USER_TABLE, FeatureBuild

log = logging.getLogger(__name__)
_NAME = re.compile(r"^snapshot_(\d{8}T\d{6}Z)\.parquet$")
_FMT = "%Y%m%dT%H%M%SZ"


def snapshot_path(root: Path, table: str, as_of: datetime) -> Path:
    return root / table / f"snapshot_{as_of.astimezone(UTC).strftime(_FMT)}.parquet"


def list_snapshots(root: Path, table: str) -> list[tuple[datetime, Path]]:
    """Snapshots of a table, oldest first."""
    found = []
    for path in (root / table).glob("snapshot_*.parquet"):
        match = _NAME.match(path.name)
        if match:
            found.append((datetime.strptime(match.group(1), _FMT).replace(tzinfo=UTC), path))
    return sorted(found)


def _key_columns(table: str, columns: list[str]) -> list[str]:
    return ["user_id"] if table == USER_TABLE else ["user_id", columns[1]]


def _tombstone_select(table: str, columns: list[str], as_of_us: int) -> tuple[str, str]:
    """(SELECT list for a zero row built from the previous row `p`, the `p` was-active predicate)."""
    select: list[str] = []
    activity: list[str] = []
    for col in columns:
        if col in ("user_id", "event_timestamp") or (table != USER_TABLE and col == columns[1]):
            select.append(
                f"p.{col}" if col != "event_timestamp" else f"make_timestamptz({as_of_us}) AS event_timestamp"
            )
        elif col == "audience":
            select.append("p.audience")
        elif col == "signal_tier":
            select.append("'impression_only' AS signal_tier")
        elif col == "last_imp_ts":
            select.append("NULL::TIMESTAMPTZ AS last_imp_ts")
        elif col == "imp_decayed":
            select.append("0.0::DOUBLE AS imp_decayed")
        else:
            select.append(f"0::BIGINT AS {col}")
            if col.split("_")[0] in COUNT_PREFIXES.values():
                activity.append(f"p.{col}")
    return ", ".join(select), " + ".join(activity) + " > 0"


def publish_snapshot(build: FeatureBuild, root: Path) -> dict[str, Path]:
    """Copy each table of `build` to `root/<table>/snapshot_<as_of>.parquet`, adding tombstones.

    Idempotent for a given as-of time; the previous snapshot is the newest one strictly before `as_of`,
    so backfills in any order stay correct as long as each as-of is published once after its predecessor.
    """
    as_of_us = int(build.as_of.timestamp() * 1_000_000)
    written: dict[str, Path] = {}
    con = duckdb.connect()
    try:
        for table, current in build.paths.items():
            target = snapshot_path(root, table, build.as_of)
            target.parent.mkdir(parents=True, exist_ok=True)
            cur = f"read_parquet('{current}')"
            columns = [r[0] for r in con.sql(f"DESCRIBE SELECT * FROM {cur}").fetchall()]
            earlier = [p for ts, p in list_snapshots(root, table) if ts < build.as_of]
            query = f"SELECT * FROM {cur}"
            tombstones = 0
            if earlier:
                keys = _key_columns(table, columns)
                select, active = _tombstone_select(table, columns, as_of_us)
                stones = (
                    f"SELECT {select} FROM read_parquet('{earlier[-1]}') p "
                    f"ANTI JOIN {cur} c USING ({', '.join(keys)}) WHERE {active}"
                )
                tombstones = con.sql(f"SELECT count(*) FROM ({stones})").fetchall()[0][0]
                query = f"{query} UNION ALL BY NAME {stones}"
            tmp = target.with_suffix(".tmp")
            con.execute(f"COPY ({query}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)")
            tmp.replace(target)  # atomic: readers never see a half-written snapshot
            written[table] = target
            log.info("snapshot %s: %s (+%d tombstones)", table, target.name, tombstones)
    finally:
        con.close()
    return written


def prune_snapshots(root: Path, cutoff: datetime, dry_run: bool = False) -> int:
    """Remove the offline snapshots stamped before `cutoff`, every table's newest excepted (the next publish
    computes its tombstones against it, and point-in-time joins after a pause still find a value). Returns the
    number of files."""
    removed = 0
    tables = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
    for table in tables:
        for as_of, path in list_snapshots(root, table)[:-1]:
            if as_of < cutoff:
                if not dry_run:
                    path.unlink()
                removed += 1
    if removed:
        log.info(
            "%s %d offline snapshots older than %s",
            "would remove" if dry_run else "removed",
            removed,
            cutoff.isoformat(),
        )
    return removed
