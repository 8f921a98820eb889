"""The deconvolved training label: the published curves' EM credit, computed on training-set rows (pure).

The empirical curves credit each conversion by EM deconvolution over the impressions of the same user and
advertiser that could have caused it (`freqcap.domain.curves.sequences.em_credit`); a model trained on last-touch
labels learns another exposure response. `deconvolved_label` runs the same EM on the given rows of a training set
alone (the training split: nothing from the early-stopping or validation rows reaches it), from each row's
`conversion_us` (the conversion behind `label_conversion`), and returns each row's credit clipped to [0, 1], a
fractional label that `binary:logistic` accepts. Both engines' training sets carry the same columns, so the label
is the same whichever engine built the set.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC

import numpy as np
import pandas as pd

from freqcap.domain.curves.maturity import DelayDistribution, coverage
from freqcap.domain.curves.sequences import LEVEL_NAMES, EventArrays, em_credit, level_sequences
from freqcap.domain.training.columns import CONVERSION_TIME_COLUMN


def _codes(values: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int32), tuple(str(u) for u in uniques)


def rows_as_events(frame: pd.DataFrame) -> tuple[EventArrays, np.ndarray]:
    """`EventArrays` of the frame's impressions and the conversions behind their labels, and the position of
    each frame row in the impression order ((user, time)-sorted, as `EventArrays` wants it)."""
    ts = frame["impression_ts"].dt.tz_convert(UTC).to_numpy(dtype="datetime64[us]").astype(np.int64)
    user, _ = _codes(frame["user_id"])
    entity = {lv: _codes(frame[f"{lv}_id"])[0] for lv in LEVEL_NAMES}
    order = np.lexsort((ts, user))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    fmt, formats = _codes(frame["format"])
    audience, audiences = _codes(frame["audience"])
    n_users = int(user.max()) + 1 if len(user) else 0
    user_audience = np.zeros(n_users, dtype=np.int16)
    user_audience[user] = audience
    conv_ts = frame[CONVERSION_TIME_COLUMN].to_numpy(dtype="float64")
    has = np.isfinite(conv_ts)
    # one conversion per (user, ad, time): every impression of the ad before it names the same conversion
    conv = pd.DataFrame({"u": user[has], "a": entity["ad"][has], "t": conv_ts[has].astype(np.int64)})
    conv["c"] = entity["campaign"][has]
    conv["v"] = entity["advertiser"][has]
    conv = conv.drop_duplicates(["u", "a", "t"]).sort_values(["u", "t", "a"], kind="stable")
    end = int(max(ts.max(), conv["t"].max() if len(conv) else ts.max())) if len(ts) else 0
    empty = np.zeros(0, dtype=np.int64)
    ev = EventArrays(
        imp_user=user[order],
        imp_ts=ts[order],
        imp_entity={lv: e[order] for lv, e in entity.items()},
        imp_format=fmt[order].astype(np.int16),
        click_user=empty.astype(np.int32),
        click_ts=empty,
        conv_user=conv["u"].to_numpy(np.int32),
        conv_ts=conv["t"].to_numpy(np.int64),
        conv_entity={
            "ad": conv["a"].to_numpy(np.int32),
            "campaign": conv["c"].to_numpy(np.int32),
            "advertiser": conv["v"].to_numpy(np.int32),
        },
        conv_value=np.full(len(conv), np.nan),
        user_audience=user_audience,
        audiences=audiences,
        formats=formats,
        n_entities={lv: int(e.max()) + 1 if len(e) else 0 for lv, e in entity.items()},
        data_end_us=end,
    )
    return ev, position


def deconvolved_label(
    frame: pd.DataFrame,
    *,
    attribution_us: int,
    lookback_us: int,
    half_life_us: dict[str, float],
    observed_until_us: int | None = None,
) -> np.ndarray:
    """EM credit of each row of `frame` (in frame order) from these rows alone, clipped to [0, 1].

    `lookback_us` is the exposure lookback (the window of `n`), `half_life_us` the feature tiers' half-lives
    per level, as the curves use them. Without `observed_until_us` every row's label counts as complete (the
    training set keeps only impressions whose attribution window closed) and every conversion behind a row is
    credited. With it, only conversions before that time count, as if the data ended there: a conversion seen
    later may have a later cause among impressions the rows do not hold (the training split's conversions
    otherwise land whole on its last impressions, measured +33 % credit on the demo's training rows), and a row
    whose window was still open then gets its credit divided by the learned share of delays it covered (the
    curves' survival weight, `freqcap.domain.curves.maturity.coverage`).
    """
    ev, position = rows_as_events(frame)
    if observed_until_us is None:
        end = int(ev.imp_ts.max()) + attribution_us if ev.n_impressions else 0
    else:
        end = observed_until_us
        keep = ev.conv_ts < observed_until_us
        ev = replace(
            ev,
            conv_user=ev.conv_user[keep],
            conv_ts=ev.conv_ts[keep],
            conv_entity={lv: e[keep] for lv, e in ev.conv_entity.items()},
            conv_value=ev.conv_value[keep],
        )
    if ev.n_impressions == 0 or len(ev.conv_ts) == 0:
        return np.zeros(len(frame))
    ev = replace(ev, data_end_us=max(ev.data_end_us, end) if observed_until_us is None else end)
    tiers = np.zeros(ev.n_impressions, dtype=np.int8)  # the EM's rate model does not use the signal tier
    seqs = {lv: level_sequences(ev, lv, lookback_us, tiers, half_life_us[lv]) for lv in LEVEL_NAMES}
    mature = np.ones(ev.n_impressions, dtype=bool)
    credit = em_credit(ev, attribution_us, mature, seqs, candidate_window_us=attribution_us)
    y = credit.y
    if observed_until_us is not None:
        delays = DelayDistribution(credit.delay_edges_s, credit.delay_density)
        cover = coverage(delays, (end - ev.imp_ts) / 1e6, attribution_us / 1e6)
        y = np.where(cover > 0, y / np.maximum(cover, 1e-12), 0.0)
    return np.clip(y[position], 0.0, 1.0)
