"""`freqcap retention`: prints the counts per store; `--dry-run` removes nothing and prints the same counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from freqcap.cli.main import main
from freqcap.config import load_settings
from freqcap.layout import DataLayout

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_retention_command_dry_run_then_for_real(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FREQCAP__DATA_DIR", str(tmp_path / "data"))
    layout = DataLayout.of(load_settings())
    # monitoring runs keep 7 days (retention.monitoring_runs default): 8 days old goes, 6 days old stays
    old, new = (layout.monitoring_run(NOW - timedelta(days=d)).metrics for d in (8, 6))
    for path in (old, new):
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    args = ["retention", "--now", NOW.isoformat(), "--group", "monitoring"]

    assert main([*args, "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and dry["removed"]["monitoring_runs"] == 1
    assert old.exists() and new.exists()

    assert main(args) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["removed"] == dry["removed"]
    assert not old.exists() and new.exists()


def test_airflow_group_is_skipped_without_an_airflow_configured(tmp_path):
    from freqcap.jobs.retention import airflow_configured

    assert not airflow_configured({})
    assert airflow_configured({"AIRFLOW_HOME": str(tmp_path)})
    assert airflow_configured({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////x.db"})
