"""The model-based exposure curve: the predicted conversion rate as the exposure index n varies at one level.

For each cohort (audience × signal tier) and level L, take (a deterministic sample of) the cohort's rows, set
`n_L` to 1, 2, …, max_n while every other feature keeps its observed value, and average the predicted
probability: the partial dependence of the rate on n_L within the cohort. `freqcap.domain.curves` compares it with the
empirical, survivorship-robust curve; this module only produces it.

Caveat: holding the other features fixed includes the recency and Feast counts of the same level, so the curve
isolates what the model attributes to n itself; it is not what a user at exposure n typically looks like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from freqcap.domain.training.columns import exposure_column
from freqcap.domain.training.config import CurveConfig
from freqcap.domain.training.encoding import FeatureEncoding

CURVE_COLUMNS: tuple[str, ...] = (
    "cohort",
    "audience",
    "signal_tier",
    "level",
    "n",
    "rate",
    "rows",
    "support",
    "observed_rate",
)


def cohort_label(audience: str, signal_tier: str) -> str:
    """The readable cohort name of the curves contract (`returning/engaged`)."""
    return f"{audience}/{signal_tier}"


def _predict(booster: Any, inputs: pd.DataFrame) -> np.ndarray:
    return np.asarray(booster.inplace_predict(inputs), dtype=np.float64)


def model_curve(
    booster: Any,
    rows: pd.DataFrame,
    encoding: FeatureEncoding,
    config: CurveConfig,
    label_column: str = "label_conversion",
    seed: int = 0,
) -> pd.DataFrame:
    """Partial dependence of the predicted rate on n per cohort × level; columns `CURVE_COLUMNS`.

    `rows` are training-set rows (typically the validation part). `rows`/`support`: rows averaged over and rows
    observed at exactly that n in the cohort; `observed_rate`: their label rate (NaN without support), a raw
    reference that is *not* survivorship-robust.
    """
    out: list[pd.DataFrame] = []
    rng = np.random.default_rng(seed)
    ns = np.arange(1, config.max_n + 1)
    for (audience, tier), cohort in rows.groupby(["audience", "signal_tier"], sort=True, observed=True):
        if len(cohort) < config.min_cohort_rows:
            continue
        take = (
            cohort
            if len(cohort) <= config.sample_rows
            else cohort.iloc[np.sort(rng.choice(len(cohort), config.sample_rows, replace=False))]
        )
        base = encoding.transform(take)
        tiled = pd.DataFrame(
            {c: np.tile(base[c].to_numpy(), len(ns)) for c in base.columns}, columns=list(base.columns)
        )
        for level in config.levels:
            col = exposure_column(level)
            tiled[col] = np.repeat(ns, len(base)).astype(np.int64)
            preds = _predict(booster, tiled).reshape(len(ns), len(base))
            observed = cohort[col].to_numpy()
            labels = cohort[label_column].to_numpy()
            support = np.array([(observed == n).sum() for n in ns])
            hits = np.array([labels[observed == n].sum() for n in ns], dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                observed_rate = np.where(support > 0, hits / np.maximum(support, 1), np.nan)
            out.append(
                pd.DataFrame(
                    {
                        "cohort": cohort_label(str(audience), str(tier)),
                        "audience": str(audience),
                        "signal_tier": str(tier),
                        "level": level,
                        "n": ns.astype(np.int64),
                        "rate": preds.mean(axis=1),
                        "rows": np.int64(len(base)),
                        "support": support.astype(np.int64),
                        "observed_rate": observed_rate,
                    }
                )
            )
            tiled[col] = np.tile(base[col].to_numpy(), len(ns))
    if not out:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _EMPTY_DTYPES.items()})
    return pd.concat(out, ignore_index=True)[list(CURVE_COLUMNS)]


_EMPTY_DTYPES = {
    "cohort": "object",
    "audience": "object",
    "signal_tier": "object",
    "level": "object",
    "n": "int64",
    "rate": "float64",
    "rows": "int64",
    "support": "int64",
    "observed_rate": "float64",
}
