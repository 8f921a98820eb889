"""Small simulated worlds shared by the simulator tests (each is generated once per session)."""

from __future__ import annotations

import pytest

from freqcap.adapters.simulation_files import SimulationSummary, simulate_to_dir
from freqcap.config import SimulationConfig
from freqcap.domain.simulate import ModelParams


def boosted_params(factor: float = 3.0) -> ModelParams:
    """Default behaviour with every baseline conversion propensity × factor: more conversions, more power."""
    base = ModelParams()
    audiences = {
        name: aud.model_copy(update={"baseline_mean": aud.baseline_mean * factor})
        for name, aud in base.audiences.items()
    }
    return base.model_copy(update={"audiences": audiences})


@pytest.fixture(scope="session")
def default_world(tmp_path_factory: pytest.TempPathFactory) -> SimulationSummary:
    """Default behaviour, 3 000 users over 7 days."""
    out = tmp_path_factory.mktemp("sim_default")
    return simulate_to_dir(out, SimulationConfig(users=3000, days=7, seed=11))


@pytest.fixture(scope="session")
def boosted_world(tmp_path_factory: pytest.TempPathFactory) -> SimulationSummary:
    """Boosted conversion rates (×3), 4 000 users over 7 days: enough conversions for per-n statistics."""
    out = tmp_path_factory.mktemp("sim_boosted")
    return simulate_to_dir(out, SimulationConfig(users=4000, days=7, seed=5), params=boosted_params())


@pytest.fixture(scope="session")
def boosted_frame(boosted_world: SimulationSummary):
    """Impressions of the boosted world joined with truth, brute-force exposure counts and predictions."""
    from tests.unit.domain.simulate.helpers import (
        LEVELS,
        brute_force_exposures,
        predicted_p_conv,
        read_events,
        read_truth,
    )

    events = read_events(boosted_world.out_dir)
    truth_imps, truth_users, gt = read_truth(boosted_world.out_dir)
    imps = events[events["event_type"] == "impression"].merge(
        truth_users[["user_id", "audience", "baseline"]], on="user_id", validate="many_to_one"
    )
    frame = imps.merge(brute_force_exposures(imps, gt), on="event_id", validate="one_to_one")
    frame = frame.merge(truth_imps, on=["event_id", "user_id"], validate="one_to_one")
    n_eff = {lv: frame[f"bf_n_eff_{lv}"].to_numpy() for lv in LEVELS}
    args = (frame["audience"].to_numpy(), frame["format"].to_numpy(), frame["baseline"].to_numpy(), gt)
    frame["pred"] = predicted_p_conv(n_eff, *args)
    frame["pred_flat"] = predicted_p_conv(n_eff, *args, without=LEVELS)
    for level in LEVELS:
        frame[f"pred_without_{level}"] = predicted_p_conv(n_eff, *args, without=(level,))
    for level in LEVELS:
        frame[f"final_{level}"] = frame.groupby(["user_id", f"{level}_id"])[f"bf_count_{level}"].transform("max")
    return frame, gt
