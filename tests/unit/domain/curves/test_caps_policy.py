"""Floors against brute force, cap selection with noise, fallback, the policy file, the cross-check hook."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from freqcap.domain.curves import FloorSpec, compare_model_curves, select_cap
from freqcap.domain.curves.core import FitConfig, propose_caps
from freqcap.domain.curves.crosscheck import empirical_points
from freqcap.domain.curves.estimate import smooth_curve
from freqcap.domain.curves.policy import build_policy
from freqcap.domain.policy import dump_policy, load_policy, parse_policy

RATES = np.array([0.020, 0.022, 0.019, 0.016, 0.013, 0.011, 0.009, 0.0075, 0.006, 0.005])


def brute_cap(rates, floor_rate) -> int:
    cap = 0
    for r in rates:
        if r < floor_rate:
            break
        cap += 1
    return cap


@pytest.mark.parametrize("r", [0.3, 0.5, 0.7, 1.0])
def test_relative_floor(r: float) -> None:
    spec = FloorSpec("relative", r)
    floor_rate = spec.rate(RATES[0])
    assert floor_rate == pytest.approx(r * RATES[0])
    assert select_cap(RATES, floor_rate).cap == brute_cap(RATES, r * RATES[0])


@pytest.mark.parametrize("rate", [0.0, 0.006, 0.0125, 0.021, 0.03])
def test_absolute_floor(rate: float) -> None:
    d = select_cap(RATES, FloorSpec("absolute", rate).rate(RATES[0]))
    assert d.cap == brute_cap(RATES, rate)
    assert d.censored == (d.cap == len(RATES))


@pytest.mark.parametrize(("cost", "value"), [(0.5, 45.0), (0.2, 20.0), (1.5, 45.0)])
def test_economic_floor(cost: float, value: float) -> None:
    spec = FloorSpec("economic", 0.0, cost_per_impression=cost, value_per_conversion=value)
    d = select_cap(RATES, spec.rate(RATES[0]))
    assert d.cap == brute_cap(RATES, cost / value)  # value × rate ≥ cost
    # the value defaults to the data's mean conversion value
    assert FloorSpec("economic", 0.0, cost_per_impression=cost).rate(RATES[0], mean_value=value) == cost / value


def test_floor_validation() -> None:
    with pytest.raises(ValueError):
        FloorSpec("relative", 1.5)
    with pytest.raises(ValueError):
        FloorSpec("economic", 0.0)
    with pytest.raises(ValueError):
        FloorSpec("economic", 0.0, cost_per_impression=1.0).rate(0.01, mean_value=None)


def _curve(rates, support=5000, conv=None) -> pd.DataFrame:
    rates = np.asarray(rates, dtype=float)
    conv = np.full(len(rates), 200.0) if conv is None else np.asarray(conv, dtype=float)
    c = pd.DataFrame(
        {
            "n": np.arange(1, len(rates) + 1),
            "rate": rates,
            "ci_low": rates * 0.8,
            "ci_high": rates * 1.25,
            "support": support,
            "ratio": rates / rates[0],
            "first_rate": rates[0],
            "conversions": conv,
            "entry_conversions": conv,
            "naive_rate": rates,
        }
    )
    return smooth_curve(c)


def test_one_noisy_bin_does_not_set_the_cap() -> None:
    floor_rate = 0.5 * RATES[0]
    assert select_cap(_curve(RATES)["rate_smooth"].to_numpy(), floor_rate).cap == 6
    for pos, value in ((2, 0.004), (3, 0.008)):
        dip = RATES.copy()
        dip[pos] = value  # one noisy bin below the floor between points well above it
        assert select_cap(dip, floor_rate).cap == pos  # read raw, the dip would end the curve there
        assert select_cap(_curve(dip)["rate_smooth"].to_numpy(), floor_rate).cap in (5, 6)


def _config(**kw) -> FitConfig:
    return FitConfig(
        window_us=dict.fromkeys(("advertiser", "campaign", "ad"), 28 * 86_400_000_000),
        window_label=dict.fromkeys(("advertiser", "campaign", "ad"), "28d"),
        half_life_us=dict.fromkeys(("advertiser", "campaign", "ad"), 86_400e6),
        levels=("ad",),
        **kw,
    )


def _curves() -> pd.DataFrame:
    parts = []
    for label, kind, rates, support, conv in [
        ("cold/impression_only", "cohort", RATES, 9000, 300),
        ("cold/engaged", "cohort", RATES * 1.5, 40, 3),  # tiny: 40 first exposures, 3 conversions
        ("cold/all", "audience", RATES * 0.9, 12000, 400),
        ("returning/engaged", "cohort", RATES, 60, 2),  # tiny, and its audience is tiny too
        ("returning/all", "audience", RATES, 80, 4),
        ("all", "global", np.r_[RATES[:3], RATES[3:] * 0.5], 30000, 900),
    ]:
        c = _curve(rates, support, np.full(len(rates), float(conv)))
        c.insert(0, "cohort", label)
        c.insert(1, "level", "ad")
        c["kind"] = kind
        parts.append(c)
    return pd.concat(parts, ignore_index=True)


def test_tiny_cohort_falls_back_to_its_parent_and_is_flagged() -> None:
    published, caps = propose_caps(_curves(), ("cold", "returning"), _config(), None)
    caps = caps.set_index("cohort")
    own = caps.loc["cold/impression_only"]
    assert own["fallback"] == "none" and own["cap"] == 6
    tiny = caps.loc["cold/engaged"]
    assert tiny["fallback"] == "audience" and tiny["source"] == "cold/all"
    assert tiny["cap"] == caps.loc["cold/all", "cap"] and "fell back" in tiny["reason"]
    assert tiny["own_support"] == 40
    deeper = caps.loc["returning/engaged"]
    assert deeper["fallback"] == "global" and deeper["cap"] == caps.loc["all", "cap"] == 3
    # the published curve of a fallback cohort is its parent's, flagged
    pub = published[published["cohort"] == "cold/engaged"]
    assert (pub["fallback"] == "audience").all() and (pub["source"] == "cold/all").all()
    parent = published[published["cohort"] == "cold/all"]
    assert np.allclose(pub["rate"].to_numpy(), parent["rate"].to_numpy())


def test_policy_validates_and_round_trips(tmp_path) -> None:
    _, caps = propose_caps(_curves(), ("cold", "returning"), _config(), None)
    policy = build_policy(caps, source={"test": True})
    path = dump_policy(policy, tmp_path / "policy.yaml")
    again = load_policy(path)
    assert again == policy
    assert parse_policy(path.read_text()).version == policy.version
    rule = again.rules_for("cold", "impression_only", "ad")[0]
    assert rule.caps[0].window == "28d" and rule.caps[0].max == 6
    assert rule.provenance["fallback"] == "none"
    assert again.rules_for("cold", "engaged", "ad")[0].provenance["fallback"] == "audience"
    assert [d.caps[0].max for d in again.defaults] == [3]  # defaults from the global fit
    assert again.rules_for("unknown", "converter", "ad")[0].caps[0].max == 3
    # the same caps give the same version
    assert build_policy(caps).version == policy.version


def test_crosscheck_flags_disagreement_beyond_the_ci() -> None:
    curves = _curves()
    curves = curves[curves["cohort"] == "cold/impression_only"]
    model = curves[["cohort", "level", "n", "rate"]].copy()
    same = compare_model_curves(model, curves, relative_floor=0.5)
    assert not same["flagged"].any() and same["outside"].iloc[0] == 0
    flat = model.assign(rate=RATES[0])  # a model that sees no fatigue at all
    flags = compare_model_curves(flat, curves, relative_floor=0.5)
    assert flags["flagged"].all()
    assert flags["cap_model"].iloc[0] == len(RATES) and flags["cap_empirical"].iloc[0] == 6
    missing = compare_model_curves(model.assign(cohort="other/engaged"), curves)
    assert missing["flagged"].all() and "only in" in missing["reason"].iloc[0]


def test_crosscheck_skips_fallback_curves_and_thin_model_points() -> None:
    curves = _curves()
    curves = curves[curves["cohort"].isin(["cold/impression_only", "cold/engaged"])].copy()
    curves["fallback"] = np.where(curves["cohort"] == "cold/engaged", "audience", "none")
    flat = curves[["cohort", "level", "n"]].assign(rate=RATES[0] * 3, support=1000)
    flags = compare_model_curves(flat, curves).set_index("cohort")
    assert flags.loc["cold/impression_only", "flagged"] and flags.loc["cold/impression_only", "compared"]
    borrowed = flags.loc["cold/engaged"]  # its curve is its parent's: never flagged, not compared
    assert not borrowed["flagged"] and not borrowed["compared"] and "fallback" in borrowed["reason"]
    # the same disagreeing model, but every point beyond n = 1 rests on 5 rows: only n = 1 is compared
    thin = flat.assign(support=np.where(flat["n"] == 1, 1000, 5))
    one = compare_model_curves(thin, curves).set_index("cohort").loc["cold/impression_only"]
    assert one["points"] == 1


def test_an_empirical_curve_is_compared_with_another_by_the_same_rule() -> None:
    """`empirical_points`: a fit's own curves as a "model" (the yardstick of a model trained on part of the data)."""
    curves = _curves()
    curves = curves[curves["cohort"].isin(["cold/impression_only", "cold/engaged"])].copy()
    curves["fallback"] = np.where(curves["cohort"] == "cold/engaged", "audience", "none")
    points = empirical_points(curves)
    assert set(points.columns) == {"cohort", "level", "n", "rate", "support"}
    assert set(points["cohort"]) == {"cold/impression_only"}  # a fallback is its parent's curve, not its own
    own = curves[curves["cohort"] == "cold/impression_only"]
    assert points["rate"].tolist() == own["rate"].tolist() and points["support"].tolist() == own["support"].tolist()
    # another part of the data whose curve falls faster from n = 4 on: outside the reference's CI where brute force
    # says so, and flagged by the rule's thresholds (more than 20 % of the points, at least 2)
    steeper = own.assign(rate=np.where(own["n"] >= 4, own["rate"] * 0.6, own["rate"]))
    flags = compare_model_curves(empirical_points(steeper), own).set_index("cohort").loc["cold/impression_only"]
    bounds = zip(steeper["rate"], own["ci_low"], own["ci_high"], strict=True)
    outside = sum(not (lo <= r <= hi) for r, lo, hi in bounds)
    assert outside == len(own) - 3 and flags["outside"] == outside and flags["flagged"]
    assert not compare_model_curves(points, own)["flagged"].any()


