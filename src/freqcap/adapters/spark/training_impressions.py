"""The training set's impressions, exposure indices, recency and labels on Spark: what
`freqcap.adapters.duckdb.training_set.create_impressions` computes, for event logs too large for one machine.

One pass of window functions over the events in [start − lookback, horizon] (the earliest copy of each event_id when
deduplicating), partitioned by (user, entity):
* exposure index at level L = impressions of (user, L) in (t − lookback, t) + 1, and the last of them (recency):
  a RANGE frame over integer microseconds, `lookback − 1` to `1` preceding, as DuckDB's;
* the next conversion / click of (user, ad) at or after t (DuckDB's ASOF `>=`): the minimum over a RANGE frame from
  the current row — peers at the same microsecond included — to the end; the next impression strictly after t:
  from `1 FOLLOWING`.
The labels then follow DuckDB's definitions exactly; the training set tests hold the two engines' rows equal.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from freqcap.adapters.spark.files import read_parquet_tree, write_one_file
from freqcap.domain.training.columns import CONVERSION_TIME_COLUMN, LEVEL_ORDER, exposure_column, recency_column
from freqcap.domain.training.config import ConversionModelConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
_US = 1_000_000
EVENT_COLUMNS = ("event_id", "event_type", "event_ts", "user_id", "advertiser_id", "campaign_id", "ad_id", "format")


def _us(ts: datetime) -> int:
    return int(ts.timestamp() * _US)


def impressions_sql(source: str, config: ConversionModelConfig, start: datetime, end: datetime) -> str:
    """Spark SQL over `source` (events already limited to [start − lookback, horizon]) giving DuckDB's `imps`."""
    lookback_us = config.data.lookback_seconds * _US
    conv_us = config.label.attribution_seconds * _US
    click_us = config.label.click_seconds * _US
    imp = "event_type = 'impression'"
    ahead = "PARTITION BY user_id, ad_id ORDER BY ts_us RANGE BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING"
    windows = [
        f"min(CASE WHEN event_type = 'conversion' THEN ts_us END) OVER ({ahead}) AS _next_conv_us",
        f"min(CASE WHEN event_type = 'click' THEN ts_us END) OVER ({ahead}) AS _next_click_us",
        f"min(CASE WHEN {imp} THEN ts_us END) OVER (PARTITION BY user_id, ad_id ORDER BY ts_us "
        "RANGE BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS _next_imp_us",
    ]
    for level in LEVEL_ORDER:
        frame = (
            f"PARTITION BY user_id, {level}_id ORDER BY ts_us RANGE BETWEEN {lookback_us - 1} PRECEDING AND 1 PRECEDING"
        )
        windows.append(f"count(CASE WHEN {imp} THEN 1 END) OVER ({frame}) + 1 AS _n_{level}")
        windows.append(f"max(CASE WHEN {imp} THEN ts_us END) OVER ({frame}) AS _last_{level}")
    exposure = ", ".join(f"CAST(_n_{lv} AS BIGINT) AS {exposure_column(lv)}" for lv in LEVEL_ORDER)
    recency = ", ".join(
        f"CAST(ts_us - _last_{lv} AS DOUBLE) / CAST(3600000000.0 AS DOUBLE) AS {recency_column(lv)}"
        for lv in LEVEL_ORDER
    )
    converted = f"(_next_conv_us IS NOT NULL AND _next_conv_us < ts_us + {conv_us})"
    return f"""
        SELECT event_id, user_id, advertiser_id, campaign_id, ad_id, format, ts_us, {exposure}, {recency},
               CAST({converted} AS INT) AS label_conversion,
               CAST({converted} AND (_next_imp_us IS NULL OR _next_imp_us > _next_conv_us) AS INT)
                   AS label_attributed_conversion,
               CAST(_next_click_us IS NOT NULL AND _next_click_us < ts_us + {click_us} AS INT) AS label_click,
               CASE WHEN {converted} THEN _next_conv_us END AS {CONVERSION_TIME_COLUMN}
        FROM (SELECT *, {", ".join(windows)} FROM {source})
        WHERE {imp} AND ts_us >= {_us(start)} AND ts_us < {_us(end)}
    """


def spark_impressions(
    spark: SparkSession,
    events: str | Path,
    config: ConversionModelConfig,
    start: datetime,
    end: datetime,
    horizon: datetime,
    out_path: Path,
    deduplicate: bool = True,
) -> int:
    """Write the impressions in [start, end) with exposure indices, recency and labels (DuckDB's `imps` columns)
    to the single Parquet file `out_path`; returns its rows."""
    started = time.perf_counter()
    lo = _us(start) - config.data.lookback_seconds * _US
    raw = read_parquet_tree(spark, events).select(*EVENT_COLUMNS)
    view = f"freqcap_training_events_{id(raw):x}"
    raw.createOrReplaceTempView(view)
    try:
        ranked = "row_number() OVER (PARTITION BY event_id ORDER BY event_ts) AS _copy" if deduplicate else "1 AS _copy"
        source = f"""(SELECT event_id, event_type, unix_micros(event_ts) AS ts_us, user_id, advertiser_id, campaign_id,
                             ad_id, format
                      FROM (SELECT *, {ranked} FROM {view}
                            WHERE event_ts >= timestamp_micros({lo}) AND event_ts <= timestamp_micros({_us(horizon)}))
                      WHERE _copy = 1)"""
        rows = write_one_file(spark.sql(impressions_sql(source, config, start, end)), out_path)
    finally:
        spark.catalog.dropTempView(view)
    log.info("spark impressions and labels: %d rows in %.1fs", rows, time.perf_counter() - started)
    return rows
