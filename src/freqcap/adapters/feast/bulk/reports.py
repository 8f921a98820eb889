"""What a bulk run reports (per view and in total) and what it records in the online store for the next run.

`BulkState` is the "bulk state" of a view: which snapshot the online store holds since the view's last complete
write, so the next run can diff against it (`diff`) instead of rewriting everything. Each target stores it beside
Feast's own data (a Redis key, a SQLite table).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ViewReport:
    """What one view's bulk write did. `rows_read` counts snapshot rows (tombstones included)."""

    view: str
    snapshot: str
    mode: str  # "full" or "incremental"
    reason: str  # why this mode
    rows_read: int
    rows_written: int
    rows_unchanged: int
    rows_repaired: int  # unchanged rows found missing online (Redis EXPIRE answered 0) and rewritten
    rows_deleted: int  # SQLite cleanup: stale entities removed
    batches: int
    seconds: float
    rows_restored: int = 0  # Redis: rows written as a whole new hash with RESTORE (the rest with HSET)
    # How the rows reached the store: "upsert" (in place; Redis always) or "rebuild" (SQLite: the table rebuilt in
    # one transaction, see SqliteTarget), and the share of snapshot rows written (SQLite "auto" decides on it).
    strategy: str = "upsert"
    write_share: float = 1.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class BulkReport:
    """The whole run: per-view reports plus totals. `rows_per_second` is snapshot rows processed per second."""

    online_store: str
    project: str
    as_of: str
    views: tuple[ViewReport, ...]
    seconds: float

    @property
    def rows_read(self) -> int:
        return sum(v.rows_read for v in self.views)

    @property
    def rows_written(self) -> int:
        return sum(v.rows_written for v in self.views)

    @property
    def rows_skipped(self) -> int:
        return sum(v.rows_unchanged for v in self.views)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "online_store": self.online_store,
            "project": self.project,
            "as_of": self.as_of,
            "seconds": round(self.seconds, 3),
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_skipped": self.rows_skipped,
            "rows_per_second": round(self.rows_per_second, 1),
            "views": [
                {**asdict(v), "seconds": round(v.seconds, 3), "rows_per_second": round(v.rows_per_second, 1)}
                for v in self.views
            ],
        }


@dataclass(frozen=True)
class BulkState:
    """What the online store holds for one view, as recorded after its last complete bulk write."""

    fingerprint: str
    as_of: str
    snapshot: str
    snapshot_id: str  # size, mtime and inode of the snapshot file when it was written (a rerun replaces the file)
    rows: int
    written_at: str
    last_cleanup: str | None = None  # as-of time of the last SQLite cleanup

    @property
    def as_of_dt(self) -> datetime:
        return datetime.fromisoformat(self.as_of)
