"""The runtime layout guard: every batch is held to Feast's own write path before any of it is written.

A sample of the batch's rows (the first and last row, random rows, and a null and a non-null row of every column
that has nulls) is converted with Feast's own materialization code and keyed with Feast's own functions
(`online_format.feast_rows` and its `check_*` guards); the entity keys and values encoded here must be
byte-identical, and so must what the target adds (Redis keys and `_ts`; SQLite value_text and timestamps:
`Target.verify_row`). Any difference raises `LayoutMismatchError`, so a Feast upgrade that changes the layout
fails the job and the tests, never silently production.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pyarrow as pa

from freqcap.adapters.feast import online_format as fmt
from freqcap.adapters.feast.bulk.encoders import Batch, is_null
from freqcap.adapters.feast.bulk.errors import LayoutMismatchError
from freqcap.adapters.feast.bulk.plan import ViewPlan


def sample_indices(batch: pa.RecordBatch, plan: ViewPlan, k: int, rng: np.random.Generator) -> np.ndarray:
    """First, last and random rows, plus a null and a non-null row of every feature column that has nulls."""
    n = batch.num_rows
    picks = {0, n - 1, *rng.integers(0, n, min(k, n)).tolist()}
    for f in plan.feature_names:
        missing = is_null(batch.column(f))
        if missing.any():
            picks.add(int(np.argmax(missing)))
            if not missing.all():
                picks.add(int(np.argmax(~missing)))
    return np.array(sorted(picks), dtype=np.int64)


def verify(batch: Batch, plan: ViewPlan, target: Any, k: int, rng: np.random.Generator) -> None:
    """Compare a sample of the batch with Feast's own conversion and key/field functions; raise on a mismatch."""
    idx = sample_indices(batch.table, plan, k, rng)
    sample = batch.table.take(pa.array(idx))
    view = plan.view
    if len(plan.features) != len(view.features):  # online_features: serving — Feast's conversion of the kept ones
        view = copy.copy(view)
        kept = set(plan.feature_names)
        view.features = [f for f in plan.view.features if f.name in kept]
    expected = fmt.feast_rows(sample, view, plan.join_keys)
    version = target.config.entity_key_serialization_version
    for row, (entity_key, values, event_ts, created_ts) in zip(idx.tolist(), expected, strict=True):
        try:
            fmt.check_entity_key(batch.keys[row].as_py(), entity_key, version)
            for (name, _), col in zip(plan.features, batch.columns, strict=True):
                fmt.check_value(name, col.value_at(row), values[name])
            target.verify_row(batch, plan, row, entity_key, values, event_ts, created_ts)
        except fmt.FormatMismatch as exc:
            raise LayoutMismatchError(f"{plan.name} row {row}: {exc}") from exc
