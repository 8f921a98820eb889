"""The two sides of drift: the current window's impressions in training-set shape, and the training reference.

**Current rows** are built exactly as the training set builds its rows (`freqcap.adapters.duckdb.training_set`): one row per
impression in [start, end) with the exact exposure indices `n_<level>` and `hours_since_last_<level>` from the
events (same lookback), `format`, `hour_of_day` and `audience`. When daily feature snapshots cover the window, the
Feast features are joined as of 1 µs before each impression (the same ASOF join, over the same snapshot files)
and `signal_tier` is added, so the champion model can score the rows; otherwise the rows hold the event-derived
columns only (and the notes say so). Labels are not observed yet for the current window and are dropped.

**The reference** is the training set the champion model was trained on (its MLflow run's
`freqcap.training_set` tag), else the newest training set on disk (`DataLayout.training_root`), unless
`monitoring.reference_path` names a file.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from freqcap.adapters.duckdb.training_set import (
    EXACT_COLUMNS,
    STRING_FEATURES,
    asof_join,
    create_impressions,
    feast_column,
    numeric_feature_refs,
    snapshot_coverage,
)
from freqcap.adapters.events_files import parquet_glob
from freqcap.config import Settings, parse_duration
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def current_rows(
    events_dir: str | Path,
    users_path: str | Path | None,
    start: datetime,
    end: datetime,
    settings: Settings,
    model_config: Any,
    repo_dir: Path | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Impressions in [start, end) in training-set shape (see the module docstring) and notes."""
    started = time.perf_counter()
    notes: list[str] = []
    repo = (repo_dir or DataLayout.of(settings).feast_repo).resolve()
    refs = model_config.data.feature_refs
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {settings.features.threads}")
        con.execute(f"SET memory_limit = {_sql_str(settings.features.memory_limit)}")
        source = (
            "(SELECT event_id, event_type, event_ts, user_id, advertiser_id, campaign_id, ad_id, format "
            f"FROM read_parquet({_sql_str(parquet_glob(events_dir))}, hive_partitioning = false))"
        )
        # Labels need events after `end` that are not observed yet: the horizon is `end` and labels are dropped.
        rows = create_impressions(con, source, model_config, start, end, end, deduplicate=model_config.data.deduplicate)
        cols = [
            "i.event_id",
            "make_timestamptz(i.ts_us) AS impression_ts",
            "i.format",
            "((i.ts_us // 3600000000) % 24)::INTEGER AS hour_of_day",
            ("coalesce(u.audience, 'unknown')" if users_path else "'unknown'") + " AS audience",
            *(f"i.{c}" for c in EXACT_COLUMNS),
        ]
        join = ""
        if rows and refs:
            coverage = snapshot_coverage(con, repo, refs, parse_duration(settings.feast.snapshot_ttl))
            uncovered = {v: c["uncovered_rows"] for v, c in coverage.items() if c["uncovered_rows"]}
            if uncovered:
                notes.append(
                    f"feature snapshots do not cover the window ({uncovered} impressions uncovered per view): "
                    "current rows hold the event-derived columns only"
                )
            else:
                asof_join(con, repo, refs, parse_duration(settings.feast.snapshot_ttl))
                join = "LEFT JOIN feats f ON f.event_id = i.event_id"
                for ref, missing in STRING_FEATURES.items():
                    if ref in refs:
                        cols.append(
                            f'coalesce(f."{feast_column(ref)}", {_sql_str(missing)}) AS {ref.partition(":")[2]}'
                        )
                for ref in numeric_feature_refs(model_config):
                    kind, zero = ("DOUBLE", "0.0") if ref.endswith("imp_decayed") else ("BIGINT", "0")
                    cols.append(f'coalesce(f."{feast_column(ref)}", {zero})::{kind} AS "{feast_column(ref)}"')
        users = (
            f"LEFT JOIN (SELECT user_id, min(audience) AS audience FROM read_parquet({_sql_str(str(users_path))}) "
            "GROUP BY user_id) u ON u.user_id = i.user_id"
            if users_path
            else ""
        )
        frame = con.sql(f"SELECT {', '.join(cols)} FROM imps i {join} {users} ORDER BY i.ts_us, i.event_id").df()
    finally:
        con.close()
    log.info(
        "current rows: %d impressions in [%s, %s), %.1fs", len(frame), start.isoformat(), end.isoformat(),
        time.perf_counter() - started,
    )  # fmt: skip
    return frame, notes


def sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows, uniformly with a fixed seed (the same input gives the same sample)."""
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    idx = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[idx].reset_index(drop=True)


def read_reference(path: Path, columns: list[str], max_rows: int, seed: int) -> pd.DataFrame:
    """The reference's `columns` (those it has), sampled like the current rows."""
    have = set(pq.read_schema(path).names)
    return sample(pq.read_table(path, columns=[c for c in columns if c in have]).to_pandas(), max_rows, seed)
