"""The personalized policy as the product would propose it: `freqcap curves fit` on the baseline traffic.

The baseline (no cap) replay's log is turned into the events the platform would have logged — impressions of
the shown ads, clicks and conversions at their event times (after their delays; events after the end of the
world are not emitted), conversions attributed last-touch to the user's last impression of the same advertiser
at or before the conversion, like the simulator's — as in-memory `EventArrays`, the input of
`freqcap.domain.curves.core.fit_curves`. The fit and `freqcap.domain.curves.policy.build_policy` are the very functions
`freqcap curves fit` runs (`fit_curves_to_dir` minus the Parquet round trip), so the caps are the ones the
product would propose from that traffic. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freqcap.config import FeaturesConfig
from freqcap.domain.curves import FloorSpec, fit_config_from_features, fit_curves
from freqcap.domain.curves.core import CurveFit
from freqcap.domain.curves.policy import PenaltyShape, build_policy
from freqcap.domain.curves.sequences import EventArrays, grouped_search
from freqcap.domain.evaluation.policies import CREATED_AT
from freqcap.domain.evaluation.replay import ReplayLog
from freqcap.domain.evaluation.traffic import entity_of
from freqcap.domain.events import LEVELS
from freqcap.domain.policy import Policy
from freqcap.domain.simulate.model import World


def _n_entities(world: World) -> dict[str, int]:
    cat = world.catalog
    return {"advertiser": cat.n_advertisers, "campaign": cat.n_campaigns, "ad": cat.n_ads}


def replay_events(world: World, log: ReplayLog) -> EventArrays:
    """The events the platform would have logged from a replay (see the module docstring)."""
    shown = np.flatnonzero(log.shown_ad >= 0)  # world order: (user, time)
    imp_user = world.imp_user[shown].astype(np.int32)
    imp_ts = world.imp_ts[shown]
    ads = log.shown_ad[shown]
    imp_entity = {lv: entity_of(world, lv, ads).astype(np.int32) for lv in LEVELS}

    def events(flag: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.flatnonzero(flag & (ts < world.end_us))
        order = np.lexsort((ts[idx], world.imp_user[idx]))
        idx = idx[order]
        return idx, world.imp_user[idx].astype(np.int32), ts[idx]

    _, click_user, click_ts = events(log.clicked, log.click_ts)
    conv_src, conv_user, conv_ts = events(log.converted, log.conv_ts)

    # Last touch: the user's last impression of the converting ad's advertiser at or before the conversion.
    n_ent = _n_entities(world)
    adv = imp_entity["advertiser"]
    key = imp_user.astype(np.int64) * n_ent["advertiser"] + adv
    order = np.argsort(key, kind="stable")  # impressions are time-ordered per user, so per (user, advertiser) too
    conv_adv = entity_of(world, "advertiser", log.shown_ad[conv_src])
    conv_key = conv_user.astype(np.int64) * n_ent["advertiser"] + conv_adv
    pos = grouped_search(key[order], imp_ts[order], conv_key, conv_ts, "right") - 1
    touch = order[pos]
    if len(touch) and not np.array_equal(key[touch], conv_key):
        raise AssertionError("last-touch attribution left a (user, advertiser) pair")  # the causal imp exists
    return EventArrays(
        imp_user=imp_user,
        imp_ts=imp_ts,
        imp_entity=imp_entity,
        imp_format=world.imp_format[shown].astype(np.int16),
        click_user=click_user,
        click_ts=click_ts,
        conv_user=conv_user,
        conv_ts=conv_ts,
        conv_entity={lv: imp_entity[lv][touch] for lv in LEVELS},
        conv_value=np.full(len(conv_ts), np.nan),
        user_audience=world.audience.astype(np.int16),
        audiences=world.params.audience_names(),
        formats=world.params.format_names(),
        n_entities=n_ent,
        data_end_us=int(world.end_us),
    )


@dataclass(frozen=True)
class FittedPolicy:
    policy: Policy  # soft rules, as `build_policy` proposes them
    fit: CurveFit
    events: int  # impressions the fit saw


def fit_policy(
    world: World,
    log: ReplayLog,
    features: FeaturesConfig,
    *,
    floor: float = 0.5,
    attribution_window: str = "2d",
    penalty_shape: PenaltyShape = "generic",
) -> FittedPolicy:
    """Fit curves per cohort × level on a replay's events and build the proposed policy (soft penalty of
    `penalty_shape`: see `freqcap.domain.curves.policy`)."""
    ev = replay_events(world, log)
    cfg = fit_config_from_features(features, floor=FloorSpec("relative", floor), attribution_window=attribution_window)
    fit = fit_curves(ev, cfg)
    source = {
        "generator": "freqcap evaluate (curves fit on the baseline replay)",
        "seed": world.config.seed,
        "floor": cfg.floor.label,
        "attribution_window": attribution_window,
    }
    if penalty_shape != "generic":
        source["penalty_shape"] = penalty_shape
    policy = build_policy(
        fit.caps, created_at=CREATED_AT, source=source, penalty_shape=penalty_shape, published=fit.published
    )
    return FittedPolicy(policy, fit, ev.n_impressions)
