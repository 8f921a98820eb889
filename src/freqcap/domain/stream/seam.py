"""The batch/stream seam: how serving turns a batch row and a stream row into one count per window. Pure.

Inputs for one (user, entity) pair at request time `t` (epoch seconds):
* the batch row — counts per window as of its cut-off `T` (its Feast event timestamp, raised to the view's
  watermark when the bulk materializer kept the row unchanged), or no row;
* the stream row — per-bucket counts of the events the worker has seen (bucket `e` holds `(e - b, e]`);
* the stream's coverage `S`: it has seen every event with `ts > S`.

Rules, per window `W` (the README states them for users):
1. **Stream alone** when `W` is one of the stream's windows (1 h, 24 h) and `S <= t - W`: the events with
   `ts` in `(t - W, t]`, resolved at bucket granularity (a bucket counts while its end is after `t - W`, so an
   event stays counted at most one bucket width longer; never shorter).
2. **Batch + stream since the cut-off** otherwise, when there is a batch row and `S <= T`: the batch count over
   `(T - W, T]` plus the stream's buckets that *start* at or after `T` (events in `(T, t]` when `T` is a multiple
   of the bucket width, which the features job's hourly as-of times are). Together: the events in `(T - W, t]` — a
   window that starts earlier than `t - W`, so it can over-count the events that aged out since the batch ran,
   never under-count, and never counts an event twice (batch has `ts <= T`, stream `ts > T`).
3. **No batch row**: the batch saw no event of the pair in its longest window up to the view's cut-off (the bulk
   watermark), so the stream's buckets in the window are the count — provided the stream covers everything after
   that cut-off (`S <= cut-off`). A pair without a row has a gap exactly like a pair with one; when the view's
   cut-off is unknown a gap cannot be ruled out and the stream is not used for it.
4. **Stream unusable** (stale, down, `S > T`: a gap between batch and stream, or a cut-off `T` that is not a whole
   number of buckets, which would split a bucket between the two sides): the batch count alone; the caller marks
   the response `degraded` with reason `stream_stale`. Cut-offs are refused where they are set
   (`check_batch_cutoff`, called before the features job writes online); the seam's own check is the backstop.

Clicks and conversions (the policy's stops) follow the same rules per window; the last impression time is the later
of the two sides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from freqcap.domain.calendar import period_starts, resolve_calendar
from freqcap.domain.policy.engine import EntityState
from freqcap.domain.stream.buckets import Buckets
from freqcap.errors import FreqcapError

_EPS = 1e-6


class SeamError(FreqcapError):
    """A batch cut-off the seam cannot join to the stream's buckets."""


def aligned(cutoff: float, bucket_s: int) -> bool:
    """Is the cut-off a whole number of buckets (epoch seconds)? Only then does it split no bucket."""
    return abs(cutoff - round(cutoff / bucket_s) * bucket_s) <= _EPS


def check_batch_cutoff(cutoff: float, bucket_s: int) -> None:
    """Refuse a batch cut-off (features as-of, epoch seconds) that is not a multiple of `stream.bucket`: the
    bucket it falls in holds events on both sides, and the seam could only drop them or count some twice."""
    if not math.isfinite(cutoff) or not aligned(cutoff, bucket_s):
        raise SeamError(
            f"batch cut-off (features as_of) {datetime.fromtimestamp(cutoff, UTC).isoformat()} is not a whole "
            f"multiple of stream.bucket ({bucket_s}s): choose an as_of on a bucket boundary"
        )


@dataclass(frozen=True)
class BatchRow:
    """A batch row of one pair: impression counts by window seconds, conversions in the longest window."""

    counts: Mapping[int, int]
    conversions: int
    last_imp_ts: datetime | None
    cutoff: float  # epoch seconds
    # Clicks and conversions by window seconds (the policy's stops and their cool-down); empty: none read.
    click_counts: Mapping[int, int] = field(default_factory=dict)
    conversion_counts: Mapping[int, int] = field(default_factory=dict)
    # Per calendar period: (impressions since its start, that start in epoch seconds), as of the cut-off.
    calendar: Mapping[str, tuple[int, float]] | None = None


@dataclass(frozen=True)
class StreamRow:
    """A stream row of one pair: impression and conversion buckets, exact last impression (epoch seconds)."""

    impressions: Buckets
    conversions: Buckets
    last_imp: float | None
    clicks: Buckets = field(default_factory=Buckets)


