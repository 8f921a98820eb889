"""The capacity plan's arithmetic (benchmarks/capacity_plan.py) against values worked out by hand.

The inputs are small round numbers chosen so every expected value below can be checked on paper; the expected
values are written out in bytes, cores and counts, not computed by the plan's own code.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def cp():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("capacity_plan", BENCH / "capacity_plan.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["capacity_plan"] = module  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def _units(cp):
    return cp.UnitCosts(
        pairs_per_user={"advertiser": 2.0, "campaign": 4.0, "ad": 8.0},
        activity_elasticity={"advertiser": 0.5, "campaign": 0.5, "ad": 0.5},
        events_per_user_day=10.0,
        catalog={"advertisers": 10, "campaigns": 40, "ads": 160},
        bytes_per_key=100.0,
        stream_extra_bytes={"advertiser": 10.0, "campaign": 10.0, "ad": 10.0},
        stream_pair_states_per_user=3.0,
        bytes_per_pair_state=50.0,
        bytes_per_dedup_mark=20.0,
        bytes_per_stream_entry=100.0,
        dedup_ttl_s=3 * 3600.0,
        seen_generations=4,
        serving_cpu_ms=2.0,
        serving_cpu_in_process_ms=1.0,
        redis_cpu_ms_per_decision=0.5,
        stream_worker_cpu_us=100.0,
        stream_redis_cpu_us=20.0,
        stream_worker_measured_rate=5000.0,
        duckdb_cpu_s_per_m_events=1.0,
        spark_cpu_s_per_m_events=10.0,
        materialize_rows_per_s=1000.0,
        redis_cpu_us_per_row=5.0,
    )


def _values(lines) -> dict[str, float]:
    return {ln.name: ln.value for ln in lines}


GIB = 2**30


def test_small_world_every_line(cp):
    # 86,400 users at 40 events/s: 40 events per user per day, 4x the measured 10 -> pairs x 4^0.5 = x 2.
    t = cp.Targets(users=86_400, campaigns=40, decisions_per_s=10_000, events_per_s=40)
    a = cp.Assumptions(redis_shard_max_gb=0.1, redis_fill=0.5, redis_cpu_util=0.5, airflow_other_slots=8)
    v = _values(cp.compute(_units(cp), t, a))

    assert v["events per user per day (target)"] == pytest.approx(40)
    assert v["activity ratio k"] == pytest.approx(4)
    assert v["user x advertiser pairs per user"] == pytest.approx(4)
    assert v["user x campaign pairs per user"] == pytest.approx(8)
    assert v["user x ad pairs per user"] == pytest.approx(16)
    assert v["keys per user"] == pytest.approx(29)

    # 86,400 x 29 x 100 B; 86,400 x 28 pairs x 10 B; 86,400 x min(3 x 2, 28) x 50 B
    assert v["batch features"] * GIB == pytest.approx(250_560_000)
    assert v["stream views in the pair hashes"] * GIB == pytest.approx(24_192_000)
    assert v["stream worker pair states"] * GIB == pytest.approx(25_920_000)
    # span = 3 h / 3 = 3,600 s; a mark lives 4.5 spans on average = 16,200 s; 40/s x 16,200 s x 20 B
    assert v["dedup mark lifetime (mean)"] == pytest.approx(16_200)
    assert v["stream dedup marks"] * GIB == pytest.approx(12_960_000)
    assert v["event stream buffer"] * GIB == pytest.approx(2_400_000)  # 40/s x 600 s x 100 B
    assert v["data (masters)"] * GIB == pytest.approx(316_032_000)
    assert v["data without dedup marks"] * GIB == pytest.approx(303_072_000)
    assert v["with replicas"] * GIB == pytest.approx(632_064_000)

    # 316,032,000 B = 0.2943 GiB over 0.05 GiB per shard -> 6 shards; CPU 10,000 x 0.5 ms = 5 cores (+ stream, materialization) -> 11
    assert v["shards for memory"] == 6
    assert v["Redis CPU, decisions"] == pytest.approx(5.0)
    assert v["Redis CPU, stream"] == pytest.approx(0.0008)
    assert v["Redis CPU, daily materialization (during its window)"] == pytest.approx(2_505_600 * 5e-6 / 14_400)
    assert v["shards for CPU"] == 11  # (5 + 0.0008 + 0.00087) / 0.5 = 10.003 -> 11
    assert v["shards (masters)"] == 11
    assert v["Redis nodes"] == 22

    # serving: 10,000 x 2 ms = 20 cores, / 0.6 = 33.3, / 2 per replica -> 17; floor 10,000 x 1 ms / 0.6 / 2 -> 9
    assert v["serving CPU"] == pytest.approx(20)
    assert v["serving replicas"] == 17
    assert v["floor: replicas at the in-process fast path's CPU"] == 9

    # stream: 0.7 / 100 µs = 7,000 events/s per worker -> 1 worker, 2 partitions
    assert v["events/s per worker"] == pytest.approx(7000)
    assert v["stream workers"] == 1
    assert v["stream partitions"] == 2

    # batch: 40 x 86,400 = 3,456,000 events a day, x 28 = 96,768,000 per build, x 10 s per M = 967.68 core-s
    assert v["events per daily build"] == pytest.approx(96_768_000)
    assert v["Spark CPU per build"] == pytest.approx(967.68)
    assert v["Spark executors"] == 1
    assert v["DuckDB on one node, for comparison: core-hours per build"] == pytest.approx(96.768 / 3600)
    assert v["materialization processes"] == 1  # 2,505,600 rows / (1,000/s x 14,400 s)
    assert v["Airflow task slots"] == 9
    assert v["Airflow workers"] == 2


def test_busy_users_hit_the_catalog_and_scale_out(cp):
    # 20,000 events/s over 86,400 users: 20,000 per user per day, k = 2,000, k^0.5 = 44.7: every tier's pairs
    # would exceed the catalog (10 advertisers, 40 campaigns, 160 ads), so the catalog bounds them.
    t = cp.Targets(users=86_400, campaigns=40, decisions_per_s=100, events_per_s=20_000)
    a = cp.Assumptions(spark_efficiency=0.5, airflow_other_slots=15)
    v = _values(cp.compute(_units(cp), t, a))
    assert v["user x advertiser pairs per user"] == pytest.approx(10)
    assert v["user x campaign pairs per user"] == pytest.approx(40)
    assert v["user x ad pairs per user"] == pytest.approx(160)
    assert v["keys per user"] == pytest.approx(211)
    # stream states: min(3 x 44.72, 210) = 134.16 per user
    assert v["stream worker pair states"] * GIB == pytest.approx(86_400 * 3 * 2000**0.5 * 50)
    assert v["stream workers"] == 3  # 20,000 / 7,000 = 2.86
    assert v["stream partitions"] == 8  # 2^ceil(log2(6))
    assert v["cross-check: workers at the measured drain rate"] == 4  # 20,000 / 5,000
    # 1.728e9 events a day x 28 = 4.8384e10 -> 483,840 core-s / (14,400 s x 4 cores x 0.5) = 16.8 -> 17
    assert v["Spark executors"] == 17
    # one day per run: 1,728 M x 10 s = 17,280 core-s / 28,800 = 0.6 -> 1
    assert v["Spark executors if one day is aggregated per run (daily partials merged)"] == 1
    # 86,400 x 211 = 18,230,400 rows / 14,400,000 per process -> 2 processes, 17 slots -> 3 workers
    assert v["materialization processes"] == 2
    assert v["Airflow workers"] == 3


def test_sensitivity_follows_the_activity(cp):
    # At the measured world's own activity (10 events per user per day) k = 1: the measured pairs, 2 + 4 + 8 + 1
    # keys per user; at 40 per day it is the first test's world again (29 keys, 11 masters).
    t = cp.Targets(users=86_400, campaigns=40, decisions_per_s=10_000, events_per_s=1)
    a = cp.Assumptions(redis_shard_max_gb=0.1, redis_fill=0.5, redis_cpu_util=0.5)
    low, high = cp.sensitivity(_units(cp), t, a, [10.0, 40.0])
    assert low["events_per_s"] == pytest.approx(10.0)
    assert low["keys_per_user"] == pytest.approx(15)
    assert low["redis_data_gib"] * GIB == pytest.approx(
        86_400 * 15 * 100 + 86_400 * 14 * 10 + 86_400 * 3 * 50 + 10 * 16_200 * 20 + 10 * 600 * 100
    )
    assert high["keys_per_user"] == pytest.approx(29)
    assert high["shards"] == 11


def test_tables_and_numbers_are_read_from_markdown(cp):
    text = (
        "intro\n\n| stage | CPU µs per request | share |\n|---|---|---|\n"
        "| whole request, fast path (msgspec) | 1,909.1 | 100 % |\n| policy engine | 183.1 | 20 % |\n\ntail\n"
    )
    (rows,) = cp.md_tables(text)
    assert rows[0]["CPU µs per request"] == "1,909.1"
    assert cp.number(rows[0]["CPU µs per request"]) == pytest.approx(1909.1)
    assert cp.number("0.3 % (overload 10, timeout 6)") == pytest.approx(0.3)
    assert cp.number("11.83x") == pytest.approx(11.83)
    with pytest.raises(ValueError, match="no number"):
        cp.number("-")


def test_recorded_http_table_picks_the_highest_rate_with_few_degraded(cp, tmp_path):
    header = (
        "| target req/s | achieved req/s | degraded (answers, by reason) | serving CPU ms/req | Redis CPU ms/req |\n"
        "|---|---|---|---|---|\n"
    )
    body = (
        "| one at a time | 523 | 0 | 1.52 | 0.36 |\n| 250 | 250 | 0 | 1.79 | 0.34 |\n"
        "| 500 | 500 | 0.3 % (overload 10) | 1.47 | 0.33 |\n| 1,000 | 1,000 | 12.3 % (overload 1203) | 1.27 | 0.27 |\n"
    )
    (tmp_path / "http.md").write_text("# t\n\n" + header + body)
    serving, redis_ms, source = cp._http_costs(tmp_path)
    assert (serving, redis_ms) == (1.47, 0.33)
    assert "500" in source
