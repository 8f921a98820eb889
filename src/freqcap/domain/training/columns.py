"""The training set's contract: its columns (keys, labels, context, exact exposures) and its description.

The DuckDB builder (`freqcap.adapters.duckdb.training_set`) writes them; the encoding and the model-based curve
read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

KEY_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "advertiser_id", "campaign_id", "ad_id", "impression_ts")
LABEL_COLUMNS: tuple[str, ...] = ("label_conversion", "label_attributed_conversion", "label_click")
# µs time of the conversion behind `label_conversion` (null when 0): the deconvolved label needs the delays.
CONVERSION_TIME_COLUMN = "conversion_us"
CONTEXT_COLUMNS: tuple[str, ...] = ("format", "hour_of_day", "audience", "signal_tier")
LEVEL_ORDER: tuple[str, ...] = ("advertiser", "campaign", "ad")
# Feast features that are strings, and what a missing value means.
STRING_FEATURES: dict[str, str] = {"user:signal_tier": "impression_only"}


def exposure_column(level: str) -> str:
    return f"n_{level}"


def recency_column(level: str) -> str:
    return f"hours_since_last_{level}"


EXACT_COLUMNS: tuple[str, ...] = tuple(exposure_column(lv) for lv in LEVEL_ORDER) + tuple(
    recency_column(lv) for lv in LEVEL_ORDER
)


@dataclass(frozen=True)
class TrainingSet:
    """What a build wrote: the Parquet file and its description (also written beside it as JSON)."""

    path: Path
    rows: int
    start: datetime
    end: datetime
    as_of: datetime
    engine: str
    label_rate: float
    click_rate: float
    feature_columns: tuple[str, ...]  # the Feast feature columns (numeric)
    sha256: str
    seconds: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        for key in ("start", "end", "as_of"):
            out[key] = getattr(self, key).isoformat()
        out["feature_columns"] = list(self.feature_columns)
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSet:
        parse = datetime.fromisoformat
        return cls(
            path=Path(data["path"]),
            rows=int(data["rows"]),
            start=parse(data["start"]),
            end=parse(data["end"]),
            as_of=parse(data["as_of"]),
            engine=data["engine"],
            label_rate=float(data["label_rate"]),
            click_rate=float(data["click_rate"]),
            feature_columns=tuple(data["feature_columns"]),
            sha256=data["sha256"],
            seconds=dict(data.get("seconds") or {}),
            notes=tuple(data.get("notes") or ()),
        )
