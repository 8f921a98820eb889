from __future__ import annotations

from pathlib import Path

from freqcap.adapters.simulation_files import simulate_to_dir
from freqcap.config import SimulationConfig


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_config_gives_byte_identical_output(tmp_path: Path) -> None:
    config = SimulationConfig(users=600, days=3, seed=3)
    a = simulate_to_dir(tmp_path / "a", config)
    b = simulate_to_dir(tmp_path / "b", config)
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    assert any(name.startswith("events/date=") for name in files_a)
    for name in files_a:
        assert files_a[name] == files_b[name], f"{name} differs between two runs of the same config"
    assert (a.impressions, a.clicks, a.conversions) == (b.impressions, b.clicks, b.conversions)


def test_different_seed_gives_different_events(tmp_path: Path) -> None:
    a = simulate_to_dir(tmp_path / "a", SimulationConfig(users=600, days=3, seed=3))
    b = simulate_to_dir(tmp_path / "b", SimulationConfig(users=600, days=3, seed=4))
    first_a = (a.events_dir / f"date={a.partitions[0]}" / "part-0.parquet").read_bytes()
    first_b = (b.events_dir / f"date={b.partitions[0]}" / "part-0.parquet").read_bytes()
    assert first_a != first_b
    assert (a.impressions, a.conversions) != (b.impressions, b.conversions)


def test_rerun_into_same_directory_replaces_partitions(tmp_path: Path) -> None:
    simulate_to_dir(tmp_path, SimulationConfig(users=300, days=4, seed=1))
    again = simulate_to_dir(tmp_path, SimulationConfig(users=300, days=2, seed=1))
    on_disk = sorted(p.name for p in (tmp_path / "events").iterdir())
    assert on_disk == [f"date={d}" for d in again.partitions]
