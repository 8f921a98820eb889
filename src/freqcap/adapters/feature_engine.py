"""The feature build on the configured engine (`features.engine`): DuckDB in process, or Spark.

Jobs, the CLI and the backfill call these instead of an engine's module, so the features DAG runs unchanged on
either engine. `feature_builder` keeps one Spark session for several builds (a backfill of many days pays the
JVM start-up, 7–10 s, once); `build_features` is one build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from freqcap.adapters.duckdb.features import build_features as build_features_duckdb
from freqcap.adapters.spark.features import build_features_spark  # pyspark itself is imported only when used
from freqcap.adapters.spark.runtime import spark_session
from freqcap.config import FeaturesConfig
from freqcap.domain.features import FeatureBuild

# (events, as_of, out_dir, *, users, deduplicate) -> FeatureBuild
FeatureBuilder = Callable[..., FeatureBuild]


@contextmanager
def feature_builder(config: FeaturesConfig) -> Iterator[FeatureBuilder]:
    """A build function on `config.engine`, valid inside the `with` block (Spark: the session's lifetime)."""
    if config.engine == "duckdb":

        def duckdb_build(events, as_of, out_dir, *, users=None, deduplicate=True) -> FeatureBuild:
            return build_features_duckdb(events, as_of, out_dir, config, users=users, deduplicate=deduplicate)

        yield duckdb_build
        return
    with spark_session(config.spark) as spark:

        def spark_build(events, as_of, out_dir, *, users=None, deduplicate=True) -> FeatureBuild:
            return build_features_spark(spark, events, as_of, out_dir, config, users=users, deduplicate=deduplicate)

        yield spark_build


def build_features(
    events: str | Path,
    as_of: datetime,
    out_dir: str | Path,
    config: FeaturesConfig,
    *,
    users: str | Path | None = None,
    deduplicate: bool = True,
) -> FeatureBuild:
    """One feature build on `config.engine` (see `freqcap.adapters.duckdb.features.build_features`)."""
    with feature_builder(config) as build:
        return build(events, as_of, out_dir, users=users, deduplicate=deduplicate)
