"""The feature-table gate (`resources/gx/features.json`) on real feature tables of a small simulated world.

Clean tables pass; copies mutated on purpose stop the gate naming exactly the rules they break. What each copy
breaks is decided here by an independent pandas check of the feature semantics, not by the gate.
"""

from __future__ import annotations

import itertools
import math
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.duckdb.features import build_features
from freqcap.adapters.gx.docs import runs_page_path
from freqcap.adapters.gx.errors import DataValidationError
from freqcap.adapters.gx.features import FeatureGateError, row_count_bounds, validate_feature_tables
from freqcap.config import FeaturesConfig, TierConfig
from freqcap.errors import FeatureValidationError
from tests.unit.adapters.gx.worlds import make_world

PREFIXES = ("imp", "clk", "conv")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("features-gate"))


def brute_force_violations(frame: pd.DataFrame, entity: str, windows: list[str], as_of, longest_seconds: int):
    """rule -> number of offending rows, straight from the feature semantics (independent of the suite file)."""
    out: dict[str, int] = {}
    for p in PREFIXES:
        for w in windows:
            out[f"{p}_{w}_non_negative"] = int((frame[f"{p}_{w}"] < 0).sum())
            out[f"{p}_{w}_not_null"] = int(frame[f"{p}_{w}"].isna().sum())
        for a, b in itertools.pairwise(windows):
            out[f"{p}_{a}_le_{b}"] = int((frame[f"{p}_{a}"] > frame[f"{p}_{b}"]).sum())
    longest = windows[-1]
    out["key_unique"] = int(frame.duplicated(["user_id", entity], keep=False).sum())
    out["decayed_le_raw"] = int((frame["imp_decayed"] > frame[f"imp_{longest}"]).sum())
    out["imp_decayed_non_negative"] = int((frame["imp_decayed"] < 0).sum())
    last = frame["last_imp_ts"].dropna()
    start = as_of - timedelta(seconds=longest_seconds)
    out["last_imp_in_window"] = int(((last <= start) | (last > as_of)).sum())
    out["last_imp_present_with_impressions"] = int((frame["last_imp_ts"].isna() & (frame[f"imp_{longest}"] > 0)).sum())
    out["last_imp_absent_without_impressions"] = int(
        (frame["last_imp_ts"].notna() & (frame[f"imp_{longest}"] == 0)).sum()
    )
    out["snapshot_time_is_as_of"] = int((frame["event_timestamp"] != as_of).sum())
    return {rule: n for rule, n in out.items() if n}


def _write(frame: pd.DataFrame, path: Path, like: Path) -> str:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).cast(pq.read_schema(like)), path)
    return str(path)


def test_clean_tables_pass_and_are_published_to_data_docs(world, tmp_path):
    rows = world.build["rows"]
    report = validate_feature_tables(
        world.build["paths"],
        world.as_of,
        world.settings.features,
        max_row_count_ratio=2.0,
        previous_rows=rows,  # the same counts as "the previous run": the row-count rule runs and holds
        docs_root=tmp_path,
    )
    assert report.success and report.rows == rows
    names = {o.name for o in report.outcomes}
    for table in ("user_advertiser", "user_campaign", "user_ad"):
        # every pair of consecutive default windows, for every count prefix, on every tier
        for p, (a, b) in itertools.product(PREFIXES, itertools.pairwise(["1h", "24h", "7d", "28d"])):
            assert f"{table}.{p}_{a}_le_{b}" in names
        assert {f"{table}.key_unique", f"{table}.decayed_le_raw", f"{table}.row_count_change_bounded"} <= names
    assert all(o.success for o in report.outcomes), [o.name for o in report.outcomes if o.success is not True]
    # the brute force agrees that the real tables are clean
    for table, entity in (("user_advertiser", "advertiser_id"), ("user_ad", "ad_id")):
        frame = pd.read_parquet(world.build["paths"][table])
        assert brute_force_violations(frame, entity, ["1h", "24h", "7d", "28d"], world.as_of, 28 * 86400) == {}
    page = runs_page_path(tmp_path)
    assert report.data_docs == str(page) and page.is_file()
    html = page.read_text()
    assert html.count(">passed<") == 4 and "FAILED" not in html
    for table in ("user_advertiser", "user_campaign", "user_ad", "user"):
        assert f"freqcap_features.{table}" in html


