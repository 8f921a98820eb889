"""The decision API built from settings alone, for `freqcap serve`.

With `--workers N` uvicorn starts N worker processes, each importing the app by name: it cannot be handed an app
object. `app_from_env` is that name (`freqcap.api.factory:app_from_env`, a factory): it reads the settings as any
freqcap process does (`FREQCAP_CONFIG`, `FREQCAP__*`) and the serve command's own options from the `FREQCAP_SERVE_*`
variables the command sets before starting uvicorn.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import FastAPI

from freqcap.adapters.decision_log import decision_log_from_settings
from freqcap.api.app import create_app
from freqcap.config import Settings, load_settings

ENV_POLICY = "FREQCAP_SERVE_POLICY"  # --policy (absolute path)
ENV_DEV = "FREQCAP_SERVE_DEV"  # --dev ("1")
ENV_LOG_LEVEL = "FREQCAP_SERVE_LOG_LEVEL"  # the level of freqcap's loggers (a worker does not inherit it)
FACTORY = "freqcap.api.factory:app_from_env"


def build_app(settings: Settings, *, policy_path: str | Path | None, dev: bool) -> FastAPI:
    """The decision API as `serving.*` configures it (`policy_path` None: start without a policy file)."""
    serving = settings.serving
    return create_app(
        settings,
        policy_path=Path(policy_path) if policy_path else None,
        admin_token=serving.admin_tokens,
        dev=dev,
        budget_ms=serving.budget_ms,
        lookup_workers=serving.lookup_workers,
        admission_ms=serving.admission_ms,
        max_in_flight=serving.max_in_flight,
        decision_log=decision_log_from_settings(settings),
    )


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process, from the environment `freqcap serve` prepared."""
    if level := os.environ.get(ENV_LOG_LEVEL):
        logger = logging.getLogger("freqcap")
        logger.setLevel(level)
        if not logging.getLogger().handlers and not logger.handlers:  # a fresh worker process has none
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"))
            logger.addHandler(handler)
    settings = load_settings()
    return build_app(
        settings,
        policy_path=os.environ.get(ENV_POLICY) or settings.serving.policy_path,
        dev=os.environ.get(ENV_DEV) == "1",
    )
