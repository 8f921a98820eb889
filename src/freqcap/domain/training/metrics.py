"""Binary classification metrics in plain numpy (checked against scikit-learn in the tests).

- `roc_auc`: the Mann–Whitney statistic with average ranks for ties (= sklearn's `roc_auc_score`).
- `pr_auc`: average precision, Σ (Rₖ − Rₖ₋₁)·Pₖ over distinct score thresholds (= `average_precision_score`).
- `log_loss`: mean negative log-likelihood, probabilities clipped to [ε, 1 − ε] with ε = float64 eps.
- `ece`: expected calibration error, Σ_b (n_b / N)·|mean(y_b) − mean(p_b)|. Bins hold equal numbers of rows by
  default (`strategy="quantile"`): with conversion rates of a few percent, equal-width bins would put almost
  every row in the first bin and hide miscalibration.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np


def _arrays(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {len(y)} vs {len(p)}")
    if len(y) == 0:
        raise ValueError("no rows")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return y, p


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC; NaN when only one class is present."""
    y, p = _arrays(y, p)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    ranks = avg_rank[inverse]
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision; NaN when there is no positive."""
    y, p = _arrays(y, p)
    n_pos = y.sum()
    if n_pos == 0:
        return math.nan
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]
    tp = np.cumsum(ys)[last_of_threshold]
    predicted = last_of_threshold + 1.0
    precision = tp / predicted
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _arrays(y, p)
    eps = np.finfo(np.float64).eps
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def ece(y: np.ndarray, p: np.ndarray, n_bins: int = 10, strategy: Literal["quantile", "uniform"] = "quantile") -> float:
    """Expected calibration error over `n_bins` bins of the predictions."""
    y, p = _arrays(y, p)
    if n_bins < 1:
        raise ValueError("n_bins must be positive")
    if strategy == "quantile":
        order = np.argsort(p, kind="mergesort")
        bins = np.array_split(order, n_bins)
    elif strategy == "uniform":
        idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
        bins = [np.flatnonzero(idx == b) for b in range(n_bins)]
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    total = 0.0
    for rows in bins:
        if len(rows):
            total += len(rows) * abs(y[rows].mean() - p[rows].mean())
    return float(total / len(y))


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The four headline metrics plus rows, positives and the mean prediction vs the label rate."""
    y, p = _arrays(y, p)
    return {
        "roc_auc": roc_auc(y, p),
        "pr_auc": pr_auc(y, p),
        "log_loss": log_loss(y, p),
        "ece": ece(y, p),
        "rows": float(len(y)),
        "positives": float(y.sum()),
        "label_rate": float(y.mean()),
        "mean_prediction": float(p.mean()),
    }


def grouped_metrics(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, float]]:
    """`binary_metrics` per group value (e.g. per audience)."""
    y, p = _arrays(y, p)
    groups = np.asarray(groups)
    return {str(g): binary_metrics(y[groups == g], p[groups == g]) for g in sorted(set(groups.tolist()))}
