"""The simulator's output honours the event contract and its own catalog."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.simulation_files import SimulationSummary
from freqcap.domain.events import (
    ADS_SCHEMA,
    AUDIENCES,
    EVENT_SCHEMA,
    EVENT_TYPES,
    KNOWN_FORMATS,
    USERS_SCHEMA,
)
from tests.unit.domain.simulate.helpers import read_events, read_truth


@pytest.fixture(scope="module")
def events(default_world: SimulationSummary) -> pd.DataFrame:
    return read_events(default_world.out_dir)


def test_every_partition_has_the_event_schema(default_world: SimulationSummary) -> None:
    files = sorted(default_world.events_dir.glob("date=*/part-0.parquet"))
    assert len(files) == len(default_world.partitions) == 7
    for path in files:
        schema = pq.read_schema(path)
        assert schema.equals(EVENT_SCHEMA), f"{path}: {schema}"
    assert pq.read_schema(default_world.users_path).equals(USERS_SCHEMA)
    assert pq.read_schema(default_world.ads_path).equals(ADS_SCHEMA)


def test_partitions_hold_their_dates_and_the_window(default_world: SimulationSummary, events: pd.DataFrame) -> None:
    _, _, gt = read_truth(default_world.out_dir)
    assert (events["event_ts"].dt.strftime("%Y-%m-%d") == events["date"].astype(str)).all()
    assert events["event_ts"].min() >= pd.Timestamp(gt["window"]["start"])
    assert events["event_ts"].max() < pd.Timestamp(gt["window"]["end"])
    assert str(events["event_ts"].dt.tz) == "UTC"


def test_ids_types_and_values(default_world: SimulationSummary, events: pd.DataFrame) -> None:
    assert events["event_id"].is_unique
    assert events[list(EVENT_SCHEMA.names)].drop(columns="conversion_value").notna().all().all()
    assert set(events["event_type"]) == set(EVENT_TYPES)
    assert set(events["format"]) <= set(KNOWN_FORMATS)
    assert events["format"].nunique() >= 4
    is_conv = events["event_type"] == "conversion"
    assert events.loc[is_conv, "conversion_value"].gt(0).all()
    assert events.loc[~is_conv, "conversion_value"].isna().all()
    counts = events["event_type"].value_counts()
    assert counts["impression"] == default_world.impressions
    assert counts["click"] == default_world.clicks
    assert counts["conversion"] == default_world.conversions
    assert len(events) == default_world.events


def test_every_event_matches_the_ad_catalog(default_world: SimulationSummary, events: pd.DataFrame) -> None:
    ads = pq.read_table(default_world.ads_path).to_pandas()
    assert ads["ad_id"].is_unique
    keyed = events.merge(ads, on="ad_id", how="left", suffixes=("", "_catalog"), validate="many_to_one")
    assert keyed["campaign_id_catalog"].notna().all(), "events reference unknown ads"
    assert (keyed["campaign_id"] == keyed["campaign_id_catalog"]).all()
    assert (keyed["advertiser_id"] == keyed["advertiser_id_catalog"]).all()
    # A campaign belongs to exactly one advertiser.
    assert ads.groupby("campaign_id")["advertiser_id"].nunique().max() == 1


def test_users_and_audiences(default_world: SimulationSummary, events: pd.DataFrame) -> None:
    users = pq.read_table(default_world.users_path).to_pandas()
    assert users["user_id"].is_unique and len(users) == 3000
    assert set(events["user_id"]) <= set(users["user_id"])
    assert set(users["audience"]) == set(AUDIENCES)


def test_clicks_follow_their_impression(events: pd.DataFrame) -> None:
    """Each click has an impression of the same user and ad a few seconds before it."""
    imps = events[events["event_type"] == "impression"].sort_values("event_ts")
    clicks = events[events["event_type"] == "click"].sort_values("event_ts")
    matched = pd.merge_asof(
        clicks,
        imps[["event_ts", "user_id", "ad_id", "format"]].rename(columns={"format": "imp_format"}),
        on="event_ts",
        by=["user_id", "ad_id"],
        direction="backward",
        tolerance=pd.Timedelta("2min"),
    )
    assert matched["imp_format"].notna().all()
    assert (matched["imp_format"] == matched["format"]).all()


def test_conversions_are_last_touch_and_truncated(default_world: SimulationSummary, events: pd.DataFrame) -> None:
    truth, _, gt = read_truth(default_world.out_dir)
    by_id = events.set_index("event_id")
    caused = truth[truth["conversion_event_id"].notna()]
    conv = by_id.loc[caused["conversion_event_id"]]
    causal = by_id.loc[caused["event_id"]]
    assert (conv["event_type"] == "conversion").all() and (causal["event_type"] == "impression").all()
    assert (conv["user_id"].to_numpy() == causal["user_id"].to_numpy()).all()
    assert (conv["advertiser_id"].to_numpy() == causal["advertiser_id"].to_numpy()).all()
    assert (conv["event_ts"].to_numpy() > causal["event_ts"].to_numpy()).all()
    assert len(caused) == default_world.conversions  # every emitted conversion has exactly one causal impression

    # Last touch, recomputed: the user's last impression of that advertiser at or before the conversion.
    imps = events[events["event_type"] == "impression"].sort_values("event_ts")
    convs = events[events["event_type"] == "conversion"].sort_values("event_ts")
    last = pd.merge_asof(
        convs,
        imps[["event_ts", "user_id", "advertiser_id", "ad_id", "campaign_id"]],
        on="event_ts",
        by=["user_id", "advertiser_id"],
        direction="backward",
        suffixes=("", "_last"),
    )
    assert (last["ad_id"] == last["ad_id_last"]).all()
    assert (last["campaign_id"] == last["campaign_id_last"]).all()
    # Attribution sometimes moves credit away from the causal ad (later impressions of the same advertiser).
    assert 0 < (conv["ad_id"].to_numpy() != causal["ad_id"].to_numpy()).mean() < 0.6

    # Conversions after the end of the window stay latent.
    end = pd.Timestamp(gt["window"]["end"])
    latent = truth[truth["converted"]]
    emitted = latent["conversion_event_id"].notna()
    assert (latent.loc[emitted, "conversion_ts"] < end).all()
    assert (latent.loc[~emitted, "conversion_ts"] >= end).all()
    assert (~emitted).sum() == gt["counts"]["conversions_truncated"] > 0
    assert truth.loc[~truth["converted"], "conversion_ts"].isna().all()
    delay_h = (conv["event_ts"].to_numpy() - causal["event_ts"].to_numpy()) / np.timedelta64(1, "h")
    assert 1 < np.median(delay_h) < 24 and (delay_h > 24).mean() > 0.03
