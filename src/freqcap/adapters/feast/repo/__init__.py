"""Feast definitions for freqcap, split by object type as in Feast's templates.

Batch sources point at paths *relative to the feature store's data root*; `freqcap.adapters.feast.store` resolves
them to absolute paths when it applies the repo (Feast's duckdb offline store reads source paths verbatim).
"""

from freqcap.adapters.feast.repo.data_sources import BATCH_SOURCES
from freqcap.adapters.feast.repo.entities import ENTITIES
from freqcap.adapters.feast.repo.feature_services import FEATURE_SERVICES
from freqcap.adapters.feast.repo.feature_views import FEATURE_VIEWS

__all__ = ["BATCH_SOURCES", "ENTITIES", "FEATURE_SERVICES", "FEATURE_VIEWS"]
