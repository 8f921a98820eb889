"""A small simulated world run through the real pipeline up to the feature tables, for the gate tests.

simulate -> validate events (GX) -> build features (DuckDB). The gates are then tested on this real output and on
copies of it mutated on purpose; what each mutation breaks is counted independently with pandas in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.config import Settings, SimulationConfig, load_settings
from freqcap.jobs.features import build_features_job, validate_events_job
from freqcap.layout import parse_as_of


@dataclass(frozen=True)
class World:
    root: Path
    settings: Settings
    as_of: datetime
    events_dir: Path
    users: Path
    clean_events: Path
    build: dict[str, Any]


def settings_for(root: Path, **env: str) -> Settings:
    """Settings of a world under `root` (only the given overrides, nothing from the process environment)."""
    return load_settings(environ={"FREQCAP__DATA_DIR": str(root / "data"), **env})


def make_world(root: Path, *, users: int = 250, days: int = 5, seed: int = 11, **env: str) -> World:
    simulate_to_dir(root / "raw", SimulationConfig(users=users, days=days, seed=seed))
    settings = settings_for(root, FREQCAP__VALIDATION__DATA_DOCS="false", **env)
    as_of = parse_as_of(load_ground_truth(root / "raw")["window"]["end"])
    events_dir = root / "raw" / "events"
    report = validate_events_job(str(events_dir), as_of.isoformat(), settings)
    # The users table validation copied beside the clean events, pseudonymized like them (the join must match).
    users_path = Path(report["users_path"])
    build = build_features_job(report["clean_path"], as_of.isoformat(), settings, str(users_path))
    return World(root, settings, as_of, events_dir, users_path, Path(report["clean_path"]), build)
