"""WAL checkpoints for the SQLite upsert path on a thread and connection of their own, so the writer never waits
for the disk.

Upsert runs commit once per batch; SQLite's automatic checkpoint would run inside each COMMIT on the writer's
thread (copy the batch's pages into the database and fsync it: ~11 of 43 s of a 1 M-row write here). With a
`Checkpointer` the writer only signals after a commit and the copy/fsync overlaps its next batch.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)


class Checkpointer:
    """Passive WAL checkpoints on a background thread, kicked after each commit.

    The WAL cannot restart while frames are left to copy, so once it holds more than `max_wal_frames` the writer
    waits for one complete checkpoint before its next transaction (the WAL then starts over: bounded by about that
    size plus a batch).
    """

    def __init__(self, path: str, max_wal_frames: int = 262144):
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.max_wal_frames = max_wal_frames
        self.wal_frames = 0
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="freqcap-bulk-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stop:
                return
            try:
                _, frames, _ = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.wal_frames = max(frames, 0)
            except sqlite3.Error as exc:  # not fatal: the writer's final checkpoint retries
                log.warning("bulk checkpoint failed: %s", exc)
            finally:
                if not self._wanted.is_set():
                    self._idle.set()

    def kick(self) -> None:
        self._idle.clear()
        self._wanted.set()

    def bound_wal(self, writer: sqlite3.Connection) -> None:
        """Before a write transaction: if the WAL is too long, let it be checkpointed completely (it restarts)."""
        if self.wal_frames > self.max_wal_frames:
            self._idle.wait()
            writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self.wal_frames = 0

    def close(self) -> None:
        self._idle.wait()
        self._stop = True
        self._wanted.set()
        self._thread.join()
        self.conn.close()
