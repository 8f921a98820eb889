"""Deterministic, vectorized simulator of ad traffic with known exposure–response curves.

The generative story is documented in `freqcap.domain.simulate.model`; parameters in `freqcap.domain.simulate.params`; the
ground-truth file layout in `freqcap.domain.simulate.truth`.

    from freqcap.domain.simulate import simulate_world, build_tables, true_cap
    world = simulate_world(SimulationConfig(users=20_000, days=14, seed=7), ModelParams())

Writing a world to Parquet and its `ground_truth.json` is `freqcap.adapters.simulation_files` (`simulate_to_dir`,
`load_ground_truth`); the truth by raw exposure count is `freqcap.adapters.duckdb.truth_raw`.
"""

from freqcap.domain.simulate.model import World, simulate_world
from freqcap.domain.simulate.params import (
    AudienceParams,
    FormatParams,
    LevelResponse,
    ModelParams,
    response_multiplier,
)
from freqcap.domain.simulate.tables import WorldTables, build_tables, event_layout, events_table
from freqcap.domain.simulate.truth import cap_from_curve, declared_curves, ground_truth, true_cap

__all__ = [
    "AudienceParams",
    "FormatParams",
    "LevelResponse",
    "ModelParams",
    "World",
    "WorldTables",
    "build_tables",
    "cap_from_curve",
    "declared_curves",
    "event_layout",
    "events_table",
    "ground_truth",
    "response_multiplier",
    "simulate_world",
    "true_cap",
]
