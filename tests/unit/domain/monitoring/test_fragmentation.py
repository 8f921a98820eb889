"""The fragmentation rule on hand-made counts, each number worked out by hand in the comments."""

from __future__ import annotations

import pandas as pd
import pytest

from freqcap.domain.monitoring.fragmentation import FragmentationParams, fragmentation

DAY = 86_400.0


def _counts(rows: list[tuple[str, str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["campaign_id", "ad_id", "impressions", "conversions"])


def test_each_recommendation_and_the_concentration_index():
    counts = _counts(
        [
            # even: 4 creatives x 20/week = 80 ≥ 50, target ⌊80/50⌋ = 1, all 4 below → consolidate; HHI 4·(1/4)² = 0.25
            *[("even", f"e{i}", 100, 20) for i in range(4)],
            # strong: 60, 60, 10 = 130, target 2 < 3 creatives, but only 1/3 below (< 0.5) → ok
            ("strong", "s0", 300, 60), ("strong", "s1", 300, 60), ("strong", "s2", 400, 10),
            # small: 10 + 5 = 15 < 50 → underfunded
            ("small", "m0", 50, 10), ("small", "m1", 50, 5),
        ]
    )  # fmt: skip
    table, rows = fragmentation(counts, FragmentationParams(window_seconds=7 * DAY, learning_conversions_per_week=50))
    by = table.set_index("campaign_id")
    assert by.loc["even", "recommendation"] == "consolidate" and by.loc["even", "target_creatives"] == 1
    assert by.loc["even", "hhi"] == pytest.approx(0.25) and by.loc["even", "effective_creatives"] == pytest.approx(4)
    assert by.loc["strong", "recommendation"] == "ok" and by.loc["strong", "share_below"] == pytest.approx(1 / 3)
    assert by.loc["strong", "hhi"] == pytest.approx(0.3**2 + 0.3**2 + 0.4**2)
    assert by.loc["small", "recommendation"] == "underfunded"
    assert list(table["campaign_id"]) == ["even", "small", "strong"]  # to consolidate first
    values = {(r.name, r.segment): r.value for r in rows}
    assert values[("campaigns_to_consolidate", "all")] == 1
    assert values[("creatives_below_learning_share", "all")] == pytest.approx(7 / 9)  # 4 + 1 + 2 of 9 creatives
    assert values[("creative_hhi", "campaign=even")] == pytest.approx(0.25)


def test_a_shorter_window_is_scaled_to_a_week():
    # 1 day with 10 conversions per creative = 70 a week each: above 50, nothing below
    counts = _counts([("c", "a", 10, 10), ("c", "b", 10, 10)])
    table, _ = fragmentation(counts, FragmentationParams(window_seconds=DAY, learning_conversions_per_week=50))
    assert table.loc[0, "conversions_per_week"] == pytest.approx(140) and table.loc[0, "creatives_below"] == 0
    assert table.loc[0, "per_creative"] == {"a": 70.0, "b": 70.0}