def test_corrupted_table_stops_naming_each_broken_rule(world, tmp_path):
    path = Path(world.build["paths"]["user_ad"])
    frame = pd.read_parquet(path)
    with_imps = frame.index[frame["imp_28d"] > 0]
    r = list(with_imps[:5])
    frame.loc[r[0], "imp_24h"] = frame.loc[r[0], "imp_7d"] + 1  # 24h window holds more than the 7d one
    frame.loc[r[1], "clk_1h"] = -1  # a negative count
    frame.loc[r[2], "imp_decayed"] = frame.loc[r[2], "imp_28d"] + 0.5  # decayed above raw
    frame.loc[r[3], "last_imp_ts"] = world.as_of + timedelta(seconds=1)  # an impression after as_of leaked in
    frame = pd.concat([frame, frame.loc[[r[4]]]], ignore_index=True)  # a duplicated (user, ad) key
    paths = {**world.build["paths"], "user_ad": _write(frame, tmp_path / "user_ad.parquet", path)}

    expected = brute_force_violations(frame, "ad_id", ["1h", "24h", "7d", "28d"], world.as_of, 28 * 86400)
    assert set(expected) == {
        "imp_24h_le_7d",
        "clk_1h_non_negative",
        "decayed_le_raw",
        "last_imp_in_window",
        "key_unique",
    }, "the mutations must break these rules and nothing else"
    with pytest.raises(FeatureGateError) as caught:
        validate_feature_tables(paths, world.as_of, world.settings.features, max_row_count_ratio=2.0)
    exc = caught.value
    assert isinstance(exc, DataValidationError) and isinstance(exc, FeatureValidationError)
    failed = {o.name: o for o in exc.report.failed}
    assert set(failed) == {f"user_ad.{rule}" for rule in expected}
    for rule, n in expected.items():
        assert failed[f"user_ad.{rule}"].unexpected_count == n, rule
        assert f"user_ad.{rule}" in str(exc)
    # observed values are quoted: the offending pair (24h, 7d) and the rows' totals
    assert f"[{frame.loc[r[0], 'imp_7d']}, {frame.loc[r[0], 'imp_24h']}]" in str(exc)
    assert f"2 of {len(frame)} rows unexpected" in str(exc)  # both copies of the duplicated key


def test_a_partial_feed_trips_the_row_count_rule(world, tmp_path):
    """A real build from a quarter of the users' events, compared with the full run as the previous one."""
    users = sorted(pd.read_parquet(world.users)["user_id"])[::4]
    partial_events = tmp_path / "partial.parquet"
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_parquet('{world.clean_events}') WHERE user_id IN (SELECT unnest($users))) "
        f"TO '{partial_events}' (FORMAT parquet)",
        {"users": users},
    )
    con.close()
    partial = build_features(
        partial_events, world.as_of, tmp_path / "features", world.settings.features, users=world.users
    )
    full = world.build["rows"]
    ratio = world.settings.validation.max_row_count_ratio
    should_fail = {t for t, n in partial.rows.items() if n < full[t] / ratio or n > full[t] * ratio}
    assert should_fail, "a quarter of the users must shrink some table by more than the ratio"
    with pytest.raises(FeatureGateError) as caught:
        validate_feature_tables(
            partial.paths, world.as_of, world.settings.features, max_row_count_ratio=ratio, previous_rows=full
        )
    failed = {o.name: o for o in caught.value.report.failed}
    assert set(failed) == {f"{t}.row_count_change_bounded" for t in should_fail}
    for table in should_fail:
        outcome = failed[f"{table}.row_count_change_bounded"]
        assert outcome.observed == partial.rows[table]
        assert outcome.expected == {"min_value": math.ceil(full[table] / ratio), "max_value": int(full[table] * ratio)}


def test_window_ordering_follows_the_configured_windows(world, tmp_path):
    """Other windows, other rules: the pairs come from the tier config at run time, not from the suite file."""
    base = world.settings.features
    ad = TierConfig(level="ad", windows=("2h", "3d", "9d"), half_life="1d")
    config = FeaturesConfig(tiers=tuple(ad if t.level == "ad" else t for t in base.tiers))
    build = build_features(world.clean_events, world.as_of, tmp_path / "features", config, users=world.users)
    frame = pd.read_parquet(build.paths["user_ad"])
    assert {"imp_2h", "imp_3d", "imp_9d"} <= set(frame.columns) and "imp_24h" not in frame.columns
    row = frame.index[frame["imp_9d"] > 0][0]
    frame.loc[row, "imp_2h"] = frame.loc[row, "imp_3d"] + 2
    paths = {**build.paths, "user_ad": _write(frame, tmp_path / "bad_user_ad.parquet", build.paths["user_ad"])}
    expected = brute_force_violations(frame, "ad_id", ["2h", "3d", "9d"], world.as_of, 9 * 86400)
    assert set(expected) == {"imp_2h_le_3d"}
    with pytest.raises(FeatureGateError) as caught:
        validate_feature_tables(paths, world.as_of, config, max_row_count_ratio=2.0)
    report = caught.value.report
    assert [o.name for o in report.failed] == ["user_ad.imp_2h_le_3d"]
    ad_rules = {o.rule for o in report.outcomes if o.table == "user_ad"}
    assert {"imp_3d_le_9d", "conv_2h_le_3d", "imp_9d_non_negative"} <= ad_rules
    assert not any("24h" in r or "28d" in r for r in ad_rules)


def test_row_count_bounds():
    assert row_count_bounds(100, 2.0) == (50, 200)
    assert row_count_bounds(101, 2.0) == (51, 202)
    assert row_count_bounds(7, 1.5) == (5, 10)
