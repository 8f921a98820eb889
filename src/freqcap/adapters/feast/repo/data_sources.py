"""Feast batch sources: the Parquet snapshots written by `freqcap features build`, one directory per table.

Each snapshot file holds one as-of time (`event_timestamp`), so the offline store keeps the history that
point-in-time joins need. Paths are relative to the feature store's data root and resolved on apply.
"""

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat

from freqcap.domain.features import USER_TABLE


def _snapshots(table: str) -> FileSource:
    return FileSource(
        name=f"{table}_snapshots",
        path=f"offline/{table}",
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=f"batch snapshots of the {table} feature table",
    )


# (user, advertiser) frequency snapshots.
user_advertiser_source = _snapshots("user_advertiser")

# (user, campaign) frequency snapshots.
user_campaign_source = _snapshots("user_campaign")

# (user, ad) frequency snapshots.
user_ad_source = _snapshots("user_ad")

# User-level snapshots: audience, signal tier and overall activity.
user_source = _snapshots(USER_TABLE)

BATCH_SOURCES = {
    "user_advertiser": user_advertiser_source,
    "user_campaign": user_campaign_source,
    "user_ad": user_ad_source,
    USER_TABLE: user_source,
}


def _stream_push(level: str) -> PushSource:
    return PushSource(
        name=f"user_{level}_stream_push",
        # Required by Feast; the stream views are never materialized from it (the worker pushes them online).
        batch_source=FileSource(
            name=f"user_{level}_stream_log",
            path=f"offline/user_{level}_stream",
            file_format=ParquetFormat(),
            timestamp_field="event_timestamp",
        ),
        description=f"rolling per-bucket counts per user x {level}, pushed by the stream worker",
    )


# Pushed by `freqcap stream`: per-bucket counters of (user, advertiser) over the last day.
user_advertiser_stream_push = _stream_push("advertiser")

# Pushed by `freqcap stream`: per-bucket counters of (user, campaign).
user_campaign_stream_push = _stream_push("campaign")

# Pushed by `freqcap stream`: per-bucket counters of (user, ad).
user_ad_stream_push = _stream_push("ad")

PUSH_SOURCES = {
    "user_advertiser_stream": user_advertiser_stream_push,
    "user_campaign_stream": user_campaign_stream_push,
    "user_ad_stream": user_ad_stream_push,
}
