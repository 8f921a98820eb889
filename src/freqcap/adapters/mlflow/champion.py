"""The champion model, as monitoring uses it: its training set (the drift reference) and its predictions.

MLflow is only asked when there is somewhere to ask: a configured tracking URI, or the embedded SQLite store
already existing under the data dir (monitoring never creates an empty tracking database as a side effect).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from freqcap.adapters.mlflow.tracking import CHAMPION, ENCODING_KEY, alias_version, client, configure
from freqcap.domain.training.encoding import FeatureEncoding
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scorer:
    """Predicted conversion probability for training-set-shaped rows, and what it needs of them."""

    name: str  # e.g. models:/freqcap-conversion@champion (v3)
    input_columns: tuple[str, ...]
    predict: Callable[[pd.DataFrame], np.ndarray]

    def missing(self, frame: pd.DataFrame) -> list[str]:
        return [c for c in self.input_columns if c not in frame.columns]


def tracking_available(settings: Any) -> bool:
    """Is there a tracking store to read (without creating one)?"""
    if settings.tracking.tracking_uri:
        return True
    return DataLayout.of(settings).mlflow_db.is_file()


def _champion(settings: Any, registered_model: str) -> Any | None:
    if not tracking_available(settings):
        return None

    return alias_version(settings, registered_model, CHAMPION)


def champion_training_set(settings: Any, registered_model: str) -> Path | None:
    """The training set Parquet the champion was trained on (its run's `freqcap.training_set` tag), if any."""
    version = _champion(settings, registered_model)
    if version is None:
        return None

    tag = client(settings).get_run(version.run_id).data.tags.get("freqcap.training_set")
    return Path(tag) if tag else None


def champion_scorer(settings: Any, registered_model: str) -> Scorer | None:
    """The champion model (pyfunc) with its logged input encoding, or None when there is no champion."""
    version = _champion(settings, registered_model)
    if version is None:
        return None
    import mlflow.pyfunc

    configure(settings)
    uri = f"models:/{registered_model}/{version.version}"
    loaded = mlflow.pyfunc.load_model(uri)
    encoding = FeatureEncoding.from_dict(loaded.metadata.metadata[ENCODING_KEY])

    def predict(rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(loaded.predict(encoding.transform(rows)), dtype=np.float64).ravel()

    return Scorer(f"{uri} (champion)", (*encoding.vocabularies, *encoding.numeric), predict)
