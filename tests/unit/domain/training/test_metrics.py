"""freqcap's metrics against scikit-learn (ROC-AUC, average precision, log loss) and a brute-force ECE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from freqcap.domain.training import metrics as m


def _data(seed: int, n: int, ties: bool):
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 20, n)
    if ties:
        p = np.round(p, 2)  # many tied scores
    y = (rng.random(n) < p * 1.5).astype(int)
    y[:2] = [0, 1]  # both classes
    return y, p


@pytest.mark.parametrize("seed,n,ties", [(0, 50, False), (1, 2000, True), (2, 5000, False), (3, 17, True)])
def test_against_sklearn(seed, n, ties):
    y, p = _data(seed, n, ties)
    assert m.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m.pr_auc(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m.log_loss(y, p) == pytest.approx(log_loss(y, p), rel=1e-9)


def test_extreme_predictions_are_clipped_like_sklearn():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.0, 1.0, 0.0, 1.0])
    assert m.log_loss(y, p) == pytest.approx(log_loss(y, p), rel=1e-9)


def _ece_brute(y, p, n_bins, strategy):
    n = len(y)
    if strategy == "uniform":
        bins = [[i for i in range(n) if min(int(p[i] * n_bins), n_bins - 1) == b] for b in range(n_bins)]
    else:
        order = sorted(range(n), key=lambda i: (p[i], i))
        sizes = [n // n_bins + (1 if b < n % n_bins else 0) for b in range(n_bins)]
        bins, start = [], 0
        for size in sizes:
            bins.append(order[start : start + size])
            start += size
    total = 0.0
    for rows in bins:
        if rows:
            total += len(rows) * abs(sum(y[i] for i in rows) / len(rows) - sum(p[i] for i in rows) / len(rows))
    return total / n


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
@pytest.mark.parametrize("n_bins", [1, 5, 10])
def test_ece_brute_force(strategy, n_bins):
    y, p = _data(4, 503, ties=False)
    assert m.ece(y, p, n_bins, strategy) == pytest.approx(_ece_brute(y, p, n_bins, strategy), abs=1e-12)


def test_perfect_calibration_has_small_ece_and_one_bin_is_the_mean_gap():
    rng = np.random.default_rng(9)
    p = rng.uniform(0.01, 0.3, 200_000)
    y = (rng.random(len(p)) < p).astype(int)
    assert m.ece(y, p) < 0.005
    assert m.ece(y, p, n_bins=1) == pytest.approx(abs(y.mean() - p.mean()))


def test_single_class_gives_nan_auc_and_grouped_metrics():
    y = np.zeros(10)
    p = np.linspace(0, 1, 10)
    assert math.isnan(m.roc_auc(y, p)) and math.isnan(m.pr_auc(y, p))
    y2, p2 = _data(5, 400, ties=False)
    groups = np.where(np.arange(400) % 2 == 0, "cold", "returning")
    grouped = m.grouped_metrics(y2, p2, groups)
    assert set(grouped) == {"cold", "returning"}
    assert grouped["cold"]["roc_auc"] == pytest.approx(roc_auc_score(y2[::2], p2[::2]))
    assert grouped["returning"]["rows"] == 200


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="0 or 1"):
        m.roc_auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="differ in length"):
        m.log_loss(np.array([0, 1]), np.array([0.1]))
