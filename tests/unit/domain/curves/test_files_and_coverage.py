"""The file adapter end to end, and CI coverage over repeated simulations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from freqcap.adapters.simulation_files import simulate_to_dir
from freqcap.config import SimulationConfig
from freqcap.domain.curves import CAP_COLUMNS, CURVE_COLUMNS
from freqcap.domain.policy import load_policy
from freqcap.jobs.curves import fit_curves_to_dir
from tests.unit.domain.curves.conftest import boosted_params, cohort_ci_hits, fit_world


def test_fit_curves_to_dir_writes_the_contract(tmp_path) -> None:
    sim = tmp_path / "sim"
    simulate_to_dir(sim, SimulationConfig(users=4000, days=10, seed=2), params=boosted_params())
    out = tmp_path / "out"
    summary = fit_curves_to_dir(sim / "events", out, floor=0.4, attribution_window="2d")
    curves = pd.read_parquet(out / "curves.parquet")
    assert tuple(curves.columns[:7]) == CURVE_COLUMNS
    assert set(curves["level"]) == {"advertiser", "campaign", "ad"}
    assert curves.groupby(["cohort", "level"])["n"].apply(lambda n: list(n) == list(range(1, len(n) + 1))).all()
    assert all("/" in c or c == "all" for c in curves["cohort"])
    assert {"high_intent/impression_only", "returning/all", "all"} <= set(curves["cohort"])
    assert ((curves["ci_low"] <= curves["rate"]) & (curves["rate"] <= curves["ci_high"])).all()
    caps = pd.read_parquet(out / "caps.parquet")
    assert tuple(caps.columns[:7]) == CAP_COLUMNS
    assert len(caps) == 3 * (9 + 3 + 1)
    assert (caps["floor"] == 0.4).all()
    assert tuple(pd.read_csv(out / "caps.csv").columns[:7]) == CAP_COLUMNS
    policy = load_policy(out / "policy.yaml")
    assert policy.version == summary.policy_version
    assert {r.level for r in policy.defaults} == {"advertiser", "campaign", "ad"}
    assert all(c.window == "28d" for r in policy.rules for c in r.caps)
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) == caps["cohort"].nunique() and all(p.stat().st_size > 10_000 for p in pngs)
    doc = json.loads((out / "summary.json").read_text())
    assert doc["attribution"] == "em_deconvolution" and doc["impressions"] == summary.impressions


@pytest.mark.slow
def test_confidence_intervals_cover_the_true_rate(tmp_path) -> None:
    """Over 3 worlds (different seeds), the 95 % CIs of the cohorts' own curves cover the true rate by raw count
    (freqcap.adapters.duckdb.truth_raw, same impressions) at roughly their nominal rate."""
    inside = total = 0
    for seed in (21, 22, 23):
        sim = tmp_path / f"w{seed}"
        simulate_to_dir(sim, SimulationConfig(users=8000, days=14, seed=seed), params=boosted_params())
        world = fit_world(sim)
        hits, points = cohort_ci_hits(world.fit.curves, world.truth)
        inside, total = inside + hits, total + points
    coverage = inside / total
    assert total > 300
    assert 0.85 <= coverage <= 0.99, f"coverage {coverage:.3f} over {total} points"
    assert np.isfinite(coverage)
