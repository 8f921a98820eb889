"""Batch features against a brute-force computation over random small event sets."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freqcap.adapters.duckdb.features import build_features
from freqcap.adapters.events_files import write_events
from freqcap.config import load_settings
from tests.bruteforce import WINDOW_SECONDS, tier_features

AS_OF = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
FEATURES = load_settings(environ={}).features
HIERARCHY = {"a1": ("c1", "v1"), "a2": ("c1", "v1"), "a3": ("c2", "v1"), "a4": ("c3", "v2")}
# Offsets before AS_OF that sit exactly on window edges, just inside them, at AS_OF, and after it.
EDGE_OFFSETS = [
    0,
    1,
    -1,
    -3600,
    3600,
    3599,
    86400,
    86399,
    7 * 86400,
    28 * 86400,
    28 * 86400 - 1,
    28 * 86400 + 5,
    # calendar edges (UTC): today's midnight, Monday's midnight, the 1st's midnight, and one second either side;
    # in New York (UTC-4): 4 h later
    *(base + d for base in (43200, 302400, 1252800, 43200 - 14400, 1252800 - 14400) for d in (-1, 0, 1)),
]


def _event_strategy():
    offset = st.one_of(st.sampled_from(EDGE_OFFSETS), st.integers(min_value=-7200, max_value=30 * 86400))
    return st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(sorted(HIERARCHY)),
        st.sampled_from(["impression", "impression", "click", "conversion"]),
        offset,
        st.integers(min_value=0, max_value=999_999),  # sub-second part, in microseconds
    )


def _table(rows: list[tuple]) -> pa.Table:
    ts = [
        AS_OF - timedelta(seconds=off) + timedelta(microseconds=us if off not in EDGE_OFFSETS else 0)
        for *_, off, us in rows
    ]
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "event_type": [r[2] for r in rows],
            "event_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "user_id": [r[0] for r in rows],
            "advertiser_id": [HIERARCHY[r[1]][1] for r in rows],
            "campaign_id": [HIERARCHY[r[1]][0] for r in rows],
            "ad_id": [r[1] for r in rows],
            "format": ["feed"] * len(rows),
            "conversion_value": [1.0 if r[2] == "conversion" else None for r in rows],
        }
    )


def _brute_force(table: pa.Table, level: str) -> dict[tuple[str, str], dict[str, float]]:
    return tier_features(table.to_pylist(), AS_OF, level, FEATURES.tier(level).half_life_seconds)


def _build(tmp_path, table):
    events = write_events(table, tmp_path / "events" / "part-0.parquet")
    return build_features(events.parent, AS_OF, tmp_path / "features", FEATURES, deduplicate=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_event_strategy(), min_size=1, max_size=40))
def test_tiers_match_brute_force(tmp_path_factory, rows):
    tmp_path = tmp_path_factory.mktemp("build")
    table = _table(rows)
    build = _build(tmp_path, table)
    for level in ("advertiser", "campaign", "ad"):
        expected = _brute_force(table, level)
        got = {(r["user_id"], r[f"{level}_id"]): r for r in pq.read_table(build.paths[f"user_{level}"]).to_pylist()}
        assert set(got) == set(expected), level
        for key, feats in expected.items():
            row = got[key]
            assert row["event_timestamp"] == AS_OF
            for label in WINDOW_SECONDS:
                for p in ("imp", "clk", "conv"):
                    assert row[f"{p}_{label}"] == feats.get(f"{p}_{label}", 0), (level, key, p, label)
            assert math.isclose(row["imp_decayed"], feats.get("imp_decayed", 0.0), rel_tol=1e-9, abs_tol=1e-12)
            assert row["last_imp_ts"] == feats.get("last_imp_ts")
            for period in ("day", "week", "month"):
                assert row[f"imp_{period}"] == feats[f"imp_{period}"], (level, key, period)
                assert row[f"{period}_start"] == feats[f"{period}_start"], (level, key, period)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_event_strategy(), min_size=1, max_size=40))
def test_calendar_counts_in_another_zone_match_brute_force(tmp_path_factory, rows):
    """This day / week / month in New York: counts and period starts equal a count over the raw events."""
    features = FEATURES.model_copy(update={"calendar_time_zone": "America/New_York"})
    tmp_path = tmp_path_factory.mktemp("build")
    table = _table(rows)
    events = write_events(table, tmp_path / "events" / "part-0.parquet")
    build = build_features(events.parent, AS_OF, tmp_path / "features", features, deduplicate=False)
    for level in ("advertiser", "campaign", "ad"):
        expected = tier_features(table.to_pylist(), AS_OF, level, 1.0, zone="America/New_York")
        got = {(r["user_id"], r[f"{level}_id"]): r for r in pq.read_table(build.paths[f"user_{level}"]).to_pylist()}
        assert set(got) == set(expected), level
        for key, feats in expected.items():
            for period in ("day", "week", "month"):
                assert got[key][f"imp_{period}"] == feats[f"imp_{period}"], (level, key, period)
                assert got[key][f"{period}_start"] == feats[f"{period}_start"], (level, key, period)


def test_events_on_window_edges(tmp_path):
    """Exactly W before T is outside window W; exactly T is inside; after T never counts."""
    offsets = [0, 3600, 3599, 86400, -1]
    rows = [("u1", "a1", "impression", off, 0) for off in offsets]
    build = _build(tmp_path, _table(rows))
    (row,) = pq.read_table(build.paths["user_ad"]).to_pylist()
    assert row["imp_1h"] == 2  # offsets 0 and 3599
    assert row["imp_24h"] == 3  # + 3600
    assert row["imp_7d"] == 4  # + 86400
    assert row["last_imp_ts"] == AS_OF
    half_life = FEATURES.tier("ad").half_life_seconds
    assert row["imp_decayed"] == pytest.approx(sum(2 ** (-o / half_life) for o in (0, 3600, 3599, 86400)))


def test_decay_uses_each_tiers_half_life(tmp_path):
    """One impression a day ago: decayed value is 2^(-1 day / h_L) with the tier's own h_L."""
    build = _build(tmp_path, _table([("u1", "a1", "impression", 86400 - 1, 0)]))
    for level, expected_half_life in (("advertiser", 7 * 86400), ("campaign", 3 * 86400), ("ad", 86400)):
        (row,) = pq.read_table(build.paths[f"user_{level}"]).to_pylist()
        assert row["imp_decayed"] == pytest.approx(2 ** (-(86400 - 1) / expected_half_life))


