"""The champion gate's metric rule: no worse than the champion by more than the tolerance, per direction."""

from __future__ import annotations

import math

from freqcap.adapters.mlflow.tracking import _compare
from freqcap.domain.training.config import GateConfig, GateMetric

GATE = GateConfig(metrics=(GateMetric(name="roc_auc", tolerance=0.01), GateMetric(name="log_loss", tolerance=0.001)))


def test_within_tolerance_passes_and_beyond_fails():
    ok, comparison, failures = _compare(
        GATE, {"roc_auc": 0.795, "log_loss": 0.1005}, {"roc_auc": 0.80, "log_loss": 0.1}, ""
    )
    assert ok and not failures and comparison["roc_auc"]["passed"] and comparison["log_loss"]["passed"]
    ok, comparison, failures = _compare(
        GATE, {"roc_auc": 0.78, "log_loss": 0.099}, {"roc_auc": 0.80, "log_loss": 0.1}, ""
    )
    assert not ok and comparison["log_loss"]["passed"] and not comparison["roc_auc"]["passed"]
    assert failures == ["roc_auc 0.78000 is lower than the champion's 0.80000 by more than 0.01"]
    ok, _, failures = _compare(GATE, {"roc_auc": 0.9, "log_loss": 0.2}, {"roc_auc": 0.8, "log_loss": 0.1}, "")
    assert not ok and "log_loss" in failures[0] and "higher" in failures[0]


def test_logged_metric_prefix_and_missing_values():
    ok, comparison, failures = _compare(
        GATE,
        {"valid_roc_auc": 0.8, "valid_log_loss": math.nan},
        {"valid_roc_auc": 0.8, "valid_log_loss": 0.1},
        "valid_",
    )
    assert not ok and comparison["roc_auc"]["passed"] and "log_loss missing" in failures[0]