@dataclass(frozen=True)
class Seam:
    """The stream's geometry: bucket width, the windows it serves alone, and its coverage start."""

    bucket_s: int
    alone_windows: frozenset[int]
    coverage_start: float  # epoch seconds; the stream has every event with ts > coverage_start

    def usable_for(self, batch: BatchRow | None, missing_cutoff: float | None = None) -> bool:
        """False when the stream has a gap after this batch row, or after the view's cut-off `missing_cutoff` for
        a pair with no row (unknown: a gap cannot be ruled out), or when the row's cut-off splits a bucket."""
        cutoff = batch.cutoff if batch is not None else missing_cutoff
        if cutoff is None or not math.isfinite(cutoff):
            return False
        return self.coverage_start <= cutoff + _EPS and aligned(cutoff, self.bucket_s)

    def resolve(
        self,
        windows: Sequence[int],
        batch: BatchRow | None,
        stream: StreamRow | None,
        t: float,
        zone: str | None = None,
    ) -> EntityState:
        """Counts per window (seconds), conversions and last impression for one pair at `t` (rules 1-3); with a
        `zone`, the calendar counts too, keyed (period, zone): the batch's count while its period is the request's,
        plus the stream since the cut-off; the stream alone since the period's start once a new period began
        (`freqcap.domain.calendar.resolve_calendar`).

        The caller checks `usable_for` first; with an unusable stream it uses the batch row alone."""
        b = self.bucket_s
        imp = stream.impressions if stream else Buckets()
        conv = stream.conversions if stream else Buckets()
        clk = stream.clicks if stream else Buckets()
        counts = self._per_window(windows, batch.counts if batch else None, imp, batch, t)
        longest = max(windows)
        if batch is not None:
            conversions = int(batch.conversions) + conv.total_between(batch.cutoff + b - _EPS, t, b)
        else:
            conversions = conv.total_between(t - longest, t, b)
        clicks = self._per_window(windows, batch.click_counts if batch else None, clk, batch, t)
        by_conv = self._per_window(windows, batch.conversion_counts if batch else None, conv, batch, t)
        if zone is not None:
            counts.update(self._calendar(batch, imp, t, zone))
        last = batch.last_imp_ts if batch is not None else None
        stream_last = _stream_last(stream, t, b)
        if stream_last is not None and (last is None or stream_last > last):
            last = stream_last
        return EntityState(
            counts=counts,
            last_imp_ts=last,
            conversions=conversions,
            clicks=clicks[longest],
            click_counts=clicks,
            conversion_counts=by_conv,
        )

    def _calendar(self, batch: BatchRow | None, imp: Buckets, t: float, zone: str) -> dict[Any, int]:
        b = self.bucket_s

        def between(lo: float, hi: float) -> int:
            # Buckets that start at or after `lo` (exact when `lo` is a bucket boundary: every cut-off the seam
            # accepts, and a period start whenever the bucket divides the zone's UTC offset).
            return imp.total_between(lo, hi, b)

        out: dict[Any, int] = {}
        for key, start_t in period_starts(t, zone):
            row = None
            if batch is not None:
                count, start = batch.calendar[key[0]] if batch.calendar else (0, float("-inf"))
                row = (count, start, batch.cutoff)
            out[key] = resolve_calendar(t, start_t, row, between)
        return out

    def _per_window(
        self, windows: Sequence[int], batch_counts: Mapping[int, int] | None, buckets: Buckets, batch, t: float
    ) -> dict[int, int]:
        """Rules 1-3 for one event kind, every window."""
        b = self.bucket_s
        out: dict[int, int] = {}
        for w in windows:
            if w in self.alone_windows and self.coverage_start <= t - w + _EPS:
                out[w] = buckets.total_between(t - w, t, b)
            elif batch is not None:
                out[w] = int(batch_counts.get(w, 0)) + buckets.total_between(batch.cutoff + b - _EPS, t, b)
            else:
                out[w] = buckets.total_between(t - w, t, b)
        return out


def _stream_last(stream: StreamRow | None, t: float, b: int) -> datetime | None:
    if stream is None:
        return None
    if stream.last_imp is not None and stream.last_imp <= t:
        return datetime.fromtimestamp(stream.last_imp, UTC)
    # The newest impression is after t (a replay asking about the past): the end of the newest bucket before t.
    end = stream.impressions.latest_end_before(t, b)
    return datetime.fromtimestamp(min(end, t), UTC) if end is not None else None
