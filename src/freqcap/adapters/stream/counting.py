"""A commit unit's counting: the pairs of its applied events, then their counters and pruning.

The domain's functions (`pair_keys`, `apply_counts`, `PairCounts.prune`) in one pass over the unit, in C when this
install has it (`_counts.c`: same results; `FREQCAP_NATIVE=off` turns it off). The Python versions here are the
reference and the fallback; an event the C integers cannot hold (a time beyond 64 bits) takes them too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from freqcap.adapters.native import load
from freqcap.domain.stream.batch import OK, PairKey, apply_counts, pair_keys
from freqcap.domain.stream.buckets import PairCounts
from freqcap.domain.stream.messages import StreamEvent


def unit_keys(events: Sequence[StreamEvent], verdicts: Sequence[int]) -> list[PairKey]:
    """The three pairs of every applied event, in stream order (repeats kept)."""
    return [k for ev, v in zip(events, verdicts, strict=True) if v == OK for k in pair_keys(ev)]


def count_unit(
    events: Sequence[StreamEvent],
    verdicts: Sequence[int],
    keys: Sequence[PairKey],
    cache: dict[PairKey, PairCounts],
    bucket_s: int,
    horizon: int,
) -> list[PairKey]:
    """Count the applied events in their pairs (all in `cache`; `keys` is `unit_keys` of the same events), then drop
    each changed pair's buckets ending before `horizon`; the changed pairs, each once, in first-change order."""
    changed = apply_counts(events, verdicts, cache.__getitem__, bucket_s)
    for key in changed:
        cache[key].prune(horizon)
    return changed


class UnitCounter:
    """`keys(events, verdicts)` and `count(events, verdicts, keys, cache, bucket_s, horizon)`: `unit_keys` and
    `count_unit`, compiled when this install has them."""

    def __init__(self) -> None:
        self._native = load("freqcap.adapters.stream._counts")
        self.keys: Callable[[list[StreamEvent], list[int]], list[PairKey]] = (
            unit_keys if self._native is None else self._native_keys
        )

    def _native_keys(self, events: list[StreamEvent], verdicts: list[int]) -> list[PairKey]:
        try:
            return self._native.unit_keys(events, verdicts)
        except TypeError:  # not plain lists of events: the reference takes any sequence
            return unit_keys(events, verdicts)

    def count(
        self,
        events: list[StreamEvent],
        verdicts: list[int],
        keys: list[PairKey],
        cache: dict[PairKey, Any],
        bucket_s: int,
        horizon: int,
    ) -> list[PairKey]:
        if self._native is not None:
            try:  # it raises these before it changes anything
                return self._native.apply(events, verdicts, keys, cache, bucket_s, horizon)
            except (TypeError, OverflowError):
                pass
        return count_unit(events, verdicts, keys, cache, bucket_s, horizon)
