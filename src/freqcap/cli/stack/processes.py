"""Processes the stack started, tracked by PID files so that `down` stops exactly those and nothing else.

Each process runs in a session of its own (its children — Celery's pool, uvicorn's workers — share its process
group), logs to `<logs>/<name>.log` and is recorded as `<pids>/<name>.pid` holding the PID and the process's start
time: a PID the kernel reused for another program is not ours and is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.rsplit(")", 1)[1].split()


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def alive(pid: int, started: str | None = None) -> bool:
    """True while `pid` runs (a zombie — exited, not yet reaped by its parent — is not running) and, when
    `started` is given, is still the process that was recorded."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return started is None or fields[19] == started


class ProcessTable:
    """The PID files of one stack directory."""

    def __init__(self, pid_dir: Path, log_dir: Path):
        self.pid_dir = pid_dir
        self.log_dir = log_dir

    def _file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.pid"

    def record(self, name: str, pid: int) -> None:
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self._file(name).write_text(f"{pid} {start_time(pid) or ''}\n")

    def pid(self, name: str) -> int | None:
        """The recorded PID of `name` if that process still runs, else None."""
        try:
            parts = self._file(name).read_text().split()
        except FileNotFoundError:
            return None
        pid, started = int(parts[0]), (parts[1] if len(parts) > 1 else None)
        return pid if alive(pid, started) else None

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.pid_dir.glob("*.pid")) if self.pid_dir.exists() else []

    def start(self, name: str, argv: list[str] | tuple[str, ...], env: dict[str, str]) -> int:
        """Start `argv` in a new session, output appended to `<logs>/<name>.log`; returns its PID."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.record(name, proc.pid)
        return proc.pid

    def stop(self, name: str, timeout: float = 30.0) -> bool:
        """SIGTERM the process group of `name`, SIGKILL it after `timeout`; True when something was stopped."""
        pid = self.pid(name)
        self._file(name).unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pid):
            _reap(pid)
            time.sleep(0.2)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _reap(pid)
        return True


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process of process group `pgid` runs."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = raw.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _reap(pid: int) -> None:
    """Collect `pid`'s exit status when it is our child (a test's stack), so it leaves no zombie behind."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