def test_user_table_signal_tiers_and_audience(tmp_path):
    rows = [
        ("u1", "a1", "impression", 100, 0),
        ("u2", "a1", "impression", 100, 0),
        ("u2", "a1", "click", 90, 0),
        ("u3", "a2", "impression", 100, 0),
        ("u3", "a2", "click", 90, 0),
        ("u3", "a2", "conversion", 50, 0),
        ("u4", "a2", "impression", -10, 0),  # only a future event: u4 must not appear
    ]
    table = _table(rows)
    write_events(table, tmp_path / "events" / "part-0.parquet")
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "audience": ["cold", "high_intent"]}), tmp_path / "users.parquet")
    build = build_features(tmp_path / "events", AS_OF, tmp_path / "features", FEATURES, deduplicate=False)
    users = {r["user_id"]: r for r in pq.read_table(build.paths["user"]).to_pylist()}
    assert set(users) == {"u1", "u2", "u3"}
    assert [users[u]["signal_tier"] for u in ("u1", "u2", "u3")] == [
        "impression_only",
        "engaged",
        "converter",
    ]
    assert [users[u]["audience"] for u in ("u1", "u2", "u3")] == ["cold", "high_intent", "unknown"]
    assert users["u3"]["imp_24h"] == 1 and users["u3"]["conv_28d"] == 1


def test_duplicate_event_ids_counted_once(tmp_path):
    table = _table([("u1", "a1", "impression", 10, 0), ("u1", "a1", "impression", 20, 0)])
    dup = pa.concat_tables([table, table.slice(0, 1)])
    write_events(dup, tmp_path / "events" / "part-0.parquet")
    build = build_features(tmp_path / "events", AS_OF, tmp_path / "f", FEATURES, deduplicate=True)
    (row,) = pq.read_table(build.paths["user_ad"]).to_pylist()
    assert row["imp_1h"] == 2


def test_naive_as_of_rejected(tmp_path):
    with pytest.raises(ValueError, match="timezone"):
        build_features(tmp_path, AS_OF.replace(tzinfo=None), tmp_path / "f", FEATURES)


def test_an_impression_this_month_but_older_than_the_longest_window_keeps_its_row(tmp_path):
    """Oct 31: an impression on Oct 1 is 30 days old (beyond 28d) but this month's: the pair keeps a row."""
    as_of = datetime(2026, 10, 31, 12, tzinfo=UTC)
    table = _table([("u1", "a1", "impression", (AS_OF - datetime(2026, 10, 1, 6, tzinfo=UTC)).total_seconds(), 0)])
    events = write_events(table, tmp_path / "events" / "part-0.parquet")
    build = build_features(events.parent, as_of, tmp_path / "features", FEATURES, deduplicate=False)
    (row,) = pq.read_table(build.paths["user_ad"]).to_pylist()
    want = tier_features(table.to_pylist(), as_of, "ad", 1.0)[("u1", "a1")]
    assert (row["imp_month"], row["imp_28d"], row["imp_week"]) == (want["imp_month"], 0, 0) == (1, 0, 0)
    assert row["month_start"] == int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
