"""The training set on Spark (impressions, exposure indices, labels and the point-in-time feature join) equals the
DuckDB path on the same snapshots.

The world is `tests/unit/domain/training/test_point_in_time.py`'s (traps: an impression exactly at a snapshot
time with a conversion and a click at that microsecond, tied impressions, impressions 1 µs either side of a
snapshot), with its daily snapshots (built by DuckDB: the Spark build's equality is `test_spark_features`'s). Both training sets
carry each view's joined snapshot time; every row must be equal between engines, and the features of each row
must equal a loop-by-loop computation as of the latest snapshot strictly before the impression.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.duckdb.training_set import build_training_set
from freqcap.adapters.events_files import write_events
from freqcap.config import load_settings, parse_duration
from freqcap.jobs.backfill import publish_daily_snapshots
from tests.unit.domain.training.bruteforce import expected_features, latest_snapshot
from tests.unit.domain.training.test_point_in_time import AS_OF, CONFIG, END, START, T0, _events, _NoStore

pytestmark = [pytest.mark.spark, pytest.mark.slow]
VIEWS = ("user", "user_advertiser", "user_campaign", "user_ad")


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spark-pit")
    events = _events()
    write_events(pa.Table.from_pylist(events), tmp / "events" / "part-0.parquet")
    settings = load_settings(
        environ={
            "FREQCAP__DATA_DIR": str(tmp / "data"),
            "FREQCAP__FEAST__PROJECT": f"t{uuid.uuid4().hex[:10]}",
        }
    )
    repo = tmp / "data" / "feast"
    backfill = publish_daily_snapshots(tmp / "events", T0, END, settings, repo_dir=repo, store=_NoStore())
    sets = {
        engine: build_training_set(
            tmp / "events",
            settings,
            CONFIG,
            out_path=tmp / engine / "training_set.parquet",
            as_of=AS_OF,
            start=START,
            end=END,
            repo_dir=repo,
            engine=engine,
            snapshot_ts=True,
        )
        for engine in ("duckdb", "spark")
    }
    return {"events": events, "settings": settings, "snapshots": list(backfill.published), "sets": sets}


def test_spark_join_equals_the_duckdb_asof_join(built):
    duck, spark = built["sets"]["duckdb"], built["sets"]["spark"]
    assert spark.engine == "spark" and spark.rows == duck.rows > 200
    d_table, s_table = pq.read_table(duck.path), pq.read_table(spark.path)
    assert s_table.schema.names == d_table.schema.names
    assert [str(f.type) for f in s_table.schema] == [str(f.type) for f in d_table.schema]
    d_rows, s_rows = d_table.to_pylist(), s_table.to_pylist()  # both ordered by (impression time, event_id)
    assert [r["event_id"] for r in s_rows] == [r["event_id"] for r in d_rows]
    for d, s in zip(d_rows, s_rows, strict=True):
        for col, value in d.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(s[col]), (d["event_id"], col)
            else:
                assert s[col] == value, (d["event_id"], col, s[col], value)


def test_every_spark_row_uses_the_last_snapshot_before_the_impression(built):
    events, settings = built["events"], built["settings"]
    ttl = parse_duration(settings.feast.snapshot_ttl)
    half_lives = {t.level: t.half_life_seconds for t in settings.features.tiers}
    joined_any = 0
    for row in pq.read_table(built["sets"]["spark"].path).to_pylist():
        t = row["impression_ts"]
        snapshot = latest_snapshot(built["snapshots"], t, ttl)
        assert snapshot is not None and snapshot < t
        for col, value in expected_features(events, row, snapshot, half_lives).items():
            if col.endswith("imp_decayed"):
                assert math.isclose(row[col], value, rel_tol=1e-9, abs_tol=1e-12), (row["event_id"], col)
            else:
                assert row[col] == value, (row["event_id"], col, row[col], value)
        for view in VIEWS:
            joined = row[f"{view}__snapshot_ts"]
            if joined is not None:  # None: the key has no row (zero by the sparse contract)
                joined_any += 1
                assert joined == snapshot, (row["event_id"], view, joined, snapshot)
    assert joined_any > 0


def test_the_trap_at_a_snapshot_time_takes_the_previous_snapshot(built):
    """The impression exactly at a snapshot time must join the snapshot a day earlier, not its own."""
    rows = {r["event_id"]: r for r in pq.read_table(built["sets"]["spark"].path).to_pylist()}
    trap = rows["x1001"]  # impression of u0 on ad0 at T0 + 3 days, a snapshot time
    assert trap["impression_ts"] == T0 + timedelta(days=3)
    assert trap["user_ad__snapshot_ts"] == T0 + timedelta(days=2)
