"""The Spark feature build writes the same tables as the DuckDB build, through the job the features DAG runs.

The events are chosen to trip an engine that differs: events exactly on every window edge, 1 µs either side, at
as_of and after it, exact duplicates and late duplicates (a second copy of an event id with a later timestamp), late
events in a second file under a Hive-style `key=value` folder (no engine may read the folder name as a column), a
click-only pair, and a users table that misses a user. Both builds must give identical tables (sorted, timestamps as
int64 µs; decayed sums to floating-point rounding, since the engines add in different orders), and the tier tables
must equal a loop-by-loop computation (`tests.bruteforce`). Snapshots published from each engine's builds on
consecutive days, with their tombstones, must be identical too.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.duckdb.features import build_features as build_duckdb
from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.snapshots import list_snapshots, publish_snapshot
from freqcap.adapters.feature_engine import build_features
from freqcap.adapters.spark.features import build_features_spark
from freqcap.config import load_settings
from freqcap.domain.features import all_windows
from freqcap.jobs.features import build_features_job
from tests.bruteforce import WINDOW_SECONDS, tier_features

pytestmark = [pytest.mark.spark, pytest.mark.slow]

AS_OF = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
SETTINGS = load_settings(environ={})
FEATURES = SETTINGS.features
HIERARCHY = {"a1": ("c1", "v1"), "a2": ("c1", "v1"), "a3": ("c2", "v1"), "a4": ("c3", "v2"), "a5": ("c3", "v2")}


def _row(i: int, user: str, ad: str, kind: str, ts: datetime, event_id: str | None = None) -> dict:
    campaign, advertiser = HIERARCHY[ad]
    return {
        "event_id": event_id or f"e{i}",
        "event_type": kind,
        "event_ts": ts,
        "user_id": user,
        "advertiser_id": advertiser,
        "campaign_id": campaign,
        "ad_id": ad,
        "format": "feed",
        "conversion_value": 2.5 if kind == "conversion" else None,
    }


def _events() -> tuple[list[dict], list[dict]]:
    """(main file rows, late file rows)."""
    rng = random.Random(18)
    kinds = ["impression"] * 4 + ["click", "conversion"]
    rows: list[dict] = []
    # Every window edge of every table (tiers and user table), exactly on it and 1 µs either side; as_of itself.
    for w in all_windows(FEATURES):
        for delta in (-US, timedelta(0), US):
            for kind in ("impression", "click", "conversion"):
                rows.append(_row(len(rows), "u1", "a1", kind, AS_OF - timedelta(seconds=w) + delta))
    for kind in ("impression", "click", "conversion"):
        rows.append(_row(len(rows), "u2", "a2", kind, AS_OF))
        rows.append(_row(len(rows), "u2", "a3", kind, AS_OF + US))  # after as_of: never counts
    rows.append(_row(len(rows), "u3", "a4", "click", AS_OF - timedelta(hours=2)))  # a click-only pair
    rows.append(_row(len(rows), "u10", "a5", "impression", AS_OF - timedelta(days=25)))  # quiet since: a tombstone
    for _ in range(400):  # random traffic over 30 days around the windows
        ts = AS_OF - timedelta(seconds=rng.randint(-7200, 30 * 86400), microseconds=rng.randint(0, 999_999))
        rows.append(_row(len(rows), f"u{rng.randint(1, 9)}", rng.choice(sorted(HIERARCHY)), rng.choice(kinds), ts))
    # Duplicates: exact copies, and a second copy of an id with a later timestamp (the earliest copy counts).
    rows += [dict(r) for r in rows[5:25:3]]
    for r in rows[30:60:4]:
        rows.append({**r, "event_ts": r["event_ts"] + timedelta(hours=3)})
    # Late events: old timestamps that arrived after the main file was written, in their own partition folder.
    late = [
        _row(10_000 + k, f"u{k % 4 + 1}", rng.choice(sorted(HIERARCHY)), rng.choice(kinds), AS_OF - timedelta(days=k))
        for k in range(1, 27, 2)
    ]
    late.append({**rows[40], "event_ts": rows[40]["event_ts"] - timedelta(minutes=7)})  # late, earlier duplicate
    return rows, late


@pytest.fixture(scope="module")
def events_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spark-features")
    main, late = _events()
    write_events(pa.Table.from_pylist(main), root / "raw" / "events" / "part-0.parquet")
    write_events(pa.Table.from_pylist(late), root / "raw" / "events" / "arrival=late" / "part-1.parquet")
    users = {"user_id": ["u1", "u2", "u3", "u5"], "audience": ["cold", "high_intent", "returning", "cold"]}
    pq.write_table(pa.table(users), root / "raw" / "users.parquet")  # u4, u6.. are missing: audience 'unknown'
    return root / "raw" / "events"


def _sorted_rows(path: Path) -> tuple[pa.Schema, list[dict]]:
    table = pq.read_table(path)
    cols = {}
    for name in table.column_names:
        col = table[name]
        if pa.types.is_timestamp(col.type):
            assert str(col.type.tz) in ("UTC", "Etc/UTC") and col.type.unit == "us", (path, name, col.type)
            col = pc.cast(col, pa.int64())  # epoch µs: the time zone label (UTC vs Etc/UTC) is not data
        cols[name] = col
    keys = [n for n in table.column_names if n.endswith("_id")]
    rows = pa.table(cols).sort_by([(k, "ascending") for k in keys]).to_pylist()
    schema = pa.schema([pa.field(f.name, f.type) for f in table.schema])  # names and types; not nullability
    return schema, rows


def _assert_same_tables(duck: dict[str, Path], spark: dict[str, Path]) -> None:
    assert sorted(duck) == sorted(spark)
    for name in duck:
        d_schema, d_rows = _sorted_rows(duck[name])
        s_schema, s_rows = _sorted_rows(spark[name])
        assert s_schema.names == d_schema.names, name
        assert [str(t) for t in s_schema.types] == [str(t) for t in d_schema.types], name
        assert len(s_rows) == len(d_rows) > 0, name
        for d, s in zip(d_rows, s_rows, strict=True):
            for col, value in d.items():
                if isinstance(value, float):  # summation order differs between engines: rounding only
                    assert math.isclose(s[col], value, rel_tol=1e-12, abs_tol=1e-15), (name, d, s)
                else:
                    assert s[col] == value, (name, col, d, s)


def _assert_tiers_match_brute_force(paths: dict[str, Path], events: list[dict]) -> None:
    for level in ("advertiser", "campaign", "ad"):
        expected = tier_features(events, AS_OF, level, FEATURES.tier(level).half_life_seconds)
        got = {(r["user_id"], r[f"{level}_id"]): r for r in pq.read_table(paths[f"user_{level}"]).to_pylist()}
        assert set(got) == set(expected), level
        for key, feats in expected.items():
            for label in WINDOW_SECONDS:
                for p in ("imp", "clk", "conv"):
                    assert got[key][f"{p}_{label}"] == feats.get(f"{p}_{label}", 0), (level, key, p, label)
            assert math.isclose(got[key]["imp_decayed"], feats.get("imp_decayed", 0.0), rel_tol=1e-9, abs_tol=1e-12)
            assert got[key]["last_imp_ts"] == feats.get("last_imp_ts")


def _deduplicated(events: list[dict]) -> list[dict]:
    first: dict[str, dict] = {}
    for e in events:
        if e["event_id"] not in first or e["event_ts"] < first[e["event_id"]]["event_ts"]:
            first[e["event_id"]] = e
    return list(first.values())


def test_deduplicated_builds_are_identical_and_match_brute_force(spark, events_dir, tmp_path):
    duck = build_duckdb(events_dir, AS_OF, tmp_path / "duck", FEATURES, deduplicate=True)
    sparkb = build_features_spark(spark, events_dir, AS_OF, tmp_path / "spark", FEATURES, deduplicate=True)
    assert sparkb.rows == duck.rows and sparkb.events_scanned == duck.events_scanned
    assert sparkb.notes == duck.notes == []
    _assert_same_tables(duck.paths, sparkb.paths)
    main, late = _events()
    _assert_tiers_match_brute_force(sparkb.paths, _deduplicated(main + late))
    users = {r["user_id"]: r["audience"] for r in pq.read_table(sparkb.paths["user"]).to_pylist()}
    assert users["u2"] == "high_intent" and users["u4"] == "unknown"


def test_the_features_job_runs_unchanged_on_spark(spark, events_dir, tmp_path):
    """`build_features_job` (the DAG's task, no deduplication: validation did it) on each engine by configuration."""
    outs = {}
    for engine in ("duckdb", "spark"):
        settings = load_settings(
            environ={"FREQCAP__DATA_DIR": str(tmp_path / engine), "FREQCAP__FEATURES__ENGINE": engine}
        )
        outs[engine] = build_features_job(str(events_dir), AS_OF.isoformat(), settings)
        assert all(Path(p).is_relative_to(tmp_path / engine / "runs") for p in outs[engine]["paths"].values())
    assert outs["spark"]["rows"] == outs["duckdb"]["rows"]
    assert outs["spark"]["events_scanned"] == outs["duckdb"]["events_scanned"]
    _assert_same_tables(
        {k: Path(v) for k, v in outs["duckdb"]["paths"].items()},
        {k: Path(v) for k, v in outs["spark"]["paths"].items()},
    )
    main, late = _events()
    _assert_tiers_match_brute_force({k: Path(v) for k, v in outs["spark"]["paths"].items()}, main + late)


def test_published_snapshots_and_tombstones_are_identical(spark, events_dir, tmp_path):
    """Two consecutive days from each engine, published: the second day's tombstones (pairs that went quiet) too."""
    settings = load_settings(environ={"FREQCAP__FEATURES__ENGINE": "spark"})
    days = (
        AS_OF - timedelta(days=20),
        AS_OF + timedelta(days=9, hours=5),
    )  # the second day's window drops day 1's start
    roots = {"duckdb": tmp_path / "duck-offline", "spark": tmp_path / "spark-offline"}
    for day in days:
        for engine, root in roots.items():
            out = tmp_path / engine / day.strftime("%Y%m%dT%H%M%S")
            if engine == "spark":
                build = build_features(events_dir, day, out, settings.features)  # the dispatcher, by configuration
            else:
                build = build_duckdb(events_dir, day, out, FEATURES)
            publish_snapshot(build, root)
    for table in ("user", "user_advertiser", "user_campaign", "user_ad"):
        snaps = {engine: list_snapshots(root, table) for engine, root in roots.items()}
        assert [t for t, _ in snaps["spark"]] == [t for t, _ in snaps["duckdb"]] == list(days)
        for (_, d), (_, s) in zip(snaps["duckdb"], snaps["spark"], strict=True):
            _assert_same_tables({table: d}, {table: s})
        newest = pq.read_table(snaps["spark"][-1][1]).to_pylist()
        quiet = [r for r in newest if r["user_id"] == "u10"]  # active on the first day only
        counts = [c for c in quiet[0] if c.split("_")[0] in ("imp", "clk", "conv") and c != "imp_decayed"]
        assert len(quiet) == 1 and all(quiet[0][c] == 0 for c in counts), (table, quiet)
