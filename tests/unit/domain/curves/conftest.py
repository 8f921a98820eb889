"""A simulated world with survivorship, fitted once per session for the curve acceptance tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from freqcap.adapters.duckdb.curve_events import load_event_arrays
from freqcap.adapters.duckdb.truth_raw import raw_count_truth
from freqcap.adapters.simulation_files import simulate_to_dir
from freqcap.config import SimulationConfig, load_settings
from freqcap.domain.curves import FloorSpec, fit_config_from_features, fit_curves
from freqcap.domain.curves.core import CurveFit
from freqcap.domain.simulate import ModelParams

# A 2-day attribution window: conversions come hours after the impression (median 6 h; 96 % within 2 days),
# and the last 2 days of a 14-day world are kept out as immature instead of the last 7.
ATTRIBUTION_WINDOW = "2d"


def boosted_params(factor: float = 3.0) -> ModelParams:
    """Default behaviour (survivorship included) with every baseline conversion propensity × factor."""
    base = ModelParams()
    audiences = {n: a.model_copy(update={"baseline_mean": a.baseline_mean * factor}) for n, a in base.audiences.items()}
    return base.model_copy(update={"audiences": audiences})


@dataclass
class FittedWorld:
    sim_dir: Path
    fit: CurveFit
    truth: pd.DataFrame  # freqcap.adapters.duckdb.truth_raw, restricted to impressions with a complete window


def fit_world(sim_dir: Path, attribution_window: str = ATTRIBUTION_WINDOW) -> FittedWorld:
    features = load_settings(environ={}).features
    cfg = fit_config_from_features(features, floor=FloorSpec("relative", 0.5), attribution_window=attribution_window)
    ev, _ = load_event_arrays(sim_dir / "events", sim_dir / "users.parquet")
    fit = fit_curves(ev, cfg)
    end = pd.Timestamp(ev.data_end_us, unit="us", tz="UTC").to_pydatetime()
    until = end - timedelta(microseconds=cfg.attribution_window_us)
    truth = raw_count_truth(sim_dir, attribution_window=attribution_window, until=until)
    return FittedWorld(sim_dir, fit, truth)


def cohort_ci_hits(curves: pd.DataFrame, truth: pd.DataFrame) -> tuple[int, int]:
    """(points whose CI holds the true rate, points) over the cohort curves of a fit, against the world's truth."""
    own = curves[curves["kind"] == "cohort"]
    truth = truth[truth["signal_tier"] != "*"].assign(cohort=lambda t: t["audience"] + "/" + t["signal_tier"])
    m = own.merge(truth[["cohort", "level", "n", "true_rate"]], on=["cohort", "level", "n"], validate="one_to_one")
    assert len(m) == len(own)
    return int(((m["true_rate"] >= m["ci_low"]) & (m["true_rate"] <= m["ci_high"])).sum()), len(m)


@pytest.fixture(scope="session")
def acceptance_world(tmp_path_factory: pytest.TempPathFactory) -> FittedWorld:
    """20 000 users over 14 days, conversions × 3; heavy users convert more (activity–baseline corr 0.7)."""
    out = tmp_path_factory.mktemp("curves_world")
    simulate_to_dir(out, SimulationConfig(users=20_000, days=14, seed=5), params=boosted_params())
    return fit_world(out)
