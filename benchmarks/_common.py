"""Helpers shared by the benchmark scripts: subprocess isolation, medians, Markdown tables."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work"


def run_isolated(script: Path, *args: str) -> dict:
    """Run `script --one ARGS` in a fresh interpreter; it prints one JSON line with its own numbers."""
    out = subprocess.run([sys.executable, str(script), "--one", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that across fork+exec, so a
    child started by a big parent reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, title: str, body: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    header = (
        f"# {title}\n\nRecorded {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}.\n\n"
    )
    path = RESULTS / f"{name}.md"
    path.write_text(header + body + "\n")
    print(header + body)
    return path


# The capping policy the serving benchmarks decide with (bench_decide, bench_http).
BENCH_POLICY = {
    "version": "bench-1",  # bench_decide's; bench_http overrides it
    "created_at": "2026-10-01T00:00:00Z",
    "penalty": {"onset": 1.0, "at_cap": 0.5, "floor": 0.05},
    "defaults": [
        {"level": "advertiser", "caps": [{"window": "24h", "max": 8}, {"window": "28d", "max": 40}]},
        {"level": "campaign", "caps": [{"window": "24h", "max": 4}, {"window": "7d", "max": 12}]},
        {"level": "ad", "caps": [{"window": "1h", "max": 1}, {"window": "7d", "max": 4}], "min_gap": "30m"},
    ],
    "rules": [
        {"match": {"audience": "high_intent"}, "level": "campaign", "caps": [{"window": "24h", "max": 6}]},
        {
            "match": {"signal_tier": "converter"},
            "level": "ad",
            "caps": [{"window": "28d", "max": 3}],
            "mode": "hard",
            "stop_after_conversion": True,
        },
    ],
}


def free_port() -> int:
    """A free loopback port (for a private redis-server the benchmark starts and stops itself)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def key_level(key: bytes) -> str:
    """The feature view level a Feast online key belongs to (`user` when it names no entity column)."""
    for level in ("advertiser", "campaign", "ad"):
        if f"{level}_id".encode() in key:
            return level
    return "user"
