"""One micro-batch of a partition, decided in process. Pure: no I/O.

Events are judged one after another in stream order, exactly as if they arrived one by one:
1. an `event_id` already seen (marked in an earlier flush, or earlier in this batch) is a **duplicate**: seen comes
   first, so a redelivered event that was applied is never called late;
2. an event older than the watermark (the newest event time applied so far) minus the allowed lateness is **late**;
3. otherwise it is **applied**: marked seen, the watermark moves to its time if later, and each of its three pairs
   (user, advertiser), (user, campaign), (user, ad) counts it in its bucket.

Because the verdict of an event depends only on the state before the batch and the events before it in the stream,
replaying the same entries against the same state gives the same verdicts, whatever the batch boundaries: a worker
that dies after writing part of its work and is replaced gets the same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field

from freqcap.domain.stream.buckets import PairCounts, bucket_end
from freqcap.domain.stream.messages import StreamEvent

OK, DUPLICATE, LATE = 0, 1, 2
LEVELS = ("advertiser", "campaign", "ad")
PairKey = tuple[str, str, str]  # (level, user_id, entity_id)


@dataclass
class Judged:
    """The verdict of each event, the ids to mark seen, and the watermark after the batch."""

    verdicts: list[int]
    new_ids: list[str]
    watermark_us: int | None
    counts: dict[int, int] = field(default_factory=dict)  # verdict -> number of events


def judge(events: Sequence[StreamEvent], seen: Container[str], watermark_us: int | None, lateness_us: int) -> Judged:
    """Verdicts in stream order (see the module docstring); `seen` holds the ids marked before this batch."""
    verdicts: list[int] = []
    new_ids: list[str] = []
    fresh: set[str] = set()
    wm = watermark_us
    for ev in events:
        eid = ev.event_id
        if eid in fresh or eid in seen:
            verdicts.append(DUPLICATE)
        elif wm is not None and ev.ts_us < wm - lateness_us:
            verdicts.append(LATE)
        else:
            fresh.add(eid)
            new_ids.append(eid)
            if wm is None or ev.ts_us > wm:
                wm = ev.ts_us
            verdicts.append(OK)
    counts = {OK: 0, DUPLICATE: 0, LATE: 0}
    for v in verdicts:
        counts[v] += 1
    return Judged(verdicts, new_ids, wm, counts)


def pair_keys(ev: StreamEvent) -> tuple[PairKey, PairKey, PairKey]:
    """The three (level, user, entity) pairs an event counts for."""
    user = ev.user_id
    return (("advertiser", user, ev.advertiser_id), ("campaign", user, ev.campaign_id), ("ad", user, ev.ad_id))


def apply_counts(
    events: Sequence[StreamEvent],
    verdicts: Sequence[int],
    pair_of: Callable[[PairKey], PairCounts],
    bucket_s: int,
) -> list[PairKey]:
    """Add the applied events to their pairs' counters (`pair_of` returns the mutable state of a pair) — the same
    as `PairCounts.add` for each pair, with the bucket computed once per event; the pairs changed, in first-change
    order, each once."""
    changed: dict[PairKey, None] = {}
    for ev, verdict in zip(events, verdicts, strict=True):
        if verdict != OK:
            continue
        end = bucket_end(ev.ts_us, bucket_s)
        kind, ts = ev.kind, ev.ts_us
        for key in pair_keys(ev):
            pair = pair_of(key)
            counts = pair.buckets[kind]
            counts[end] = counts.get(end, 0) + 1
            if kind == "i" and (pair.last_imp_us is None or ts > pair.last_imp_us):
                pair.last_imp_us = ts
            changed[key] = None
    return list(changed)
