"""The what-if forecast against what the replay then realizes on fresh traffic (the simulator's truth).

World A (seed 101) is played under the live policy; its logged events (impressions, clicks, conversions after
their delays) are what the platform would have: the curves are fitted on them and the forecast of a candidate
policy is made from them alone. World B (seed 202: new users, new draws) is the coming period: the replay plays
the candidate there, with the simulator's true response. One candidate ad per slot (the logged ad), so a capped
slot stays empty in the replay as the forecast assumes, and hard caps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from freqcap.config import SimulationConfig, load_settings
from freqcap.domain.curves import FloorSpec, fit_config_from_features, fit_curves
from freqcap.domain.evaluation.fitting import replay_events
from freqcap.domain.evaluation.policies import CREATED_AT, ReplayPolicy
from freqcap.domain.evaluation.replay import replay
from freqcap.domain.evaluation.traffic import AuctionConfig, build_traffic
from freqcap.domain.forecast.project import forecast_policies
from freqcap.domain.policy import parse_policy
from freqcap.domain.simulate.model import simulate_world

USERS, DAYS = 6000, 7
AUCTION = AuctionConfig(candidates=1)


def _policy(version: str, ad: int, campaign: int):
    return parse_policy(
        {
            "version": version,
            "created_at": CREATED_AT.isoformat(),
            "defaults": [
                {"level": "ad", "caps": [{"window": "28d", "max": ad}], "mode": "hard"},
                {"level": "campaign", "caps": [{"window": "28d", "max": campaign}], "mode": "hard"},
            ],
        }
    )


LIVE, CANDIDATE = _policy("live", 12, 30), _policy("candidate", 3, 6)


@pytest.fixture(scope="module")
def forecast_and_realized():
    world_a = simulate_world(SimulationConfig(users=USERS, days=DAYS, seed=101))
    logged = replay(build_traffic(world_a, AUCTION), ReplayPolicy("live", LIVE), record=True)
    ev = replay_events(world_a, logged.log)
    cfg = fit_config_from_features(
        load_settings(environ={}).features, floor=FloorSpec("relative", 0.5), attribution_window="2d"
    )
    table = forecast_policies(ev, fit_curves(ev, cfg), LIVE, CANDIDATE, int(world_a.start_us))

    world_b = simulate_world(SimulationConfig(users=USERS, days=DAYS, seed=202))
    realized = replay(build_traffic(world_b, AUCTION), ReplayPolicy("candidate", CANDIDATE))
    rows = []
    for code, audience in enumerate(world_b.params.audience_names()):
        members = world_b.audience == code
        rows.append(
            {
                "cohort": f"{audience}/all",
                "impressions": realized.user_impressions[members].sum(),
                "conversions": realized.user_conversions[members].sum(),
            }
        )
    rows.append({"cohort": "all", "impressions": realized.impressions, "conversions": realized.conversions})
    return table, pd.DataFrame(rows)


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["impressions", "conversions"])
def test_forecast_interval_holds_what_the_candidate_realizes(forecast_and_realized, metric: str) -> None:
    table, realized = forecast_and_realized
    rows = table[table["metric"] == metric].merge(realized[["cohort", metric]], on="cohort")
    assert len(rows) == 4 * 3  # three audiences and everyone, at each level
    inside = (rows["low"] <= rows[metric]) & (rows[metric] <= rows["high"])
    detail = rows.loc[~inside, ["cohort", "level", "candidate", "low", "high", metric]]
    assert inside.all(), f"outside the stated interval:\n{detail}"
    # the check has teeth: a material change, and intervals much narrower than it
    everyone = rows[rows["cohort"] == "all"]
    assert (everyone["change_pct"] < -0.1).all()
    assert ((everyone["high"] - everyone["low"]) / everyone["candidate"] < 0.3).all()
    assert (everyone["change_high"] < 0).all()


@pytest.mark.slow
def test_forecast_reports_past_cap_share_and_reach(forecast_and_realized) -> None:
    table, _ = forecast_and_realized
    everyone = table[table["cohort"] == "all"].set_index(["level", "metric"])
    # the live policy's caps are not reached on its own traffic; the candidate's ad and campaign caps are
    assert everyone.loc[("ad", "past_cap_share"), "live"] == 0.0
    assert 0.05 < everyone.loc[("ad", "past_cap_share"), "candidate"] < 0.5
    assert everyone.loc[("advertiser", "past_cap_share"), "candidate"] == 0.0
    # no advertiser or campaign pair loses its first impression to an ad or campaign cap of ≥ 3
    assert everyone.loc[("advertiser", "reach"), "change"] == 0
    assert np.isfinite(table["low"]).all()
