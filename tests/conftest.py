"""Shared test setup: an isolated Airflow home (set before anything imports airflow) and service fixtures.

Under CI (`CI=true`) a test that needs Redis fails when Redis is missing; elsewhere it is skipped.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The DAG files as the package ships them (the wheel test checks the installed copy).
DAGS_DIR = REPO_ROOT / "src" / "freqcap" / "dags"

# Airflow reads its configuration at import: fix it for the whole session before any test imports airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="freqcap-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "GX_ANALYTICS_ENABLED": "False",
        "FEAST_USAGE": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        # dag.test() waits out retry delays: keep them tiny in tests.
        "FREQCAP__ORCHESTRATION__RETRY_DELAY": "1s",
    }
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_URL = os.environ.get("FREQCAP_TEST_REDIS", "127.0.0.1:6379")


def _service_missing(name: str, reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{name} is required under CI but unavailable: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


@pytest.fixture(scope="session")
def redis_connection_string() -> str:
    """host:port of a live Redis; the test fails under CI when there is none."""
    import redis

    host, port = REDIS_URL.split(":")
    try:
        redis.Redis(host=host, port=int(port), socket_connect_timeout=2).ping()
    except Exception as exc:  # any connection problem means "no Redis here"
        _service_missing("Redis", str(exc))
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_cluster():
    """A local three-master Redis Cluster for the whole session (`tests.redis_cluster`); fails under CI when
    redis-server is missing. Tests keep to their own Feast project (keys), so they can share it."""
    from tests.redis_cluster import LocalRedisCluster

    cluster = LocalRedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run (start-up costs 7–20 s); fails under CI without Java or
    pyspark. Builds that open their own session (`features.engine: spark`) reuse it instead of starting another."""
    from freqcap.adapters.spark.runtime import SparkUnavailableError, spark_session
    from freqcap.config import SparkConfig

    # Two shuffle partitions: the test tables are tiny, and every partition is a task on two cores.
    config = SparkConfig(master="local[2]", driver_memory="1g", shuffle_partitions=2)
    try:
        context = spark_session(config)
        session = context.__enter__()
    except SparkUnavailableError as exc:
        _service_missing("Spark", str(exc))
    try:
        yield session
    finally:
        context.__exit__(None, None, None)
