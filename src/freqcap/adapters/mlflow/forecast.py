"""The what-if forecast in MLflow: table, plot and headline numbers on the champion's run (the run whose policy
is about to be published), under `publish/forecast/`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from freqcap.adapters.mlflow.tracking import client, configure


def log_forecast(settings: Any, run_id: str, table: pd.DataFrame, paths: list[Path]) -> list[str]:
    """Log the table (as an MLflow table and the CSV), the plot, and per level the candidate's relative change of
    conversions, impressions and reach for everyone as metrics `forecast_<metric>_change_<level>`."""
    configure(settings)
    mc = client(settings)
    for path in paths:
        mc.log_artifact(run_id, str(path), artifact_path="publish/forecast")
    mc.log_table(run_id, table, "publish/forecast/forecast_table.json")
    names = []
    everyone = table[table["cohort"] == "all"]
    for _, row in everyone[everyone["metric"].isin(["impressions", "conversions", "reach"])].iterrows():
        name = re.sub(r"[^A-Za-z0-9_]", "_", f"forecast_{row['metric']}_change_{row['level']}")
        if pd.notna(row["change_pct"]):
            mc.log_metric(run_id, name, float(row["change_pct"]))
            names.append(name)
    return names
