"""The impressions of a monitoring window with their realized counts per cap window, read from events (DuckDB).

The input of `freqcap.domain.monitoring.frequency.realized_frequency` (see its docstring for the definitions).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from freqcap.adapters.events_files import parquet_glob
from freqcap.domain.events import LEVELS
from freqcap.domain.monitoring.frequency import count_column

log = logging.getLogger(__name__)
_US = 1_000_000


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def impression_counts(
    events_dir: str | Path,
    users_path: str | Path | None,
    start: datetime,
    end: datetime,
    windows: dict[str, set[int]],
    signal_lookback_seconds: float,
    *,
    threads: int = 2,
    memory_limit: str = "4GB",
) -> pd.DataFrame:
    """Impressions in (start, end] with, per level and cap window W, the count over (t − W, t]; plus the user's
    audience and signal tier (as of `start`). Events are deduplicated by event_id."""
    started = time.perf_counter()
    start_us, end_us = int(start.timestamp() * _US), int(end.timestamp() * _US)
    longest = max((w for ws in windows.values() for w in ws), default=0)
    lookback_us = int(signal_lookback_seconds * _US)
    imp_lo, signal_lo = start_us - longest * _US, start_us - lookback_us
    glob = _sql_str(parquet_glob(events_dir))
    # A policy without caps has no windows: then there is no window function, and QUALIFY would be refused.
    counts = [
        f"count(*) OVER (PARTITION BY user_id, {level}_id ORDER BY ts_us "
        f"RANGE BETWEEN {w * _US - 1} PRECEDING AND CURRENT ROW) AS {count_column(level, w)}"
        for level in LEVELS
        for w in sorted(windows.get(level, ()))
    ]
    users = (
        f"LEFT JOIN (SELECT user_id, min(audience) AS audience FROM read_parquet({_sql_str(str(users_path))}) "
        "GROUP BY user_id) u USING (user_id)"
        if users_path
        else ""
    )
    audience = "coalesce(u.audience, 'unknown')" if users_path else "'unknown'"
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        con.execute(f"SET memory_limit = {_sql_str(memory_limit)}")
        con.execute(
            f"""
            CREATE TEMP TABLE ev AS
            SELECT DISTINCT ON (event_id) event_id, event_type, epoch_us(event_ts) AS ts_us, user_id,
                   advertiser_id, campaign_id, ad_id
            FROM read_parquet({glob}, hive_partitioning = false)
            WHERE event_ts <= make_timestamptz({end_us})
              AND ((event_type = 'impression' AND event_ts > make_timestamptz({imp_lo}))
                   OR (event_type IN ('click', 'conversion') AND event_ts > make_timestamptz({signal_lo})))
            ORDER BY event_id, event_ts
            """
        )
        frame = con.sql(
            f"""
            WITH imps AS (
                SELECT user_id, advertiser_id, campaign_id, ad_id, ts_us
                       {", " + ", ".join(counts) if counts else ""}
                FROM ev WHERE event_type = 'impression'
                {"QUALIFY" if counts else "AND"} ts_us > {start_us}
            ),
            tiers AS (
                SELECT user_id,
                       CASE WHEN bool_or(event_type = 'conversion') THEN 'converter'
                            WHEN bool_or(event_type = 'click') THEN 'engaged' END AS signal_tier
                FROM ev WHERE ts_us > {signal_lo} AND ts_us <= {start_us}
                  AND event_type IN ('click', 'conversion')
                GROUP BY user_id
            )
            SELECT i.*, {audience} AS audience, coalesce(t.signal_tier, 'impression_only') AS signal_tier
            FROM imps i LEFT JOIN tiers t USING (user_id) {users}
            ORDER BY ts_us, user_id, ad_id
            """
        ).df()
    finally:
        con.close()
    log.info("realized frequency: %d impressions in window, %.1fs", len(frame), time.perf_counter() - started)
    return frame
