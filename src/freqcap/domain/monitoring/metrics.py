"""Serving metrics from the decision log (pure pandas; `freqcap.adapters.decision_log.read_log_window` reads it).

Definitions (one decision = one logged candidate; requests are sampled whole, see freqcap.adapters.decision_log):

- **cap hit rate** of a group = decisions in the group whose binding constraint is reached (`hit`) / decisions
  in the group, over decisions that were actually decided (not failed open). Groups: everything (`all`), cohort
  (`cohort=<audience>/<signal_tier>`), format (`format=feed`), hour of day (`hour=13`). Per level
  (`level=ad`) it is the share of all decided decisions whose *binding* constraint is at that level and reached,
  so the per-level rates add up to the overall rate.
- **cap hit rate change** of a cohort (or level) = its rate in the current window − its rate in the baseline
  window; support = the smaller of the two decision counts.
- **fail-open rate** = decisions answered fail-open (no decision: penalty 1 for every candidate) / all decisions;
  per reason (`reason=timeout`) the share of all decisions failing open with that reason. **degraded rate** also
  counts answers decided from batch features alone (e.g. `stream_stale`). Logs written before the `fail_open`
  field existed count `degraded` rows as failed open (then they were the same thing).
- **degraded since**: buckets of `bucket` (e.g. 5 minutes) with a fail-open rate at or above `healthy_below` are
  unhealthy; the latest streak of unhealthy buckets began with its first failed-open decision — to the second,
  not to the hour — and is `ongoing` while the newest bucket with decisions is unhealthy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

ALL = "all"


@dataclass(frozen=True)
class MetricRow:
    """One number of a monitoring run: `name` (e.g. cap_hit_rate), `segment` (e.g. cohort=cold/engaged or all),
    `value`, and `support` (how many decisions, impressions or rows it rests on)."""

    name: str
    segment: str
    value: float
    support: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricRow:
        return cls(str(data["name"]), str(data["segment"]), float(data["value"]), float(data["support"]))


def rows_to_frame(rows: Iterable[MetricRow]) -> pd.DataFrame:
    return pd.DataFrame([r.to_dict() for r in rows], columns=["name", "segment", "value", "support"])


def prepare_log(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed decision-log rows: UTC `ts`, boolean `hit` / `degraded` / `fail_open`, and a `cohort` label."""
    out = frame.copy()
    out["ts"] = pd.to_datetime(out["ts"], utc=True, format="ISO8601")
    degraded = out["degraded"].fillna(False).astype(bool)
    out["degraded"] = degraded
    if "fail_open" not in out.columns:
        out["fail_open"] = None
    # Older logs have no fail_open column: then every degraded answer failed open.
    out["fail_open"] = out["fail_open"].where(out["fail_open"].notna(), degraded).astype(bool)
    out["hit"] = out["hit"].fillna(False).astype(bool)
    out["cohort"] = (
        out["audience"].fillna("unknown").astype(str) + "/" + out["signal_tier"].fillna("unknown").astype(str)
    )
    return out