def test_a_disagreement_is_split_into_level_and_shape() -> None:
    """A model at the right shape but another height is flagged by level only; one at the right height whose curve
    falls faster is flagged by shape. Checked against the points counted by hand."""
    curves = _curves()
    own = curves[curves["cohort"] == "cold/impression_only"]
    points = empirical_points(own)
    # 30 % below at every n: the first point leaves the CI, the re-anchored curve is the empirical one
    lower = compare_model_curves(points.assign(rate=points["rate"] * 0.7), own).iloc[0]
    first = own[own["n"] == 1].iloc[0]
    assert lower["flagged"] and lower["level_outside"] and not (first["ci_low"] <= first["rate"] * 0.7)
    assert lower["level_log_ratio"] == pytest.approx(np.log(0.7))
    assert lower["shape_points"] == len(own) - 1 and lower["shape_outside"] == 0 and not lower["shape_flagged"]
    # the right first rate, 40 % lower from n = 4 on: the same count of points outside, by shape
    steeper = points.assign(rate=np.where(points["n"] >= 4, points["rate"] * 0.6, points["rate"]))
    split = compare_model_curves(steeper, own).iloc[0]
    by_hand = sum(
        not (lo <= r <= hi)
        for n, r, lo, hi in zip(own["n"], steeper["rate"], own["ci_low"], own["ci_high"], strict=True)
        if n >= 2
    )
    assert by_hand >= 2 and split["shape_outside"] == by_hand and split["shape_flagged"]
    assert split["level_log_ratio"] == pytest.approx(0.0) and not split["level_outside"]
    # both at once: re-anchoring takes the level out before the shape is judged
    both = compare_model_curves(steeper.assign(rate=steeper["rate"] * 0.7), own).iloc[0]
    assert both["level_outside"] and both["shape_outside"] == by_hand and both["shape_flagged"]
    # a pair not compared (its empirical curve is a fallback) has neither
    fallback = own.assign(fallback="audience")
    none = compare_model_curves(points, fallback).iloc[0]
    assert not none["compared"] and not none["shape_flagged"] and none["shape_points"] == 0
