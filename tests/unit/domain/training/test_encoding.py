"""Integer encoding of the categoricals: fixed vocabularies, unknowns as -1, stable dtypes and order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from freqcap.domain.training.encoding import UNKNOWN_CODE, FeatureEncoding, default_encoding


def _rows():
    return pd.DataFrame(
        {
            "format": ["feed", "reels", "hologram", None],
            "audience": ["cold", "high_intent", "unknown", "returning"],
            "signal_tier": ["converter", "impression_only", "engaged", "engaged"],
            "hour_of_day": [0, 5, 23, 12],
            "n_advertiser": [3, 1, 7, 2],
            "n_campaign": [2, 1, 4, 2],
            "n_ad": [1, 1, 2, 1],
            "hours_since_last_advertiser": [1.5, None, 0.25, 3.0],
            "hours_since_last_campaign": [2.0, None, 1.0, 3.0],
            "hours_since_last_ad": [None, None, 1.0, None],
            "user_ad__imp_24h": [0, 1, 2, 3],
            "user_ad__imp_decayed": [0.0, 0.5, 1.5, 2.0],
        }
    )


def test_codes_unknowns_and_dtypes():
    enc = default_encoding(("user_ad__imp_24h", "user_ad__imp_decayed"))
    out = enc.transform(_rows())
    assert list(out.columns) == list(enc.input_columns)
    assert out["format_code"].tolist() == [0, 2, UNKNOWN_CODE, UNKNOWN_CODE]
    assert out["audience_code"].tolist() == [2, 0, 3, 1]  # AUDIENCES order, then "unknown"
    assert out["signal_tier_code"].tolist() == [2, 0, 1, 1]
    assert out["format_code"].dtype == np.int64 and out["n_ad"].dtype == np.int64
    assert out["user_ad__imp_24h"].dtype == np.int64
    assert out["user_ad__imp_decayed"].dtype == np.float64
    assert out["hours_since_last_ad"].isna().tolist() == [True, True, False, True]
    assert not any(isinstance(t, pd.CategoricalDtype) for t in out.dtypes)  # the pyfunc flavor needs plain numbers


def test_categorical_input_columns_and_extra_formats():
    rows = _rows().astype({"format": "category", "audience": "category"})
    enc = default_encoding(("user_ad__imp_24h", "user_ad__imp_decayed"), formats=("hologram",))
    out = enc.transform(rows)
    assert out["format_code"].tolist()[2] == enc.vocabularies["format"].index("hologram")
    assert out["audience_code"].tolist() == [2, 0, 3, 1]


def test_roundtrip_and_missing_columns():
    enc = default_encoding(("user_ad__imp_24h", "user_ad__imp_decayed"))
    again = FeatureEncoding.from_dict(enc.to_dict())
    assert again == enc and again.input_columns == enc.input_columns
    with pytest.raises(KeyError, match="user_ad__imp_24h"):
        enc.transform(_rows().drop(columns=["user_ad__imp_24h"]))
    bad = _rows()
    bad.loc[0, "n_ad"] = None
    with pytest.raises(ValueError, match="n_ad"):
        enc.transform(bad)


def test_wear_in_split_monotone_constraints_and_pair_counts():
    feats = ("user_ad__imp_24h", "user_ad__imp_decayed", "user_ad__conv_28d", "user__imp_7d")
    enc = default_encoding(feats, wear_in=2, pair_counts=False)
    # the pair's own impression counts are out (they duplicate n and recency); the user's and conversions stay
    assert "user_ad__imp_24h" not in enc.numeric and "user_ad__imp_decayed" not in enc.numeric
    assert "user_ad__conv_28d" in enc.numeric and "user__imp_7d" in enc.numeric
    rows = _rows().assign(user_ad__conv_28d=[0, 1, 0, 2], user__imp_7d=[5, 1, 9, 2])
    out = enc.transform(rows)
    assert list(out.columns) == list(enc.input_columns) and "n_advertiser" not in out.columns
    n = rows["n_advertiser"].to_numpy()  # [3, 1, 7, 2]
    assert out["n_advertiser_wear_in"].tolist() == [2, 1, 2, 2]
    assert out["n_advertiser_beyond"].tolist() == [1, 0, 5, 0]
    assert (out["n_advertiser_wear_in"] + out["n_advertiser_beyond"]).tolist() == n.tolist()
    assert enc.monotone_constraints() == {"n_advertiser_beyond": -1, "n_campaign_beyond": -1, "n_ad_beyond": -1}
    assert FeatureEncoding.from_dict(enc.to_dict()) == enc
    assert default_encoding(feats).monotone_constraints() == {}  # no wear-in: n as it is, unconstrained