def in_window(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """Rows with start < ts ≤ end."""
    return frame[(frame["ts"] > pd.Timestamp(start)) & (frame["ts"] <= pd.Timestamp(end))]


# ------------------------------------------------------------------------------------------------ cap hits


def _rate_rows(name: str, decided: pd.DataFrame, column: str, prefix: str) -> list[MetricRow]:
    grouped = decided.groupby(column, dropna=False)["hit"].agg(["sum", "count"])
    return [
        MetricRow(name, f"{prefix}={key}", float(r["sum"]) / float(r["count"]), float(r["count"]))
        for key, r in grouped.sort_index().iterrows()
    ]


def cap_hit_rates(frame: pd.DataFrame) -> list[MetricRow]:
    """Cap hit rates overall and per cohort, format, hour of day and level (see the module docstring)."""
    decided = frame[~frame["fail_open"]]
    n = len(decided)
    if n == 0:
        return []
    rows = [MetricRow("cap_hit_rate", ALL, float(decided["hit"].sum()) / n, float(n))]
    rows += _rate_rows("cap_hit_rate", decided, "cohort", "cohort")
    rows += _rate_rows("cap_hit_rate", decided, "format", "format")
    rows += _rate_rows("cap_hit_rate", decided.assign(hour=decided["hour"].astype(int)), "hour", "hour")
    hits_by_level = decided[decided["hit"]].groupby("level").size()
    for level in sorted(set(decided["level"].dropna())):
        rows.append(MetricRow("cap_hit_rate", f"level={level}", float(hits_by_level.get(level, 0)) / n, float(n)))
    return rows


def cap_hit_rate_changes(current: pd.DataFrame, baseline: pd.DataFrame) -> list[MetricRow]:
    """Per cohort and per level: current rate − baseline rate (segments present in both windows)."""
    cur = {(r.segment): r for r in cap_hit_rates(current)}
    base = {(r.segment): r for r in cap_hit_rates(baseline)}
    rows = []
    for segment in sorted(set(cur) & set(base)):
        if segment.startswith(("cohort=", "level=")) or segment == ALL:
            c, b = cur[segment], base[segment]
            rows.append(MetricRow("cap_hit_rate_change", segment, c.value - b.value, min(c.support, b.support)))
    return rows


def cohort_table(current: pd.DataFrame, baseline: pd.DataFrame) -> list[dict[str, Any]]:
    """Per cohort: decisions and cap hit rate now and in the baseline (for the on-call page)."""
    cur = {r.segment: r for r in cap_hit_rates(current) if r.segment.startswith("cohort=")}
    base = {r.segment: r for r in cap_hit_rates(baseline) if r.segment.startswith("cohort=")}
    out = []
    for segment in sorted(set(cur) | set(base)):
        c, b = cur.get(segment), base.get(segment)
        out.append(
            {
                "segment": segment,
                "cohort": segment.removeprefix("cohort="),
                "rate": c.value if c else None,
                "decisions": int(c.support) if c else 0,
                "baseline_rate": b.value if b else None,
                "baseline_decisions": int(b.support) if b else 0,
                "change": (c.value - b.value) if c and b else None,
            }
        )
    return out


# ----------------------------------------------------------------------------------------------- fail-open


def fail_open_rates(frame: pd.DataFrame) -> list[MetricRow]:
    """Fail-open rate overall and per reason, and the degraded rate (fail-open or batch-only answers)."""
    n = len(frame)
    if n == 0:
        return []
    failed = frame[frame["fail_open"]]
    rows = [
        MetricRow("fail_open_rate", ALL, len(failed) / n, float(n)),
        MetricRow("degraded_rate", ALL, float(frame["degraded"].sum()) / n, float(n)),
    ]
    reasons = failed["degraded_reason"].fillna("unknown").astype(str).value_counts()
    rows += [MetricRow("fail_open_rate", f"reason={r}", int(c) / n, float(n)) for r, c in sorted(reasons.items())]
    degraded_only = frame[frame["degraded"] & ~frame["fail_open"]]
    reasons = degraded_only["degraded_reason"].fillna("unknown").astype(str).value_counts()
    rows += [MetricRow("degraded_rate", f"reason={r}", int(c) / n, float(n)) for r, c in sorted(reasons.items())]
    return rows


@dataclass(frozen=True)
class Streak:
    """The latest run of unhealthy buckets: its first and last failed-open decision, and whether the newest
    bucket with decisions is still unhealthy."""

    start: pd.Timestamp
    last: pd.Timestamp
    ongoing: bool

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.start.isoformat(), "last_failure": self.last.isoformat(), "ongoing": self.ongoing}


def degraded_streak(frame: pd.DataFrame, end: datetime, bucket: timedelta, healthy_below: float) -> Streak | None:
    """The latest fail-open streak (see "degraded since" in the module docstring), or None when no bucket is
    unhealthy. Buckets without decisions are skipped. `frame` should reach back far enough (e.g. the baseline
    and current windows)."""
    if frame.empty or not frame["fail_open"].any():
        return None
    end_ts = pd.Timestamp(end)
    width = pd.Timedelta(bucket)
    # Bucket k covers (end - (k+1)·width, end - k·width]; k = 0 is the newest.
    delta = ((end_ts - frame["ts"]) / width).to_numpy(dtype=float)
    k = np.maximum(np.ceil(delta) - 1, 0).astype(int)
    stats = frame.assign(_k=k).groupby("_k")["fail_open"].agg(["sum", "count"]).sort_index()
    unhealthy = stats["sum"] / stats["count"] >= healthy_below
    if not unhealthy.any():
        return None
    newest_bad = int(stats.index[unhealthy.to_numpy()].min())
    older_healthy = stats.index[(~unhealthy).to_numpy() & (stats.index > newest_bad)]
    failed = frame["fail_open"]
    if len(older_healthy):
        failed = failed & (frame["ts"] > end_ts - int(older_healthy.min()) * width)  # after that healthy bucket
    return Streak(
        start=frame.loc[failed, "ts"].min(),
        last=frame.loc[frame["fail_open"], "ts"].max(),
        ongoing=newest_bad == int(stats.index.min()),
    )


def reason_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Failed-open decisions per reason."""
    failed = frame[frame["fail_open"]]
    return {str(k): int(v) for k, v in failed["degraded_reason"].fillna("unknown").value_counts().items()}
