"""Time-based split: train on the past, stop early on the recent past, validate on the most recent rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TimeSplit:
    """Row positions of each part and the cut times (µs since epoch); parts are disjoint and ordered in time:
    every training time < every early-stopping time < every validation time (when each part is non-empty)."""

    train: np.ndarray
    early_stopping: np.ndarray
    valid: np.ndarray
    early_cut_us: int | None
    valid_cut_us: int

    def summary(self) -> dict[str, Any]:
        return {
            "train_rows": len(self.train),
            "early_stopping_rows": len(self.early_stopping),
            "valid_rows": len(self.valid),
            "early_cut_us": self.early_cut_us,
            "valid_cut_us": self.valid_cut_us,
        }


def _cut(ts: np.ndarray, fraction: float) -> int:
    """The time from which the latest ~`fraction` of `ts` lie (ties at the cut go to the later part)."""
    ordered = np.sort(ts)
    k = min(len(ordered) - 1, max(0, int(np.floor(len(ordered) * (1.0 - fraction)))))
    return int(ordered[k])


def time_split(
    ts_us: np.ndarray, valid_fraction: float, early_stopping_fraction: float = 0.0, gap_us: int = 0
) -> TimeSplit:
    """Split rows by time: validation = rows at or after the (1 − valid_fraction) time quantile; of the rest,
    early stopping = the latest `early_stopping_fraction`; train = the remainder. `gap_us` drops rows within
    that span before each cut (an embargo: labels of training rows then end before validation starts when
    gap ≥ the attribution window)."""
    ts = np.asarray(ts_us, dtype=np.int64)
    if len(ts) < 2:
        raise ValueError("need at least two rows to split")
    if not 0.0 < valid_fraction < 1.0 or not 0.0 <= early_stopping_fraction < 1.0:
        raise ValueError("fractions must be in (0, 1) and [0, 1)")
    positions = np.arange(len(ts))
    valid_cut = _cut(ts, valid_fraction)
    valid = positions[ts >= valid_cut]
    rest = positions[ts < valid_cut - gap_us]
    early_cut = None
    early = np.empty(0, dtype=np.int64)
    train = rest
    if early_stopping_fraction > 0 and len(rest) >= 2:
        early_cut = _cut(ts[rest], early_stopping_fraction)
        early = rest[ts[rest] >= early_cut]
        train = rest[ts[rest] < early_cut - gap_us]
    if len(train) == 0 or len(valid) == 0:
        raise ValueError(
            f"time split left an empty part (train {len(train)}, valid {len(valid)} rows): too few distinct times "
            "for these fractions and gap"
        )
    return TimeSplit(train, early, valid, early_cut, valid_cut)
