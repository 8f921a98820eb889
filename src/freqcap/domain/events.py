"""The event contract: column names, types and allowed values shared by every part of freqcap.

One row per event. Timestamps are UTC with microsecond precision (DuckDB 2.0 rejects tz-aware nanoseconds).
"""

from __future__ import annotations

import pyarrow as pa

EVENT_TYPES: tuple[str, ...] = ("impression", "click", "conversion")
AUDIENCES: tuple[str, ...] = ("high_intent", "returning", "cold")
LEVELS: tuple[str, ...] = ("advertiser", "campaign", "ad")
# Signal-quality tiers of a user, from weakest to strongest evidence of interest.
SIGNAL_TIERS: tuple[str, ...] = ("impression_only", "engaged", "converter")
KNOWN_FORMATS: tuple[str, ...] = ("feed", "stories", "reels", "search", "video")

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_ts", TIMESTAMP_TYPE, nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("advertiser_id", pa.string(), nullable=False),
        pa.field("campaign_id", pa.string(), nullable=False),
        pa.field("ad_id", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("conversion_value", pa.float64(), nullable=True),
    ]
)
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA.names)
KEY_COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "event_ts",
    "user_id",
    "advertiser_id",
    "campaign_id",
    "ad_id",
)

USERS_SCHEMA = pa.schema([pa.field("user_id", pa.string(), nullable=False), pa.field("audience", pa.string())])

# Optional ad catalog written by the simulator (and by real exports that have one): the hierarchy of every ad.
ADS_SCHEMA = pa.schema(
    [
        pa.field("ad_id", pa.string(), nullable=False),
        pa.field("campaign_id", pa.string(), nullable=False),
        pa.field("advertiser_id", pa.string(), nullable=False),
    ]
)
