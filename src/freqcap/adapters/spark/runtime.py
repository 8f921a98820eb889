"""The one place a Spark session is configured, started and stopped.

The settings that make Spark agree with DuckDB (measured, see the library notes): the session time zone is UTC
(timestamp literals and `timestamp_micros` are read in it), Parquet timestamps are written as TIMESTAMP_MICROS
(Spark's default INT96 is a nanosecond legacy type DuckDB and Feast read differently), and the driver gets 2 GB
(1 GB lost task results on 10 M events). The UI is off: no port is opened on a shared machine.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from freqcap.config import SparkConfig
from freqcap.errors import FreqcapError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# SQL settings that may change on a running session: applied to a session we reuse, too.
_RUNTIME_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}


class SparkUnavailableError(FreqcapError):
    """Spark cannot start here: pyspark is not installed or Java is missing; the message says which and how."""


def _require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise SparkUnavailableError(
            "features.engine is 'spark' but pyspark is not installed: pip install 'freqcap[spark]' "
            "(or set features.engine: duckdb)"
        ) from exc


def java_available() -> bool:
    """True when a `java` executable is on JAVA_HOME or PATH (Spark's JVM needs Java 17)."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return True
    return shutil.which("java") is not None


def session_conf(config: SparkConfig) -> dict[str, str]:
    """Every Spark setting freqcap starts a session with (the user's `conf` last, so it can override)."""
    conf = {
        "spark.driver.memory": config.driver_memory,
        "spark.sql.shuffle.partitions": str(config.shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # The JVM's own zone too: anything Spark formats outside SQL (logs, string casts in UDF-free paths).
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        **_RUNTIME_CONF,
    }
    if config.local_dir is not None:
        conf["spark.local.dir"] = str(config.local_dir)
    return {**conf, **config.conf}


@contextmanager
def spark_session(config: SparkConfig) -> Iterator[SparkSession]:
    """A Spark session on `config.master` for the `with` block; stopped at its end.

    If a session is already active in this process (a caller that builds several days, a test module), it is
    reused with the UTC / microsecond settings applied, and left running: its owner stops it."""
    _require_pyspark()
    if not java_available():
        raise SparkUnavailableError(
            "features.engine is 'spark' but no Java runtime was found (JAVA_HOME or `java` on PATH): "
            "install Java 17, or set features.engine: duckdb"
        )
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in _RUNTIME_CONF.items():
            active.conf.set(key, value)
        yield active
        return
    started = time.perf_counter()
    builder = SparkSession.builder.master(config.master).appName(config.app_name)
    for key, value in session_conf(config).items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # py4j / JVM start-up errors carry the cause in their text
        raise SparkUnavailableError(f"Spark did not start on master {config.master!r}: {exc}") from exc
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark session on %s started in %.1fs", config.master, time.perf_counter() - started)
    try:
        yield spark
    finally:
        spark.stop()
