"""Resolving the training DAG's parameters into the plain inputs its jobs take."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import duckdb

from freqcap.adapters.airflow.context import run_as_of
from freqcap.adapters.events_files import parquet_glob
from freqcap.config import Settings
from freqcap.jobs.features import events_dir_for
from freqcap.layout import parse_as_of, users_path_for


def resolve_inputs(context: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """as_of, events_dir, users, floor, and the first event day (where snapshot backfills start)."""
    params = context.get("params") or {}
    events_dir = events_dir_for(settings, params.get("events_dir"))
    users = users_path_for(events_dir, params.get("users"))
    as_of = run_as_of(context)
    first = parse_as_of(
        duckdb.sql(f"SELECT min(event_ts) FROM read_parquet('{parquet_glob(events_dir)}')").fetchall()[0][0]
    )
    # Snapshots sit at midnights, like the daily features DAG's: the first one on or after the first event.
    midnight = first.replace(hour=0, minute=0, second=0, microsecond=0)
    start = min(midnight if midnight == first else midnight + timedelta(days=1), as_of)
    return {
        "as_of": as_of.isoformat(),
        "events_dir": events_dir,
        "users": str(users) if users else None,
        "floor": params.get("floor"),
        "start": start.isoformat(),
    }
