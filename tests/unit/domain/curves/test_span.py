"""Curves of a span of impressions (`fit_span_curves`): what the model's implied curve is checked against."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from freqcap.adapters.duckdb.curve_events import load_event_arrays
from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.config import SimulationConfig, load_settings
from freqcap.jobs.curves import fit_span_curves
from freqcap.layout import parse_as_of
from tests.unit.domain.curves.conftest import boosted_params


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    sim = tmp_path_factory.mktemp("span") / "sim"
    simulate_to_dir(sim, SimulationConfig(users=3000, days=12, seed=5), params=boosted_params())
    return sim


def _brute_support(world, level: str, start_us: int, end_us: int) -> tuple[int, int]:
    """(first, second) impressions of (user, entity) pairs counted in [start, end): a pair's first impression in
    the span, and its second when the first is in the span too (the 12-day world is shorter than the 28-day
    window, so n is the rank of the impression within its pair)."""
    ev, _ = load_event_arrays(world / "events", world / "users.parquet", deduplicate=True)
    user, ent, ts = ev.imp_user.astype(np.int64), ev.imp_entity[level].astype(np.int64), ev.imp_ts
    first_ts: dict[tuple[int, int], int] = {}
    firsts = seconds = 0
    for i in np.lexsort((ts, ent, user)):
        key = (int(user[i]), int(ent[i]))
        if key not in first_ts:
            first_ts[key] = int(ts[i])
            firsts += start_us <= ts[i] < end_us
        elif first_ts[key] >= 0:
            seconds += start_us <= first_ts[key] and ts[i] < end_us
            first_ts[key] = -1  # later impressions are n ≥ 3
    return firsts, seconds


@pytest.mark.parametrize("level", ["ad", "campaign"])
def test_span_curves_count_only_the_spans_runs(world, level) -> None:
    settings = load_settings(environ={})
    start = parse_as_of(load_ground_truth(world)["window"]["start"]) + timedelta(days=2)
    span = (start, start + timedelta(days=2))  # every impression in it is mature: 8 days of data follow
    curves = fit_span_curves(
        world / "events",
        span,
        users=world / "users.parquet",
        features=settings.features,
        maturity_share=settings.training.maturity_share,
    )
    everyone = curves[(curves["cohort"] == "all") & (curves["level"] == level)].set_index("n")
    us = 1_000_000
    firsts, seconds = _brute_support(world, level, int(span[0].timestamp() * us), int(span[1].timestamp() * us))
    assert everyone.loc[1, "support"] == firsts
    assert everyone.loc[2, "support"] == seconds
    # and the span really restricts: the whole data's curve counts more first impressions
    whole = fit_span_curves(
        world / "events",
        (span[0] - timedelta(days=2), span[1] + timedelta(days=8)),
        users=world / "users.parquet",
        features=settings.features,
        maturity_share=settings.training.maturity_share,
    )
    assert whole[(whole["cohort"] == "all") & (whole["level"] == level)]["support"].iloc[0] > 2 * firsts
