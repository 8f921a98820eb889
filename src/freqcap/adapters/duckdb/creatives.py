"""Impressions and conversions per (campaign, ad) in a window, read from events (DuckDB): the input of
`freqcap.domain.monitoring.fragmentation.fragmentation`."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from freqcap.adapters.events_files import parquet_glob

log = logging.getLogger(__name__)
_US = 1_000_000


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def creative_counts(
    events_dir: str | Path, start: datetime, end: datetime, *, threads: int = 2, memory_limit: str = "4GB"
) -> pd.DataFrame:
    """campaign_id, ad_id, impressions, conversions over events in (start, end], deduplicated by event_id; one row
    per ad with at least one impression or conversion there."""
    started = time.perf_counter()
    start_us, end_us = int(start.timestamp() * _US), int(end.timestamp() * _US)
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        con.execute(f"SET memory_limit = {_sql_str(memory_limit)}")
        frame = con.sql(
            f"""
            WITH ev AS (
                SELECT DISTINCT ON (event_id) event_id, event_type, campaign_id, ad_id
                FROM read_parquet({_sql_str(parquet_glob(events_dir))}, hive_partitioning = false)
                WHERE event_ts > make_timestamptz({start_us}) AND event_ts <= make_timestamptz({end_us})
                  AND event_type IN ('impression', 'conversion')
                ORDER BY event_id, event_ts
            )
            SELECT campaign_id, ad_id,
                   count(*) FILTER (WHERE event_type = 'impression')::BIGINT AS impressions,
                   count(*) FILTER (WHERE event_type = 'conversion')::BIGINT AS conversions
            FROM ev GROUP BY campaign_id, ad_id ORDER BY campaign_id, ad_id
            """
        ).df()
    finally:
        con.close()
    log.info("creative counts: %d (campaign, ad) rows, %.1fs", len(frame), time.perf_counter() - started)
    return frame
