"""Young simulated worlds: every (user, entity) pair within the last 5 days, conversions within an hour.

The truth is `freqcap.adapters.duckdb.truth_raw` over impressions older than the simulator's own 99 % delay
quantile (from ground_truth.json: independent of the delay distribution the fit learns).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd

from freqcap.adapters.duckdb.curve_events import load_event_arrays
from freqcap.adapters.duckdb.truth_raw import raw_count_truth
from freqcap.adapters.simulation_files import simulate_to_dir
from freqcap.config import SimulationConfig, load_settings
from freqcap.domain.curves import FloorSpec, fit_config_from_features, fit_curves
from freqcap.domain.curves.core import CurveFit
from freqcap.domain.simulate import ModelParams, cap_from_curve
from tests.unit.domain.curves.conftest import boosted_params

DAYS = 5
ATTRIBUTION_WINDOW = "7d"  # the default: longer than the whole world
DELAY_MEDIAN_HOURS = 0.1  # 6 min; log-sd 0.7: 99 % of conversions within ~30 min
DELAY_SIGMA = 0.7


def young_params() -> ModelParams:
    return boosted_params().model_copy(
        update={"conversion_delay_hours_median": DELAY_MEDIAN_HOURS, "conversion_delay_sigma": DELAY_SIGMA}
    )


def true_delay_quantile_hours(sim_dir: Path, q: float) -> float:
    """The q-quantile of the simulator's log-normal conversion delay, read from its ground truth."""
    d = json.loads((sim_dir / "ground_truth.json").read_text())["delays"]["conversion_hours"]
    from scipy.stats import norm

    return d["median"] * math.exp(d["log_sigma"] * float(norm.ppf(q)))


@dataclass
class YoungWorld:
    sim_dir: Path
    fit: CurveFit
    truth: pd.DataFrame


def young_world(sim_dir: Path, users: int, seed: int, maturity_share: float = 0.99) -> YoungWorld:
    if not (sim_dir / "ground_truth.json").exists():
        simulate_to_dir(sim_dir, SimulationConfig(users=users, days=DAYS, seed=seed), params=young_params())
    features = load_settings(environ={}).features
    cfg = fit_config_from_features(
        features,
        floor=FloorSpec("relative", 0.5),
        attribution_window=ATTRIBUTION_WINDOW,
        maturity_share=maturity_share,
    )
    ev, _ = load_event_arrays(sim_dir / "events", sim_dir / "users.parquet")
    fit = fit_curves(ev, cfg)
    end = pd.Timestamp(ev.data_end_us, unit="us", tz="UTC").to_pydatetime()
    until = end - timedelta(hours=true_delay_quantile_hours(sim_dir, 0.99))
    truth = raw_count_truth(sim_dir, attribution_window=ATTRIBUTION_WINDOW, until=until)
    return YoungWorld(sim_dir, fit, truth)


def truth_caps(truth: pd.DataFrame, floor: float) -> pd.DataFrame:
    rows = []
    for (aud, tier, level), t in truth.groupby(["audience", "signal_tier", "level"]):
        cohort = aud if tier == "*" else f"{aud}/{tier}"
        rows.append(
            {"cohort": cohort, "level": level, "true_cap": cap_from_curve(t.sort_values("n")["true_ratio"], floor)}
        )
    return pd.DataFrame(rows)


def cohort_caps_vs_truth(world: YoungWorld, floor: float) -> pd.DataFrame:
    """Every audience cohort × level (9 × 3) with its proposed cap and the true cap by raw count."""
    _, caps = world.fit.with_floor(FloorSpec("relative", floor))
    cohorts = caps[caps["kind"] == "cohort"]
    return cohorts.merge(truth_caps(world.truth, floor), on=["cohort", "level"], validate="one_to_one")
