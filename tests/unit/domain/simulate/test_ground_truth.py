"""ground_truth.json is the truth: checked against an independent brute-force recomputation from events."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from freqcap.adapters.simulation_files import SimulationSummary, load_ground_truth
from freqcap.domain.simulate import cap_from_curve, true_cap
from tests.unit.domain.simulate.helpers import LEVELS, g_of

# Fixed cohorts: (user, entity) pairs with at least K exposures of the entity, followed through n = 1..K.
COHORT_K = {"advertiser": 10, "campaign": 8, "ad": 6}
Z_LIMIT = 4.0  # per (level, n) cell; ~25 cells, so a false alarm has probability ~1e-3


def test_layout_and_keys(default_world: SimulationSummary) -> None:
    gt = load_ground_truth(default_world.out_dir)
    assert gt == json.loads(default_world.ground_truth_path.read_text())
    for key in (
        "seed",
        "config",
        "window",
        "model",
        "response_function",
        "formats",
        "curves",
        "audiences",
        "survivorship",
        "default_floor",
        "floors",
        "counts",
        "attribution",
        "delays",
    ):
        assert key in gt, key
    assert gt["seed"] == 11 and gt["config"]["users"] == 3000
    assert gt["floors"] == [0.3, 0.4, 0.5, 0.6, 0.7] and gt["default_floor"] == 0.5
    assert gt["counts"]["conversions"] == default_world.conversions
    for audience in ("high_intent", "returning", "cold"):
        halves = [gt["curves"][audience][lv]["half_life_days"] for lv in LEVELS]
        assert halves == sorted(halves, reverse=True), "advertiser recovers slowest, ad fastest"
        for level in LEVELS:
            curve = gt["curves"][audience][level]
            assert curve["n"] == list(range(1, 31))
            assert set(curve["true_caps"]) == {"0.3", "0.4", "0.5", "0.6", "0.7"}
            assert curve["true_cap"] == curve["true_caps"]["0.5"]


def test_declared_curves_follow_the_formula(default_world: SimulationSummary) -> None:
    gt = load_ground_truth(default_world.out_dir)
    mean_phi = sum(f["share"] * f["conv_multiplier"] for f in gt["formats"].values()) / sum(
        f["share"] for f in gt["formats"].values()
    )
    for audience, levels in gt["curves"].items():
        b = gt["audiences"][audience]["baseline_mean"]
        for curve in levels.values():
            g = [g_of(n, **curve["params"]) for n in curve["n"]]
            assert np.allclose(curve["g"], g, rtol=1e-12)
            assert np.allclose(curve["marginal_rate"], [b * mean_phi * x for x in g], rtol=1e-12)


def _brute_force_cap(rates: list[float], floor: float) -> int:
    cap = 0
    for n in range(1, len(rates) + 1):
        if all(r >= floor * rates[0] for r in rates[:n]):
            cap = n
    return cap


def test_true_cap_brute_force(default_world: SimulationSummary) -> None:
    gt = load_ground_truth(default_world.out_dir)
    for audience, levels in gt["curves"].items():
        for level, curve in levels.items():
            for floor in (0.3, 0.4, 0.5, 0.6, 0.7, 0.25, 0.9, 1.0):
                expected = _brute_force_cap(curve["marginal_rate"], floor)
                assert true_cap(gt, audience, level, floor) == expected, (audience, level, floor)
                key = f"{floor:g}"
                if key in curve["true_caps"]:
                    assert curve["true_caps"][key] == expected
            assert true_cap(gt, audience, level) == curve["true_cap"]
            assert 1 <= curve["true_cap"] < 30


def test_true_cap_edges() -> None:
    assert cap_from_curve([1.0, 0.9, 0.4, 0.8], 0.5) == 2  # stops at the first crossing
    assert cap_from_curve([1.0, 1.1, 0.9], 0.5) == 3  # never crosses: the table length
    with pytest.raises(ValueError):
        cap_from_curve([1.0, 0.5], 0.0)
    gt = {"default_floor": 0.5, "curves": {"cold": {"ad": {"marginal_rate": [2.0, 1.5, 0.9]}}}}
    assert true_cap(gt, "cold", "ad") == 2
    with pytest.raises(KeyError):
        true_cap(gt, "warm", "ad")


def test_exposure_counts_match_brute_force(boosted_frame) -> None:
    frame, _ = boosted_frame
    for level in LEVELS:
        assert (frame[f"bf_count_{level}"] == frame[f"count_{level}"]).all(), level
        assert np.allclose(frame[f"bf_n_eff_{level}"], frame[f"n_eff_{level}"], rtol=1e-9, atol=1e-9), level
    # Recovery is real and fastest at ad level: by the 5th+ exposure n_eff is well below the ordinal count.
    ratio = {lv: (frame[f"n_eff_{lv}"] / frame[f"count_{lv}"])[frame[f"count_{lv}"] >= 5].median() for lv in LEVELS}
    assert ratio["ad"] < 0.5 and ratio["ad"] < ratio["campaign"] < ratio["advertiser"] < 0.95, ratio


def test_probabilities_match_ground_truth_prediction(boosted_frame) -> None:
    frame, _ = boosted_frame
    assert np.allclose(frame["pred"], frame["p_conv"], rtol=1e-9, atol=0)


def _z(grouped, prediction: str) -> pd.Series:
    """(observed − expected) / sd per group; the variance is the true model's binomial variance."""
    observed = grouped["converted"].sum()
    expected = grouped[prediction].sum()
    variance = grouped["pred"].apply(lambda p: float((p * (1 - p)).sum()))
    return (observed - expected) / np.sqrt(variance)


