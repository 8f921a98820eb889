"""The simulator's causal conversions as an oracle credit (`truth_raw.causal_credit`), checked against the events."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from freqcap.adapters.duckdb.curve_events import load_event_arrays
from freqcap.adapters.duckdb.truth_raw import causal_credit
from freqcap.adapters.simulation_files import simulate_to_dir
from freqcap.config import SimulationConfig, load_settings
from freqcap.domain.curves import FloorSpec, fit_config_from_features, fit_curves


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    sim = tmp_path_factory.mktemp("truth") / "sim"
    simulate_to_dir(sim, SimulationConfig(users=600, days=4, seed=3))
    ev, _ = load_event_arrays(sim / "events", sim / "users.parquet")
    return sim, ev


def test_every_emitted_conversion_is_credited_to_exactly_one_earlier_impression(world) -> None:
    sim, ev = world
    y = causal_credit(sim, ev)
    events = ds.dataset(sim / "events", format="parquet").to_table(columns=["event_type"])
    conversions = pc.sum(pc.equal(events["event_type"], "conversion")).as_py()
    assert conversions > 20
    assert set(np.unique(y)) <= {0.0, 1.0}
    # A conversion is emitted only if it arrived by the end of the data: those are exactly the credited ones.
    assert int(y.sum()) == conversions
    # Each user's credited impressions never outnumber that user's conversions.
    per_user_credit = np.bincount(ev.imp_user, weights=y, minlength=ev.n_users)
    per_user_conversions = np.bincount(ev.conv_user, minlength=ev.n_users)
    assert (per_user_credit == per_user_conversions).all()


def test_fit_curves_uses_the_given_credit(world) -> None:
    sim, ev = world
    y = causal_credit(sim, ev)
    cfg = fit_config_from_features(load_settings(environ={}).features, floor=FloorSpec("relative", 0.5))
    fit = fit_curves(ev, cfg, given_credit=y)
    assert np.array_equal(fit.credit.y, y) and not fit.credit.y_var.any()
    assert fit.credit.method.startswith("given")
    with pytest.raises(ValueError, match="given_credit"):
        fit_curves(ev, cfg, given_credit=y[:-1])


def test_events_in_another_order_are_refused(world) -> None:
    sim, ev = world
    shuffled = replace(ev, imp_ts=ev.imp_ts[::-1].copy())
    with pytest.raises(ValueError, match="not in the order"):
        causal_credit(sim, shuffled)
