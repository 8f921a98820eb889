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
from freqcap.domain.training.columns import EXACT_COLUMNS, LEVEL_ORDER, exposure_column

UNKNOWN_CODE = -1
CATEGORICAL_COLUMNS: tuple[str, ...] = ("format", "audience", "signal_tier")


def is_float_column(column: str) -> bool:
    """Recency (null when there is no earlier impression) and decayed counts are floats; the rest are counts."""
    return column.startswith("hours_since_last_") or column.endswith("imp_decayed")


def code_column(column: str) -> str:
    return f"{column}_code"


def wear_in_column(level: str) -> str:
    """min(n_L, wear_in): the exposure index up to the wear-in, where the response may rise."""
    return f"{exposure_column(level)}_wear_in"


def wear_out_column(level: str) -> str:
    """max(n_L − wear_in, 0): exposures beyond the wear-in, where the response may only fall."""
    return f"{exposure_column(level)}_beyond"


# Pair-level impression counts duplicate what the exact exposure index n_L (count) and hours_since_last_L
# (recency) say: imp_28d is n_L − 1, imp_7d/imp_24h/imp_decayed mix count and recency. Left in the model they
# absorb the count's effect (the partial dependence on n_L goes flat); `pair_counts=False` leaves them out.
PAIR_COUNT_PREFIXES: tuple[str, ...] = ("user_advertiser__imp_", "user_campaign__imp_", "user_ad__imp_")


def is_pair_count(column: str) -> bool:
    return column.startswith(PAIR_COUNT_PREFIXES)


@dataclass(frozen=True)
class FeatureEncoding:
    """Vocabularies of the categorical columns and the numeric columns, in model-input order."""

    vocabularies: dict[str, tuple[str, ...]]
    numeric: tuple[str, ...]
    # With a wear-in w, each exposure index n_L enters the model as two inputs, min(n_L, w) and
    # max(n_L − w, 0), so that a monotone constraint can hold beyond the wear-in only (None: n_L as it is).
    wear_in: int | None = None

    @property
    def input_columns(self) -> tuple[str, ...]:
        return tuple(code_column(c) for c in self.vocabularies) + tuple(
            col for c in self.numeric for col in self._inputs_of(c)
        )

    def _split(self, column: str) -> bool:
        return self.wear_in is not None and column in _EXPOSURE_LEVEL

    def _inputs_of(self, column: str) -> tuple[str, ...]:
        if self._split(column):
            level = _EXPOSURE_LEVEL[column]
            return (wear_in_column(level), wear_out_column(level))
        return (column,)

    def monotone_constraints(self) -> dict[str, int]:
        """XGBoost `monotone_constraints` by input name: the response to exposures beyond the wear-in may only
        fall (-1); everything else is free. Empty without a wear-in split."""
        if self.wear_in is None:
            return {}
        return {wear_out_column(_EXPOSURE_LEVEL[c]): -1 for c in self.numeric if c in _EXPOSURE_LEVEL}

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
                counts = values.to_numpy(dtype=np.int64)
                if self._split(c):
                    first, beyond = self._inputs_of(c)
                    out[first] = np.minimum(counts, self.wear_in)
                    out[beyond] = np.maximum(counts - self.wear_in, 0)
                else:
                    out[c] = counts
        return pd.DataFrame(out, index=frame.index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocabularies": {k: list(v) for k, v in self.vocabularies.items()},
            "numeric": list(self.numeric),
            "wear_in": self.wear_in,
            "unknown_code": UNKNOWN_CODE,
            "input_columns": list(self.input_columns),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEncoding:
        return cls({k: tuple(v) for k, v in data["vocabularies"].items()}, tuple(data["numeric"]), data.get("wear_in"))


_EXPOSURE_LEVEL: dict[str, str] = {exposure_column(lv): lv for lv in LEVEL_ORDER}


def default_encoding(
    feature_columns: tuple[str, ...],
    formats: tuple[str, ...] = (),
    *,
    wear_in: int | None = None,
    pair_counts: bool = True,
) -> FeatureEncoding:
    """The encoding for a training set with these Feast feature columns; `formats` extend the known ones.

    `wear_in` splits each exposure index at the wear-in (see `FeatureEncoding`); `pair_counts=False` leaves the
    pair-level impression counts out of the model (see `PAIR_COUNT_PREFIXES`)."""
    if not pair_counts:
        feature_columns = tuple(c for c in feature_columns if not is_pair_count(c))
    format_vocab = tuple(dict.fromkeys((*KNOWN_FORMATS, *formats)))
    return FeatureEncoding(
        vocabularies={
            "format": format_vocab,
            "audience": (*AUDIENCES, "unknown"),
            "signal_tier": SIGNAL_TIERS,
        },
        numeric=("hour_of_day", *EXACT_COLUMNS, *feature_columns),
        wear_in=wear_in,
    )
