"""Packaged resources are found without a source checkout, and an operator's own copies take their place."""

from __future__ import annotations

import json

import pytest
import yaml

from freqcap import resources
from freqcap.adapters.gx.suite import load_suite
from freqcap.config import load_settings
from freqcap.domain.monitoring.rules import load_alerts
from freqcap.domain.training.config import load_model_config


def test_every_packaged_resource_is_a_file_inside_the_installed_package():
    package_dir = resources.resource_path("gx/events.json").parents[2]
    assert package_dir.name == "freqcap"
    files = [
        *(resources.suite_path(n) for n in ("events.json", "features.json", "training.json", "decision_log.json")),
        resources.alerts_path(),
        resources.dashboard_path(),
        resources.model_config_path(),
    ]
    for path in files:
        assert path.is_file() and path.is_relative_to(package_dir), path
    assert {p.name for p in resources.dags_folder().glob("freqcap_*.py")} == {
        "freqcap_features.py",
        "freqcap_training.py",
        "freqcap_publish.py",
        "freqcap_monitoring.py",
        "freqcap_maintenance.py",
    }
    for path in files:  # each parses as what it claims to be
        (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text())


def test_a_missing_resource_says_which():
    with pytest.raises(resources.ResourceNotFound, match=r"gx/nope\.json"):
        resources.resource_path("gx/nope.json")
    with pytest.raises(resources.ResourceNotFound, match="suites_dir"):
        resources.suite_path("events.json", "/nonexistent-suites")


def test_an_operators_own_suite_directory_replaces_the_packaged_suite(tmp_path):
    doc = json.loads(resources.suite_path("events.json").read_text())
    doc["expectations"] = doc["expectations"][:3]
    (tmp_path / "events.json").write_text(json.dumps(doc))
    settings = load_settings(environ={"FREQCAP__VALIDATION__SUITES_DIR": str(tmp_path)})
    suite = load_suite(suites_dir=settings.validation.suites_dir)
    assert suite.path == tmp_path / "events.json"
    assert len(suite.rules) == 3 < len(load_suite().rules)


def test_own_alert_rules_and_model_config_by_path(tmp_path):
    alerts = yaml.safe_load(resources.alerts_path().read_text())
    alerts["rules"] = alerts["rules"][:1]
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(alerts))
    assert len(load_alerts(tmp_path / "alerts.yaml").rules) == 1 < len(load_alerts().rules)
    model = yaml.safe_load(resources.model_config_path().read_text())
    model["name"] = "my-model"
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(model))
    assert load_model_config(tmp_path / "model.yaml").name == "my-model"
    assert load_model_config().name != "my-model"
