"""Small, hand-built event batches for the validation tests (no simulator; every bad row is made on purpose)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.config import ValidationConfig
from freqcap.domain.events import EVENT_COLUMNS, EVENT_SCHEMA

AS_OF = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=5)  # ValidationConfig().future_tolerance
# ad -> (campaign, advertiser), as in the ads catalog the tests write.
HIERARCHY = {"a1": ("c1", "v1"), "a2": ("c1", "v1"), "a3": ("c2", "v1"), "a4": ("c3", "v2")}
# The contract with every column nullable, so tests can write the nulls the validation must catch.
NULLABLE_SCHEMA = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])


def ev(
    event_id: str | None,
    event_type: str | None = "impression",
    *,
    minutes_ago: float = 60,
    user_id: str | None = "u1",
    ad_id: str | None = "a1",
    campaign_id: str | None = "",
    advertiser_id: str | None = "",
    format: str | None = "feed",
    conversion_value: float | None = None,
    ts: datetime | None = None,
) -> dict[str, Any]:
    """One event; campaign/advertiser default to the ad's hierarchy ("" means "take it from HIERARCHY")."""
    camp, adv = HIERARCHY.get(ad_id or "", ("c-unknown", "v-unknown"))
    return {
        "event_id": event_id,
        "event_type": event_type,
        "event_ts": ts if ts is not None else AS_OF - timedelta(minutes=minutes_ago),
        "user_id": user_id,
        "advertiser_id": adv if advertiser_id == "" else advertiser_id,
        "campaign_id": camp if campaign_id == "" else campaign_id,
        "ad_id": ad_id,
        "format": format,
        "conversion_value": conversion_value,
    }


def valid_batch(n_users: int = 5, prefix: str = "ok") -> list[dict[str, Any]]:
    """A batch with nothing wrong: impressions of every ad, clicks and conversions on impressed ads."""
    rows = []
    formats = ["feed", "stories", "reels", "search", "video"]
    i = 0
    for u in range(n_users):
        for j, ad in enumerate(sorted(HIERARCHY)):
            rows.append(
                ev(
                    f"{prefix}-{i}",
                    "impression",
                    minutes_ago=600 - i,
                    user_id=f"u{u}",
                    ad_id=ad,
                    format=formats[(u + j) % 5],
                )
            )
            i += 1
        rows.append(ev(f"{prefix}-{i}", "click", minutes_ago=300 - i, user_id=f"u{u}", ad_id="a2"))
        i += 1
        rows.append(
            ev(
                f"{prefix}-{i}",
                "conversion",
                minutes_ago=200 - i,
                user_id=f"u{u}",
                ad_id="a3",
                conversion_value=float(u),
            )
        )  # u0 converts with value 0.0: allowed
        i += 1
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]], schema: pa.Schema = NULLABLE_SCHEMA) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_catalog(path: Path, hierarchy: dict[str, tuple[str, str]] = HIERARCHY) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "ad_id": list(hierarchy),
                "campaign_id": [c for c, _ in hierarchy.values()],
                "advertiser_id": [a for _, a in hierarchy.values()],
            }
        ),
        path,
    )
    return path


def config(**overrides: Any) -> ValidationConfig:
    return ValidationConfig(**overrides)


def read_rows(path: Path | str) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def key(row: dict[str, Any]) -> tuple:
    """A row's contract values, comparable across files (NaN-free: the builders never write NaN here)."""
    return tuple(row[c] for c in EVENT_COLUMNS)
