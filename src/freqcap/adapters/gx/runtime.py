"""Importing Great Expectations quietly and building an in-memory context: shared by every GX gate.

GX is imported lazily (seconds of import time) and, when Airflow was imported first, would log ~200 INFO lines
and draw progress bars; this keeps it at WARNING, silent and without analytics.
"""

from __future__ import annotations

import logging
import os
from typing import Any


def import_gx() -> Any:
    """`great_expectations`, imported with its logging at WARNING and analytics off."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    import great_expectations as gx

    # Some GX modules pin their own logger to INFO at import; keep them at WARNING like the rest.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        is_gx = name.startswith("great_expectations.") and isinstance(logger, logging.Logger)
        if is_gx and logging.NOTSET < logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    return gx


def ephemeral_context(gx: Any) -> Any:
    """An ephemeral (in-memory) context with no docs site and no progress bars."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)