def _cohort(frame: pd.DataFrame, level: str):
    k = COHORT_K[level]
    n = frame[f"bf_count_{level}"]
    cohort = frame[(frame[f"final_{level}"] >= k) & (n <= k)]
    grouped = cohort.groupby(f"bf_count_{level}")
    assert grouped.ngroups == k and (grouped.size() >= 1000).all(), "cohort too small for the test"
    return cohort, grouped


@pytest.mark.parametrize("level", LEVELS)
def test_fixed_cohort_conversions_match_declared_curves(boosted_frame, level: str) -> None:
    """Realized (causal) conversions at each exposure index n match the prediction within sampling error."""
    frame, _ = boosted_frame
    cohort, grouped = _cohort(frame, level)
    z = _z(grouped, "pred")
    assert z.abs().max() < Z_LIMIT, z.round(2).to_dict()
    overall = (cohort["converted"].sum() - cohort["pred"].sum()) / np.sqrt(
        (cohort["pred"] * (1 - cohort["pred"])).sum()
    )
    assert abs(overall) < 3.5, overall
    # The realized curve really falls: the K-th exposure converts clearly less than the first.
    rate = grouped["converted"].mean()
    assert rate.iloc[-1] < 0.8 * rate.iloc[0]


@pytest.mark.parametrize("level", LEVELS)
def test_cohort_check_rejects_a_world_without_fatigue(boosted_frame, level: str) -> None:
    """The same check fails for a wrong model (g ≡ 1): it has the power to catch a broken simulator."""
    frame, _ = boosted_frame
    _, grouped = _cohort(frame, level)
    z = _z(grouped, "pred_flat")
    assert z.min() < -Z_LIMIT, z.round(2).to_dict()


N_EFF_BINS = [1.0, 1.0001, 2, 3, 4, 6, 9, 14, 20, np.inf]


@pytest.mark.parametrize("level", LEVELS)
def test_calibrated_along_effective_exposure(boosted_frame, level: str) -> None:
    """All impressions, binned by the brute-force n_eff of one level: realized ≈ predicted in every bin; and
    dropping that level's curve from the prediction (other levels kept) is rejected — each level matters."""
    frame, _ = boosted_frame
    grouped = frame.groupby(pd.cut(frame[f"bf_n_eff_{level}"], N_EFF_BINS, right=False), observed=True)
    assert grouped.ngroups == len(N_EFF_BINS) - 1 and (grouped.size() >= 1000).all()
    z = _z(grouped, "pred")
    assert z.abs().max() < Z_LIMIT, z.round(2).tolist()
    wrong = _z(grouped, f"pred_without_{level}")
    assert wrong.min() < -Z_LIMIT, wrong.round(2).tolist()
