"""Time-based split: disjoint, ordered in time, the requested shares, gaps honoured."""

from __future__ import annotations

import numpy as np
import pytest

from freqcap.domain.training.split import time_split

HOUR = 3_600_000_000


def _ts(n=10_000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 14 * 24 * HOUR, n)  # unsorted on purpose


def test_parts_are_disjoint_complete_and_ordered():
    ts = _ts()
    s = time_split(ts, 0.2, 0.1)
    parts = [s.train, s.early_stopping, s.valid]
    assert sum(len(p) for p in parts) == len(ts)
    assert len(np.unique(np.concatenate(parts))) == len(ts)
    assert ts[s.train].max() < ts[s.early_stopping].min() <= ts[s.early_stopping].max() < ts[s.valid].min()
    assert len(s.valid) == pytest.approx(0.2 * len(ts), abs=2)
    assert len(s.early_stopping) == pytest.approx(0.1 * 0.8 * len(ts), abs=2)
    assert ts[s.valid].min() == s.valid_cut_us and ts[s.early_stopping].min() == s.early_cut_us


def test_ties_at_the_cut_stay_together():
    ts = np.repeat(np.arange(10) * HOUR, 100)  # ten distinct times
    s = time_split(ts, 0.25, 0.0)
    assert set(ts[s.valid]).isdisjoint(ts[s.train])
    assert ts[s.train].max() < ts[s.valid].min()
    assert len(s.early_stopping) == 0 and s.early_cut_us is None


def test_gap_drops_rows_before_each_cut():
    ts = _ts()
    gap = 24 * HOUR
    s = time_split(ts, 0.2, 0.1, gap_us=gap)
    assert ts[s.valid].min() - ts[s.early_stopping].max() > gap
    assert ts[s.early_stopping].min() - ts[s.train].max() > gap
    assert len(s.train) + len(s.early_stopping) + len(s.valid) < len(ts)


def test_impossible_splits_are_refused():
    with pytest.raises(ValueError, match="at least two rows"):
        time_split(np.array([1]), 0.2)
    with pytest.raises(ValueError, match="empty part"):
        time_split(np.zeros(100, dtype=np.int64), 0.2)  # a single time: everything is "validation"
    with pytest.raises(ValueError, match="fractions"):
        time_split(_ts(), 1.5)
