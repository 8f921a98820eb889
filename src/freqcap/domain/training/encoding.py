"""From training-set rows to the model's input: categoricals as integer codes, numbers as they are.

Categoricals are encoded here, upstream of XGBoost, with fixed vocabularies (code = position; an unseen value
is -1), because the MLflow xgboost flavor's pyfunc path builds a plain DMatrix and breaks on pandas
categoricals (MLflow 3.17's xgboost flavor). The model input is a frame of int64/float64 columns in a fixed order, so a model
loaded with `mlflow.pyfunc.load_model(...)` predicts from `encoding.transform(rows)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from freqcap.domain.events import AUDIENCES, KNOWN_FORMATS, SIGNAL_TIERS
from freqcap.domain.training.columns import EXACT_COLUMNS

UNKNOWN_CODE = -1
CATEGORICAL_COLUMNS: tuple[str, ...] = ("format", "audience", "signal_tier")


def is_float_column(column: str) -> bool:
    """Recency (null when there is no earlier impression) and decayed counts are floats; the rest are counts."""
    return column.startswith("hours_since_last_") or column.endswith("imp_decayed")


def code_column(column: str) -> str:
    return f"{column}_code"


@dataclass(frozen=True)
class FeatureEncoding:
    """Vocabularies of the categorical columns and the numeric columns, in model-input order."""

    vocabularies: dict[str, tuple[str, ...]]
    numeric: tuple[str, ...]

    @property
    def input_columns(self) -> tuple[str, ...]:
        return tuple(code_column(c) for c in self.vocabularies) + self.numeric

    def encode_column(self, column: str, values: pd.Series) -> np.ndarray:
        """Integer codes of `values` in the column's vocabulary (-1 for anything else, nulls included)."""
        vocab = self.vocabularies[column]
        codes = pd.Categorical(values.astype("string").fillna("\0"), categories=list(vocab)).codes
        return codes.astype(np.int64)  # pandas gives -1 for values outside the categories

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model input for `frame` (training-set rows): int64 codes and counts, float64 elsewhere."""
        missing = [c for c in (*self.vocabularies, *self.numeric) if c not in frame.columns]
        if missing:
            raise KeyError(f"rows lack the model's input columns {missing}")
        out: dict[str, Any] = {code_column(c): self.encode_column(c, frame[c]) for c in self.vocabularies}
        for c in self.numeric:
            values = frame[c]
            if is_float_column(c):
                out[c] = values.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                if values.isna().any():
                    raise ValueError(f"column {c!r} is a count and must not be null")
                out[c] = values.to_numpy(dtype=np.int64)
        return pd.DataFrame(out, index=frame.index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocabularies": {k: list(v) for k, v in self.vocabularies.items()},
            "numeric": list(self.numeric),
            "unknown_code": UNKNOWN_CODE,
            "input_columns": list(self.input_columns),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEncoding:
        return cls({k: tuple(v) for k, v in data["vocabularies"].items()}, tuple(data["numeric"]))


def default_encoding(feature_columns: tuple[str, ...], formats: tuple[str, ...] = ()) -> FeatureEncoding:
    """The encoding for a training set with these Feast feature columns; `formats` extend the known ones."""
    format_vocab = tuple(dict.fromkeys((*KNOWN_FORMATS, *formats)))
    return FeatureEncoding(
        vocabularies={
            "format": format_vocab,
            "audience": (*AUDIENCES, "unknown"),
            "signal_tier": SIGNAL_TIERS,
        },
        numeric=("hour_of_day", *EXACT_COLUMNS, *feature_columns),
    )
