"""Independent re-computations for the simulator tests: plain Python/pandas, no freqcap.domain.simulate internals."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq

LEVELS = ("advertiser", "campaign", "ad")


def read_events(out_dir: Path) -> pd.DataFrame:
    table = ds.dataset(out_dir / "events", format="parquet", partitioning="hive").to_table()
    return table.to_pandas()


def read_truth(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    imps = pq.read_table(out_dir / "truth" / "impressions.parquet").to_pandas()
    users = pq.read_table(out_dir / "truth" / "users.parquet").to_pandas()
    gt = json.loads((out_dir / "ground_truth.json").read_text())
    return imps, users, gt


def g_of(n: float, alpha: float, kappa: float, beta: float) -> float:
    """The declared response multiplier, written out from the formula in ground_truth.json."""
    return (1.0 + alpha * (n - 1.0) * math.exp(-(n - 2.0))) / (1.0 + ((n - 1.0) / kappa) ** beta)


def brute_force_exposures(impressions: pd.DataFrame, gt: dict[str, Any]) -> pd.DataFrame:
    """Per impression and level: the ordinal count and n_eff = 1 + Σ_prior 2^(−age/h), by a plain loop.

    `impressions` has event_id, user_id, event_ts, audience and the three entity ids.
    """
    imps = impressions.sort_values(["user_id", "event_ts"], kind="mergesort").reset_index(drop=True)
    t_days = (imps["event_ts"] - imps["event_ts"].min()).dt.total_seconds().to_numpy() / 86400.0
    users = imps["user_id"].to_numpy()
    audience = imps["audience"].to_numpy()
    out: dict[str, Any] = {"event_id": imps["event_id"].to_numpy()}
    for level in LEVELS:
        half_life = {a: gt["curves"][a][level]["half_life_days"] for a in gt["curves"]}
        entity = imps[f"{level}_id"].to_numpy()
        # (user, entity) -> (count so far, time of the last impression, n_eff of the last impression); the
        # decayed sum obeys n_eff_new = 1 + n_eff_last · 2^(−Δt/h).
        state: dict[tuple[str, str], tuple[int, float, float]] = {}
        counts = np.empty(len(imps), dtype=np.int64)
        n_eff = np.empty(len(imps))
        for i in range(len(imps)):
            key = (users[i], entity[i])
            h = half_life[audience[i]]
            if key in state:
                c, t_last, n_last = state[key]
                counts[i] = c + 1
                n_eff[i] = 1.0 + n_last * 2.0 ** (-(t_days[i] - t_last) / h)
            else:
                counts[i], n_eff[i] = 1, 1.0
            state[key] = (int(counts[i]), float(t_days[i]), float(n_eff[i]))
        out[f"bf_count_{level}"] = counts
        out[f"bf_n_eff_{level}"] = n_eff
    return pd.DataFrame(out)


def predicted_p_conv(
    n_eff: dict[str, np.ndarray],
    audience: np.ndarray,
    fmt: np.ndarray,
    baseline: np.ndarray,
    gt: dict[str, Any],
    without: tuple[str, ...] = (),
) -> np.ndarray:
    """p_conv from ground_truth.json: min(p_max, b_u × φ_format × Π_L g_{aud,L}(n_eff_L)).

    `without` drops the fatigue of those levels (g ≡ 1): a deliberately wrong model for power checks.
    """
    p_max = gt["response_function"]["p_max"]
    phi = {name: f["conv_multiplier"] for name, f in gt["formats"].items()}
    levels = [lv for lv in LEVELS if lv not in without]
    out = np.empty(len(audience))
    for i in range(len(audience)):
        gain = 1.0
        for level in levels:
            prm = gt["curves"][audience[i]][level]["params"]
            gain *= g_of(n_eff[level][i], prm["alpha"], prm["kappa"], prm["beta"])
        out[i] = min(p_max, baseline[i] * phi[fmt[i]] * gain)
    return out
