"""No feature of a training row may come from events at or after its impression.

Daily snapshots are published over hand-made events that include traps: an impression exactly at a snapshot
time with a conversion and a click at that same microsecond (a snapshot at that time counts all three), tied
impressions, and impressions 1 µs either side of a snapshot. Every row of the Feast-built training set must
equal a loop-by-loop computation as of the latest snapshot strictly before the impression; the DuckDB ASOF
audit must agree with Feast and name a snapshot time before every impression; and the trap rows must differ
from what a join at the impression time itself would give (so the test can see a leak).
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.duckdb.training_set import TrainingDataError, build_training_set
from freqcap.adapters.events_files import write_events
from freqcap.config import load_settings, parse_duration
from freqcap.domain.training.config import ConversionModelConfig, DataConfig, LabelConfig
from freqcap.jobs.backfill import publish_daily_snapshots
from tests.unit.domain.training.bruteforce import (
    expected_exact,
    expected_features,
    expected_labels,
    latest_snapshot,
)

T0 = datetime(2026, 10, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
START, END, AS_OF = T0 + timedelta(days=1), T0 + timedelta(days=5), T0 + timedelta(days=6)
ADS = [f"ad{i}" for i in range(8)]
CAMPAIGN = {a: f"c{int(a[2:]) // 3}" for a in ADS}
ADVERTISER = {c: f"v{int(c[1:]) // 2}" for c in set(CAMPAIGN.values())}
CONFIG = ConversionModelConfig(
    label=LabelConfig(attribution_window="1d", click_window="1h"),
    data=DataConfig(window="4d", history_warmup="0s"),
)
A_TS = T0 + timedelta(days=3)  # the trap impression: exactly at a snapshot time


def _event(i: int, kind: str, ts: datetime, user: str, ad: str) -> dict:
    return {
        "event_id": f"x{i}",
        "event_type": kind,
        "event_ts": ts,
        "user_id": user,
        "advertiser_id": ADVERTISER[CAMPAIGN[ad]],
        "campaign_id": CAMPAIGN[ad],
        "ad_id": ad,
        "format": ["feed", "stories", "reels"][i % 3],
        "conversion_value": 10.0 if kind == "conversion" else None,
    }


def _events() -> list[dict]:
    rng = np.random.default_rng(5)
    span = int((AS_OF + timedelta(hours=6) - (T0 - timedelta(days=3))).total_seconds() * 1e6)
    rows = []
    for i in range(900):
        ts = T0 - timedelta(days=3) + timedelta(microseconds=int(rng.integers(0, span)))
        kind = rng.choice(["impression"] * 6 + ["click", "conversion"])
        rows.append(_event(i, str(kind), ts, f"u{int(rng.integers(0, 8))}", str(rng.choice(ADS))))
    traps = [
        ("impression", T0 + timedelta(days=2, hours=5), "u0", "ad0"),
        ("impression", A_TS, "u0", "ad0"),  # at the snapshot time
        ("conversion", A_TS, "u0", "ad0"),  # same microsecond: a label, never a feature
        ("click", A_TS, "u0", "ad0"),
        ("impression", T0 + timedelta(days=2, hours=7), "u1", "ad1"),  # a tie
        ("impression", T0 + timedelta(days=2, hours=7), "u1", "ad1"),
        ("impression", T0 + timedelta(days=4) - US, "u2", "ad2"),  # 1 µs before a snapshot
        ("impression", T0 + timedelta(days=4) + US, "u2", "ad2"),  # 1 µs after: may use it
    ]
    for j, (kind, ts, user, ad) in enumerate(traps):
        rows.append(_event(1000 + j, kind, ts, user, ad))
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from freqcap.adapters.feast.store import open_store

    tmp = tmp_path_factory.mktemp("pit")
    events = _events()
    table = pa.Table.from_pylist(events)
    write_events(table, tmp / "events" / "part-0.parquet")
    settings = load_settings(
        environ={"FREQCAP__DATA_DIR": str(tmp / "data"), "FREQCAP__FEAST__PROJECT": f"t{uuid.uuid4().hex[:10]}"}
    )
    repo = tmp / "data" / "feast"
    store = open_store(settings, repo)
    backfill = publish_daily_snapshots(tmp / "events", T0, END, settings, repo_dir=repo, store=store)
    feast = build_training_set(
        tmp / "events", settings, CONFIG, out_path=tmp / "feast.parquet", as_of=AS_OF, start=START, end=END, store=store
    )
    duck = build_training_set(
        tmp / "events",
        settings,
        CONFIG,
        out_path=tmp / "duck.parquet",
        as_of=AS_OF,
        start=START,
        end=END,
        engine="duckdb",
        snapshot_ts=True,
    )
    return {
        "store": store,
        "tmp": tmp,
        "events": events,
        "settings": settings,
        "snapshots": list(backfill.published),
        "feast": pq.read_table(feast.path).to_pylist(),
        "duck": pq.read_table(duck.path).to_pylist(),
        "summary": feast,
    }


def _half_lives(settings) -> dict[str, float]:
    return {t.level: t.half_life_seconds for t in settings.features.tiers}


def _assert_features_equal(got: dict, want: dict, where: str) -> None:
    for col, value in want.items():
        if col.endswith("imp_decayed"):
            assert math.isclose(got[col], value, rel_tol=1e-9, abs_tol=1e-12), (where, col, got[col], value)
        else:
            assert got[col] == value, (where, col, got[col], value)


def test_every_row_equals_a_brute_force_as_of_the_last_snapshot_before_the_impression(world):
    events, settings = world["events"], world["settings"]
    ttl = parse_duration(settings.feast.snapshot_ttl)
    impressions = [e for e in events if e["event_type"] == "impression" and START <= e["event_ts"] < END]
    rows = world["feast"]
    assert len(rows) == len(impressions) == world["summary"].rows
    assert {r["event_id"] for r in rows} == {e["event_id"] for e in impressions}
    for row in rows:
        t = row["impression_ts"]
        snapshot = latest_snapshot(world["snapshots"], t, ttl)
        assert snapshot is not None and snapshot < t
        assert row["feature_ts"] == t - timedelta(microseconds=1)
        _assert_features_equal(row, expected_features(events, row, snapshot, _half_lives(settings)), row["event_id"])
        exact = expected_exact(events, row)
        for col, value in exact.items():
            if value is None:
                assert row[col] is None, (row["event_id"], col)
            elif col.startswith("hours"):
                assert math.isclose(row[col], value, rel_tol=1e-12), (row["event_id"], col, row[col], value)
            else:
                assert row[col] == value, (row["event_id"], col, row[col], value)
        labels = expected_labels(events, row, timedelta(days=1), timedelta(hours=1))
        assert {k: row[k] for k in labels} == labels, row["event_id"]


def test_duckdb_asof_audit_agrees_and_every_joined_snapshot_is_before_the_impression(world):
    ttl = parse_duration(world["settings"].feast.snapshot_ttl)
    duck = {r["event_id"]: r for r in world["duck"]}
    views = ("user", "user_advertiser", "user_campaign", "user_ad")
    for row in world["feast"]:
        other = duck[row["event_id"]]
        for col, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(other[col])
            else:
                assert other[col] == value, (row["event_id"], col)
        t = row["impression_ts"]
        for view in views:
            joined = other[f"{view}__snapshot_ts"]
            if joined is not None:  # None: the key is absent from the snapshot (zero by the sparse contract)
                assert joined < t, (row["event_id"], view, joined, t)
                assert joined == latest_snapshot(world["snapshots"], t, ttl)


def test_trap_rows_would_differ_if_the_join_could_see_the_impression_time(world):
    events, settings = world["events"], world["settings"]
    by_key = {(r["user_id"], r["ad_id"], r["impression_ts"]): r for r in world["feast"]}
    a = by_key[("u0", "ad0", A_TS)]
    # A join that could see time t (a snapshot at t) would count the impression itself and the conversion and
    # click of the same microsecond, compared with the freshest legal state (t − 1 µs).
    fresh = expected_features(events, a, A_TS - US, _half_lives(settings))
    leaky = expected_features(events, a, A_TS, _half_lives(settings))
    assert leaky["user_ad__imp_24h"] == fresh["user_ad__imp_24h"] + 1
    assert leaky["user_ad__conv_28d"] == fresh["user_ad__conv_28d"] + 1
    assert leaky["user_ad__clk_28d"] == fresh["user_ad__clk_28d"] + 1
    # The row itself holds the previous day's snapshot, so it cannot be the leaky one.
    assert a["user_ad__conv_28d"] <= fresh["user_ad__conv_28d"] < leaky["user_ad__conv_28d"]
    assert a["label_conversion"] == 1 and a["label_click"] == 1  # ... which belong to the labels instead
    assert a["label_attributed_conversion"] == 1  # A is the ad's last touch before that conversion
    earlier = by_key[("u0", "ad0", T0 + timedelta(days=2, hours=5))]
    assert earlier["label_conversion"] == 1 and earlier["label_attributed_conversion"] == 0  # A came in between
    assert a["n_ad"] >= 2 and a["hours_since_last_ad"] > 0

    # 1 µs before a snapshot: that snapshot would count the impression itself; 1 µs after: it is the one to use.
    before = by_key[("u2", "ad2", T0 + timedelta(days=4) - US)]
    after = by_key[("u2", "ad2", T0 + timedelta(days=4) + US)]
    at_snapshot = expected_features(events, before, T0 + timedelta(days=4), _half_lives(settings))
    assert at_snapshot["user_ad__imp_24h"] >= before["user_ad__imp_24h"] + 1
    assert after["user_ad__imp_24h"] == at_snapshot["user_ad__imp_24h"]
    ties = [
        r
        for r in world["feast"]
        if (r["user_id"], r["ad_id"]) == ("u1", "ad1") and r["impression_ts"] == T0 + timedelta(days=2, hours=7)
    ]
    assert len(ties) == 2 and ties[0]["n_ad"] == ties[1]["n_ad"]  # ties share an index (strictly earlier only)


def test_chunked_feast_join_gives_the_same_rows(world, tmp_path):
    chunked = CONFIG.model_copy(update={"data": CONFIG.data.model_copy(update={"feast_chunk_rows": 97})})
    result = build_training_set(
        world["tmp"] / "events",
        world["settings"],
        chunked,
        out_path=tmp_path / "chunked.parquet",
        as_of=AS_OF,
        start=START,
        end=END,
        store=world["store"],
    )
    assert result.rows > 3 * 97  # several chunks
    assert result.sha256 == world["summary"].sha256  # byte-identical file


def test_missing_snapshots_stop_the_build_naming_the_days(world, tmp_path):
    settings = world["settings"]
    repo = tmp_path / "feast"
    publish_daily_snapshots(
        world["tmp"] / "events", T0, T0 + timedelta(days=1), settings, repo_dir=repo, store=_NoStore()
    )
    with pytest.raises(TrainingDataError, match=r"2026-10-04.*publish the missing days"):
        build_training_set(
            world["tmp"] / "events",
            settings,
            CONFIG,
            out_path=tmp_path / "t.parquet",
            as_of=AS_OF,
            start=START,
            end=END,
            repo_dir=repo,
            engine="duckdb",
        )


def test_labels_must_be_complete(world, tmp_path):
    with pytest.raises(TrainingDataError, match="labels incomplete"):
        build_training_set(
            world["tmp"] / "events",
            world["settings"],
            CONFIG,
            out_path=tmp_path / "t.parquet",
            as_of=AS_OF,
            start=START,
            end=AS_OF - timedelta(hours=1),
            engine="duckdb",
        )


class _NoStore:
    """Stands in for a FeatureStore where only `apply` is called (no registry needed for the duckdb engine)."""

    def apply(self, objects):
        return None

    def refresh_registry(self):
        return None
