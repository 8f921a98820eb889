"""Feast feature views: one per aggregation tier plus user attributes, built from the features config.

Aggregation happens in DuckDB (`freqcap.adapters.duckdb.features`); these are plain views over its snapshots
(Feast 0.67's own windowed aggregation does not work: BatchFeatureView aggregations are lost on apply).
"""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Float64, Int64, String, UnixTimestamp

from freqcap.adapters.feast.repo.data_sources import BATCH_SOURCES, PUSH_SOURCES
from freqcap.adapters.feast.repo.entities import ad, advertiser, campaign, user
from freqcap.config import FeaturesConfig, load_settings
from freqcap.domain.features import USER_TABLE, tier_tables

_LEVEL_ENTITIES = {"advertiser": advertiser, "campaign": campaign, "ad": ad}


def build_feature_views(config: FeaturesConfig, ttl: timedelta = timedelta(days=2)) -> list[FeatureView]:
    """Views matching the tables that `build_features` writes for `config` (windows are columns)."""
    views: list[FeatureView] = []
    for table in tier_tables(config):
        schema = [Field(name=c, dtype=Int64) for c in (*table.count_columns, *table.calendar_columns)]
        schema += [
            Field(name=table.decayed_column, dtype=Float64),
            Field(name=table.last_ts_column, dtype=UnixTimestamp),
        ]
        # Frequency counters of one (user, <level>) pair at the snapshot time; a zero row marks a pair that went quiet.
        views.append(
            FeatureView(
                name=table.name,
                entities=[user, _LEVEL_ENTITIES[table.level]],
                ttl=ttl,
                schema=schema,
                online=True,
                source=BATCH_SOURCES[table.name],
                tags={"tier": table.level, "owner": "freqcap"},
                description=f"windowed impression/click/conversion counts and decayed impressions per user x {table.level}",
            )
        )
    # Who the user is for the policy: audience cohort and signal-quality tier.
    views.append(
        FeatureView(
            name=USER_TABLE,
            entities=[user],
            ttl=ttl,
            schema=[
                Field(name="audience", dtype=String),
                Field(name="signal_tier", dtype=String),
                Field(name="imp_24h", dtype=Int64),
                Field(name="imp_7d", dtype=Int64),
                Field(name="clk_28d", dtype=Int64),
                Field(name="conv_28d", dtype=Int64),
            ],
            online=True,
            source=BATCH_SOURCES[USER_TABLE],
            tags={"tier": "user", "owner": "freqcap"},
            description="audience cohort, signal-quality tier and overall activity per user",
        )
    )
    return views


# The stream views' features: bucket ends (epoch seconds, ascending) and counts per event kind, and the exact time of
# the newest impression. Serving resolves windows from the buckets at request time (freqcap.domain.stream.seam).
STREAM_FEATURES: tuple[str, ...] = (
    "imp_buckets",
    "imp_counts",
    "clk_buckets",
    "clk_counts",
    "conv_buckets",
    "conv_counts",
    "last_imp_ts",
)


def stream_view_name(level: str) -> str:
    return f"user_{level}_stream"


def build_stream_views(ttl: timedelta = timedelta(days=2)) -> list[FeatureView]:
    """One push-fed view per tier, on the same entities as the batch view (so one Redis hash holds both)."""
    views = []
    for level, entity in _LEVEL_ENTITIES.items():
        name = stream_view_name(level)
        schema = [Field(name=f, dtype=Array(Int64)) for f in STREAM_FEATURES[:-1]]
        schema.append(Field(name="last_imp_ts", dtype=UnixTimestamp))
        # Rolling stream counters of one (user, <level>) pair, per time bucket, as of the worker's last push.
        views.append(
            FeatureView(
                name=name,
                entities=[user, entity],
                ttl=ttl,
                schema=schema,
                online=True,
                source=PUSH_SOURCES[name],
                tags={"tier": level, "owner": "freqcap", "path": "stream"},
                description=f"per-bucket impression/click/conversion counts per user x {level} from the stream worker",
            )
        )
    return views


FEATURE_VIEWS = build_feature_views(load_settings(environ={}).features)
STREAM_VIEWS = build_stream_views()
