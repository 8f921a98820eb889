"""Deterministic, vectorized simulator of ad traffic with known exposure–response curves.

The generative story is documented in `freqcap.simulate.model`; parameters in `freqcap.simulate.params`; the
ground-truth file layout in `freqcap.simulate.truth`.

    from freqcap.simulate import simulate_to_dir, load_ground_truth, true_cap
    summary = simulate_to_dir(Path("out"), SimulationConfig(users=20_000, days=14, seed=7))
    cap = true_cap(load_ground_truth("out"), "cold", "ad", floor=0.5)
"""

from freqcap.simulate.model import World, simulate_world
from freqcap.simulate.params import (
    AudienceParams,
    FormatParams,
    LevelResponse,
    ModelParams,
    response_multiplier,
)
from freqcap.simulate.tables import WorldTables, build_tables, event_layout, events_table
from freqcap.simulate.truth import cap_from_curve, declared_curves, ground_truth, true_cap
from freqcap.simulate.writer import SimulationSummary, load_ground_truth, simulate_to_dir

__all__ = [
    "AudienceParams",
    "FormatParams",
    "LevelResponse",
    "ModelParams",
    "SimulationSummary",
    "World",
    "WorldTables",
    "build_tables",
    "cap_from_curve",
    "declared_curves",
    "event_layout",
    "events_table",
    "ground_truth",
    "load_ground_truth",
    "response_multiplier",
    "simulate_to_dir",
    "simulate_world",
    "true_cap",
]
