"""The deconvolved label on a tiny hand-made training set, against brute force and the EM run on hand-built events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from freqcap.domain.curves.sequences import EventArrays, em_credit, level_sequences
from freqcap.domain.training.credit import deconvolved_label

T0 = datetime(2026, 3, 2, tzinfo=UTC)
H = timedelta(hours=1)
W_US = 7 * 86_400_000_000
LOOKBACK_US = 28 * 86_400_000_000
HALF = {"advertiser": 7 * 86_400e6, "campaign": 3 * 86_400e6, "ad": 86_400e6}

# (user, advertiser, campaign, ad, impression time); conversions: (user, ad, time)
IMPRESSIONS = [
    ("u1", "A", "A1", "a1", T0),
    ("u1", "A", "A1", "a1", T0 + 2 * H),
    ("u1", "A", "A1", "a2", T0 + 3 * H),  # another ad of the same advertiser: a candidate for a1's conversion
    ("u1", "B", "B1", "b1", T0 + 4 * H),  # another advertiser: never a candidate
    ("u2", "A", "A1", "a1", T0 + 1 * H),  # alone before its conversion: gets it whole
    ("u2", "A", "A1", "a1", T0 + 30 * H),  # after every conversion: nothing
    ("u3", "A", "A1", "a1", T0),  # its conversion comes after the window: nothing
]
CONVERSIONS = [("u1", "a1", T0 + 5 * H), ("u2", "a1", T0 + 6 * H), ("u3", "a1", T0 + 8 * 24 * H)]


def _frame() -> pd.DataFrame:
    rows = []
    for i, (u, adv, camp, ad, t) in enumerate(IMPRESSIONS):
        # the training set's conversion_us: the first conversion of (user, ad) at or after t, within the window
        later = sorted(c for cu, cad, c in CONVERSIONS if cu == u and cad == ad and c >= t)
        conv = later[0] if later and later[0] - t < timedelta(days=7) else None
        rows.append(
            {
                "event_id": f"e{i}",
                "user_id": u,
                "advertiser_id": adv,
                "campaign_id": camp,
                "ad_id": ad,
                "impression_ts": pd.Timestamp(t),
                "format": "banner",
                "audience": "x",
                "conversion_us": None if conv is None else int(conv.timestamp() * 1e6),
            }
        )
    frame = pd.DataFrame(rows)
    frame["conversion_us"] = frame["conversion_us"].astype("Int64")
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)  # rows in no particular order


def _label(frame: pd.DataFrame) -> dict[str, float]:
    y = deconvolved_label(frame, attribution_us=W_US, lookback_us=LOOKBACK_US, half_life_us=HALF)
    return dict(zip(frame["event_id"], y, strict=True))


def test_credit_goes_only_to_candidates_and_each_conversion_once():
    frame = _frame()
    y = _label(frame)
    # brute force: the candidates of a conversion are the user's impressions of the same advertiser in [c − W, c]
    adv_of_ad = {ad: adv for _, adv, _, ad, _ in IMPRESSIONS}
    candidates = {
        k: [
            f"e{i}"
            for i, (u, adv, _, _, t) in enumerate(IMPRESSIONS)
            if u == cu and adv == adv_of_ad[cad] and timedelta(0) <= c - t <= timedelta(days=7)
        ]
        for k, (cu, cad, c) in enumerate(CONVERSIONS)
    }
    is_candidate = {e for cands in candidates.values() for e in cands}
    for event_id, value in y.items():
        if event_id not in is_candidate:
            assert value == 0.0, event_id
    # u1's conversion: split over its three impressions of advertiser A, all of them credited something
    assert sorted(candidates[0]) == ["e0", "e1", "e2"]
    assert sum(y[e] for e in candidates[0]) == pytest.approx(1.0)
    assert all(y[e] > 0 for e in candidates[0])
    assert candidates[1] == ["e4"] and y["e4"] == pytest.approx(1.0)  # a lone candidate takes the conversion
    assert y["e3"] == y["e5"] == y["e6"] == 0.0
    assert sum(y.values()) == pytest.approx(2.0)  # one unit per conversion with a candidate within the window


def test_same_credit_as_the_em_on_hand_built_events():
    """The rows-to-events conversion against `em_credit` on arrays built by hand from the same events."""
    frame = _frame()
    y = _label(frame)
    order = sorted(range(len(IMPRESSIONS)), key=lambda i: (IMPRESSIONS[i][0], IMPRESSIONS[i][4]))
    users, advs, camps, ads = ({v: k for k, v in enumerate(sorted({r[j] for r in IMPRESSIONS}))} for j in range(4))
    us = [int(IMPRESSIONS[i][4].timestamp() * 1e6) for i in order]
    # the training set sees a conversion only through an impression of its ad before it within the window
    convs = sorted((users[u], int(c.timestamp() * 1e6), ads[ad]) for u, ad, c in CONVERSIONS[:2])
    camp_of = {ads[r[3]]: camps[r[2]] for r in IMPRESSIONS}
    adv_of = {ads[r[3]]: advs[r[1]] for r in IMPRESSIONS}
    ev = EventArrays(
        imp_user=np.array([users[IMPRESSIONS[i][0]] for i in order], dtype=np.int32),
        imp_ts=np.array(us, dtype=np.int64),
        imp_entity={
            "advertiser": np.array([advs[IMPRESSIONS[i][1]] for i in order], dtype=np.int32),
            "campaign": np.array([camps[IMPRESSIONS[i][2]] for i in order], dtype=np.int32),
            "ad": np.array([ads[IMPRESSIONS[i][3]] for i in order], dtype=np.int32),
        },
        imp_format=np.zeros(len(order), dtype=np.int16),
        click_user=np.zeros(0, dtype=np.int32),
        click_ts=np.zeros(0, dtype=np.int64),
        conv_user=np.array([c[0] for c in convs], dtype=np.int32),
        conv_ts=np.array([c[1] for c in convs], dtype=np.int64),
        conv_entity={
            "ad": np.array([c[2] for c in convs], dtype=np.int32),
            "campaign": np.array([camp_of[c[2]] for c in convs], dtype=np.int32),
            "advertiser": np.array([adv_of[c[2]] for c in convs], dtype=np.int32),
        },
        conv_value=np.full(len(convs), np.nan),
        user_audience=np.zeros(len(users), dtype=np.int16),
        audiences=("x",),
        formats=("banner",),
        n_entities={"advertiser": len(advs), "campaign": len(camps), "ad": len(ads)},
        data_end_us=max(us) + W_US,
    )
    tiers = np.zeros(len(order), dtype=np.int8)
    seqs = {lv: level_sequences(ev, lv, LOOKBACK_US, tiers, HALF[lv]) for lv in ("advertiser", "campaign", "ad")}
    credit = em_credit(ev, W_US, np.ones(len(order), dtype=bool), seqs, candidate_window_us=W_US)
    expected = {f"e{i}": credit.y[k] for k, i in enumerate(order)}
    assert y == pytest.approx(expected)


def _label_until(frame: pd.DataFrame, until: datetime) -> dict[str, float]:
    y = deconvolved_label(
        frame,
        attribution_us=W_US,
        lookback_us=LOOKBACK_US,
        half_life_us=HALF,
        observed_until_us=int(until.timestamp() * 1e6),
    )
    return dict(zip(frame["event_id"], y, strict=True))


def test_conversions_after_the_training_rows_are_not_seen():
    """Cut at 5.5 h: u1's conversion (5 h) counts, u2's (6 h) does not, although e4's row names it."""
    frame = _frame()
    y = _label_until(frame, T0 + 5.5 * H)
    assert y["e4"] == 0.0 and y["e5"] == y["e6"] == y["e3"] == 0.0
    # u1's conversion is still split over its three candidates (one unit), open windows scaled up, never down
    assert all(y[e] > 0 for e in ("e0", "e1", "e2"))
    assert y["e0"] + y["e1"] + y["e2"] > 1.0 + 1e-6  # windows still open at the cut: divided by coverage < 1


def test_a_cut_after_every_window_closed_changes_nothing():
    frame = _frame()
    last = max(t for *_, t in IMPRESSIONS)
    assert _label_until(frame, last + timedelta(days=7, microseconds=1)) == pytest.approx(_label(frame))
