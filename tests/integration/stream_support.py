"""Shared pieces of the streaming integration tests: settings with private keys, events, brute-force counts."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from freqcap.config import load_settings


@contextmanager
def heartbeating(worker) -> Iterator[Callable[[], None]]:
    """`worker` running (reading, heartbeating) in a thread for the block; yields `stop()`, which stops and joins it
    (tests that watch a stream turn stale stop it only once they have seen it fresh: a worker stopped before a slow
    start-up on a loaded box is already, rightly, stale)."""
    live = threading.Thread(target=worker.run, daemon=True)
    live.start()

    def stop() -> None:
        worker.stop()
        live.join(timeout=30)
        assert not live.is_alive(), "the worker did not stop within 30 s"

    try:
        yield stop
    finally:
        worker.stop()
        live.join(timeout=30)


def stream_settings(tmp_path, redis_url: str, online_kind: str = "redis", **stream: str):
    """Redis online store (`online_kind`: redis or redis_cluster) + a stream with keys of its own (tests share one
    Redis)."""
    tag = uuid.uuid4().hex[:10]
    env = {
        "FREQCAP__DATA_DIR": str(tmp_path),
        "FREQCAP__FEAST__ONLINE__KIND": online_kind,
        "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": redis_url,
        "FREQCAP__FEAST__PROJECT": f"t{tag}",
        "FREQCAP__STREAM__ENABLED": "true",
        "FREQCAP__STREAM__REDIS_URL": redis_url,
        "FREQCAP__STREAM__STREAM_KEY": f"t{tag}:events",
        "FREQCAP__STREAM__DEAD_LETTER_KEY": f"t{tag}:dead",
        "FREQCAP__STREAM__STATE_PREFIX": f"t{tag}:stream",
        "FREQCAP__STREAM__GROUP": "g",
    }
    env.update({f"FREQCAP__STREAM__{k.upper()}": v for k, v in stream.items()})
    return load_settings(environ=env), env


def cleanup_redis(client, settings) -> None:
    """Delete every key of this test's stream and Feast project."""
    cfg = settings.stream
    for pattern in (f"{cfg.state_prefix}:*", f"{cfg.stream_key}*", f"{cfg.dead_letter_key}*"):
        keys = list(client.scan_iter(match=pattern, count=10_000))
        for i in range(0, len(keys), 5_000):
            client.delete(*keys[i : i + 5_000])


def jitter_order(rows: list[dict], lateness: timedelta, seed: int) -> list[dict]:
    """Event-time order, shuffled within blocks shorter than the allowed lateness (out of order, never late)."""
    rng = random.Random(seed)
    rows = sorted(rows, key=lambda r: r["event_ts"])
    out, block, start = [], [], None
    for r in rows:
        if start is None or r["event_ts"] - start >= lateness / 2:
            rng.shuffle(block)
            out += block
            block, start = [], r["event_ts"]
        block.append(r)
    rng.shuffle(block)
    return out + block


def count_between(events: list[dict], key: tuple[str, str, str], kind: str, lo: datetime, hi: datetime) -> int:
    """Brute force: events of `kind` for (level, user, entity) with lo < ts <= hi."""
    level, user, entity = key
    return sum(
        1
        for e in events
        if e["event_type"] == kind and e["user_id"] == user and e[f"{level}_id"] == entity and lo < e["event_ts"] <= hi
    )
