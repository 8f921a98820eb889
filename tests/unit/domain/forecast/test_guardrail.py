"""The forecast guardrail on hand-made forecast tables."""

from __future__ import annotations

import pandas as pd

from freqcap.domain.forecast.guardrail import ForecastLimits, check_forecast


def _table(conv_live: float, conv_cand: float, reach_live: float, reach_cand: float) -> pd.DataFrame:
    rows = []
    for metric, live, cand in (("conversions", conv_live, conv_cand), ("reach", reach_live, reach_cand)):
        for level in ("advertiser", "campaign", "ad"):
            rows.append(
                {
                    "cohort": "all",
                    "level": level,
                    "metric": metric,
                    "live": live,
                    "candidate": cand,
                    "change": cand - live,
                    "change_pct": (cand - live) / live,
                    "low": cand * 0.9,
                    "high": cand * 1.1,
                }
            )
    rows.append(
        {
            "cohort": "cold/all",
            "level": "ad",
            "metric": "conversions",
            "live": 10.0,
            "candidate": 1.0,
            "change": -9.0,
            "change_pct": -0.9,
            "low": 0.5,
            "high": 1.5,
        }
    )  # only `all` is guarded
    return pd.DataFrame(rows)


def test_passes_within_limits_and_fails_past_them() -> None:
    limits = ForecastLimits(max_conversion_drop=0.05, max_reach_drop=0.10)
    ok = check_forecast(_table(1000, 960, 500, 460), limits)
    assert ok.passed, ok.detail
    conv = check_forecast(_table(1000, 940, 500, 500), limits)
    assert not conv.passed and "conversions/ad -6.0%" in conv.detail.replace("−", "-")
    reach = check_forecast(_table(1000, 1000, 500, 440), limits)
    assert not reach.passed and len(reach.values["violations"]) == 3
    assert reach.values["by_level"]["reach/ad"]["change_pct"] == -0.12


def test_no_forecast_passes_and_says_why() -> None:
    check = check_forecast(None, ForecastLimits(), reason="no recent events")
    assert check.passed and "no recent events" in check.detail and check.values["skipped"]
