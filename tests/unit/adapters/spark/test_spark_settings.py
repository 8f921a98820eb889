"""The engine setting and the Spark session's configuration, without starting Spark."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from freqcap.adapters.feature_engine import build_features
from freqcap.adapters.spark.runtime import SparkUnavailableError, session_conf
from freqcap.config import SparkConfig, load_settings


def test_defaults_are_duckdb_and_a_local_spark():
    features = load_settings(environ={}).features
    assert features.engine == "duckdb"
    assert (features.spark.master, features.spark.driver_memory) == ("local[2]", "2g")


def test_engine_master_and_memory_come_from_the_environment():
    features = load_settings(
        environ={
            "FREQCAP__FEATURES__ENGINE": "spark",
            "FREQCAP__FEATURES__SPARK__MASTER": "spark://10.0.0.5:7077",
            "FREQCAP__FEATURES__SPARK__DRIVER_MEMORY": "4G",
            "FREQCAP__FEATURES__SPARK__SHUFFLE_PARTITIONS": "64",
        }
    ).features
    assert features.engine == "spark"
    assert features.spark == SparkConfig(master="spark://10.0.0.5:7077", driver_memory="4g", shuffle_partitions=64)


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("ENGINE", "flink", "engine"),
        ("SPARK__DRIVER_MEMORY", "lots", "driver_memory"),
        ("SPARK__SHUFFLE_PARTITIONS", "0", "shuffle_partitions"),
    ],
)
def test_bad_engine_settings_are_rejected_naming_the_field(key, value, named):
    with pytest.raises(ValidationError, match=named):
        load_settings(environ={f"FREQCAP__FEATURES__{key}": value})


def test_the_session_is_utc_with_microsecond_parquet_and_user_conf_last():
    conf = session_conf(SparkConfig(conf={"spark.executor.memory": "8g", "spark.sql.shuffle.partitions": "400"}))
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.sql.parquet.outputTimestampType"] == "TIMESTAMP_MICROS"
    assert conf["spark.driver.memory"] == "2g" and conf["spark.ui.enabled"] == "false"
    assert conf["spark.executor.memory"] == "8g" and conf["spark.sql.shuffle.partitions"] == "400"


def test_spark_without_java_fails_with_a_clear_message_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    features = load_settings(environ={"FREQCAP__FEATURES__ENGINE": "spark"}).features
    with pytest.raises(SparkUnavailableError, match=r"no Java runtime.*Java 17.*features.engine: duckdb"):
        build_features(tmp_path / "events", datetime(2026, 10, 1, tzinfo=UTC), tmp_path / "out", features)
    assert not (tmp_path / "out").exists()


def test_spark_without_pyspark_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # what an install without the extra looks like to `import`
    features = load_settings(environ={"FREQCAP__FEATURES__ENGINE": "spark"}).features
    with pytest.raises(SparkUnavailableError, match=r"freqcap\[spark\]"):
        build_features(tmp_path / "events", datetime(2026, 10, 1, tzinfo=UTC), tmp_path / "out", features)
