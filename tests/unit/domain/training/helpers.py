"""A synthetic training set with every column of the default model config (no Feast needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from freqcap.adapters.duckdb.training_set import feast_column, numeric_feature_refs
from freqcap.domain.training.config import ConversionModelConfig

T0 = pd.Timestamp("2026-10-02T00:00:00Z")


def synthetic_training_frame(n: int = 6000, seed: int = 0, config: ConversionModelConfig | None = None) -> pd.DataFrame:
    """Rows whose conversion probability falls with n_ad (faster for `cold`) and rises with audience intent."""
    config = config or ConversionModelConfig()
    rng = np.random.default_rng(seed)
    audience = rng.choice(["cold", "returning", "high_intent"], n, p=[0.5, 0.35, 0.15])
    tier = rng.choice(["impression_only", "engaged", "converter"], n, p=[0.6, 0.3, 0.1])
    n_ad = rng.geometric(0.35, n)
    n_campaign = n_ad + rng.geometric(0.5, n) - 1
    n_advertiser = n_campaign + rng.geometric(0.5, n) - 1
    base = np.select([audience == "cold", audience == "returning"], [0.02, 0.05], 0.12)
    decay = np.where(audience == "cold", 0.6, 0.85)
    p = base * decay ** (n_ad - 1) * np.where(tier == "converter", 1.5, 1.0)
    ts = T0 + pd.to_timedelta(np.sort(rng.integers(0, 6 * 86400 * 10**6, n)), unit="us")
    frame = pd.DataFrame(
        {
            "event_id": [f"imp-{i}" for i in range(n)],
            "user_id": [f"u{i % 500}" for i in range(n)],
            "advertiser_id": [f"v{i % 7}" for i in range(n)],
            "campaign_id": [f"c{i % 13}" for i in range(n)],
            "ad_id": [f"a{i % 29}" for i in range(n)],
            "impression_ts": ts,
            "feature_ts": ts - pd.Timedelta(microseconds=1),
            "format": rng.choice(["feed", "stories", "reels", "search", "video"], n),
            "hour_of_day": ts.hour.astype(np.int32),
            "audience": audience,
            "signal_tier": tier,
            "n_advertiser": n_advertiser.astype(np.int64),
            "n_campaign": n_campaign.astype(np.int64),
            "n_ad": n_ad.astype(np.int64),
            "hours_since_last_advertiser": np.where(n_advertiser > 1, rng.exponential(10, n), np.nan),
            "hours_since_last_campaign": np.where(n_campaign > 1, rng.exponential(12, n), np.nan),
            "hours_since_last_ad": np.where(n_ad > 1, rng.exponential(15, n), np.nan),
        }
    )
    for ref in numeric_feature_refs(config):
        col = feast_column(ref)
        if col.endswith("imp_decayed"):
            frame[col] = rng.exponential(2.0, n)
        elif "imp_" in col:
            frame[col] = rng.poisson(3, n).astype(np.int64)
        else:
            frame[col] = rng.poisson(0.2, n).astype(np.int64)
    for view in ("user_advertiser", "user_campaign", "user_ad"):  # nested windows
        frame[f"{view}__imp_7d"] = frame[f"{view}__imp_24h"] + rng.poisson(2, n)
        frame[f"{view}__imp_28d"] = frame[f"{view}__imp_7d"] + rng.poisson(1, n)
    frame["label_conversion"] = (rng.random(n) < p).astype(np.int32)
    frame["label_attributed_conversion"] = frame["label_conversion"] * (rng.random(n) < 0.5).astype(np.int32)
    frame["label_click"] = (rng.random(n) < 0.02).astype(np.int32)
    return frame


def feature_columns(config: ConversionModelConfig | None = None) -> tuple[str, ...]:
    return tuple(feast_column(r) for r in numeric_feature_refs(config or ConversionModelConfig()))
