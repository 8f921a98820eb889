"""Feast batch sources: the Parquet snapshots written by `freqcap features build`, one directory per table.

Each snapshot file holds one as-of time (`event_timestamp`), so the offline store keeps the history that
point-in-time joins need. Paths are relative to the feature store's data root and resolved on apply.
"""

from feast import FileSource
from feast.data_format import ParquetFormat

from freqcap.features.spec import USER_TABLE


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
