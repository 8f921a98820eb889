"""The simulated traffic looks like ad traffic: heavy tails, a hierarchy, repetition, a day/night rhythm."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.simulation_files import SimulationSummary
from tests.unit.domain.simulate.helpers import read_events, read_truth


@pytest.fixture(scope="module")
def imps(default_world: SimulationSummary) -> pd.DataFrame:
    events = read_events(default_world.out_dir)
    users = pq.read_table(default_world.users_path).to_pandas()
    return events[events["event_type"] == "impression"].merge(users, on="user_id")


def test_activity_is_heavy_tailed(imps: pd.DataFrame) -> None:
    per_user = imps.groupby("user_id").size().sort_values(ascending=False)
    top = per_user.iloc[: len(per_user) // 10].sum() / per_user.sum()
    assert top > 0.40, f"top 10% of users have only {top:.0%} of impressions"
    assert per_user.max() > 20 * per_user.median()


def test_diurnal_pattern(imps: pd.DataFrame) -> None:
    by_hour = imps["event_ts"].dt.hour.value_counts().reindex(range(24), fill_value=0)
    assert by_hour.max() / max(by_hour.min(), 1) > 4
    assert by_hour.idxmax() in range(17, 23) and by_hour.idxmin() in range(1, 7)


def test_audience_shares(default_world: SimulationSummary) -> None:
    users = pq.read_table(default_world.users_path).to_pandas()
    shares = users["audience"].value_counts(normalize=True)
    for audience, expected in {"high_intent": 0.15, "returning": 0.35, "cold": 0.50}.items():
        assert abs(shares[audience] - expected) < 0.03, (audience, shares[audience])


def test_uneven_hierarchy(default_world: SimulationSummary) -> None:
    ads = pq.read_table(default_world.ads_path).to_pandas()
    assert ads["advertiser_id"].nunique() == 40
    campaigns = ads.groupby("advertiser_id")["campaign_id"].nunique()
    ads_per_campaign = ads.groupby("campaign_id").size()
    assert campaigns.min() == 1 and campaigns.max() >= 8
    assert ads_per_campaign.min() == 1 and ads_per_campaign.max() >= 8


def test_repeated_exposures_within_a_week(imps: pd.DataFrame) -> None:
    """Per user, the most repeated advertiser / campaign / ad in a week commonly reaches 5-15 exposures."""
    week = imps[imps["event_ts"] < imps["event_ts"].min().normalize() + pd.Timedelta(days=7)]
    for level, median_at_least in {"advertiser": 6, "campaign": 5, "ad": 3}.items():
        top = week.groupby(["user_id", f"{level}_id"]).size().groupby("user_id").max()
        assert top.median() >= median_at_least, (level, top.median())
        assert top.quantile(0.75) >= 8, (level, top.quantile(0.75))


def test_conversion_and_click_rates_are_plausible(default_world: SimulationSummary) -> None:
    cvr = default_world.conversions / default_world.impressions
    ctr = default_world.clicks / default_world.impressions
    assert 0.004 < cvr < 0.02, cvr
    assert 0.004 < ctr < 0.03, ctr


def test_audiences_convert_and_fatigue_differently(default_world: SimulationSummary, imps: pd.DataFrame) -> None:
    truth, _, gt = read_truth(default_world.out_dir)
    rates = imps.merge(truth[["event_id", "converted"]], on="event_id").groupby("audience")["converted"].mean()
    assert rates["high_intent"] > rates["returning"] > rates["cold"]
    for level in gt["levels"]:
        caps = {a: gt["curves"][a][level]["true_cap"] for a in gt["curves"]}
        assert caps["high_intent"] > caps["returning"] > caps["cold"], (level, caps)
    # Wear-in for the warm audiences at campaign level, first impression best for cold ones.
    assert gt["curves"]["high_intent"]["campaign"]["g"][1] > 1.0
    assert max(gt["curves"]["cold"]["ad"]["g"]) == gt["curves"]["cold"]["ad"]["g"][0] == 1.0


def test_formats_differ_in_response(boosted_frame) -> None:
    frame, gt = boosted_frame
    mult = {name: f["conv_multiplier"] for name, f in gt["formats"].items()}
    assert len(set(mult.values())) >= 4
    # Realized / expected-with-flat-format ratio recovers the multiplier ordering (search best, reels worst).
    norm = frame["pred"] / frame["format"].map(mult)
    ratio = frame.groupby("format")["converted"].sum() / norm.groupby(frame["format"]).sum()
    assert ratio.idxmax() == "search" and ratio.idxmin() == "reels"
    assert np.isclose(ratio["search"] / ratio["reels"], mult["search"] / mult["reels"], rtol=0.3)
