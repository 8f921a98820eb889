"""Tiny simulated worlds and their traffic, shared by the evaluation unit tests (built once per session)."""

from __future__ import annotations

import pytest

from freqcap.config import SimulationConfig
from freqcap.domain.evaluation.traffic import AuctionConfig, Traffic, build_traffic
from freqcap.domain.simulate import ModelParams, simulate_world


def boosted(factor: float = 8.0) -> ModelParams:
    """Default behaviour with conversion and click propensities × factor, so that tiny worlds have signal tiers."""
    base = ModelParams()
    audiences = {
        n: a.model_copy(update={"baseline_mean": a.baseline_mean * factor, "ctr_mean": min(a.ctr_mean * factor, 0.5)})
        for n, a in base.audiences.items()
    }
    return base.model_copy(update={"audiences": audiences})


@pytest.fixture(scope="session")
def tiny_traffic() -> Traffic:
    """~40 users × 3 days (a few thousand opportunities) with frequent clicks and conversions."""
    world = simulate_world(SimulationConfig(users=40, days=3, seed=11), boosted())
    return build_traffic(world, AuctionConfig(candidates=4), seed=11)


@pytest.fixture(scope="session")
def small_traffic() -> Traffic:
    """~300 users × 7 days with conversions × 3: enough for the curve fit to propose per-audience caps."""
    world = simulate_world(SimulationConfig(users=300, days=7, seed=5), boosted(3.0))
    return build_traffic(world, AuctionConfig(), seed=5)
