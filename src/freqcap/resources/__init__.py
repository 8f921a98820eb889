"""Files freqcap ships inside the package, found with `importlib.resources` so an installed wheel needs no checkout.

    gx/events.json, features.json, training.json, decision_log.json   Great Expectations suites (the gates)
    monitoring/alerts.yaml, dashboard.yaml                              alarm rules and the Evidently dashboard
    models/conversion.yaml                                              the reference conversion-model config
    (the DAG files live in `freqcap.dags`; `dags_folder()` is Airflow's dags folder)

Operators use their own copies through settings, never by editing the installed package:
`validation.suites_dir`, `monitoring.alerts_path`, `monitoring.dashboard_path`, `training.model_config_path`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from freqcap.errors import FreqcapError


class ResourceNotFound(FreqcapError):
    """A packaged file is missing, or the package is not installed as plain files."""


def resource_path(relative: str) -> Path:
    """The packaged file `relative` (e.g. `gx/events.json`) as a filesystem path."""
    # Installed packages are plain directories (pip and uv unpack wheels), so the resource is a real file that
    # GX, YAML readers and Airflow's dags folder can open by path.
    path = Path(str(resources.files(__name__).joinpath(relative)))
    if not path.is_file():
        raise ResourceNotFound(f"freqcap resource {relative} not found at {path}")
    return path


def suite_path(name: str, suites_dir: str | Path | None = None) -> Path:
    """Expectation suite `name` (e.g. `events.json`): from `suites_dir` when set, else the packaged one."""
    if suites_dir is not None:
        path = Path(suites_dir) / name
        if not path.is_file():
            raise ResourceNotFound(f"expectation suite {name} not found in validation.suites_dir {suites_dir}")
        return path
    return resource_path(f"gx/{name}")


def alerts_path() -> Path:
    return resource_path("monitoring/alerts.yaml")


def dashboard_path() -> Path:
    return resource_path("monitoring/dashboard.yaml")


def model_config_path() -> Path:
    return resource_path("models/conversion.yaml")


def dags_folder() -> Path:
    """The folder of freqcap's DAG files (`freqcap.dags`): point Airflow's dags folder or a DAG bundle here."""
    return Path(str(resources.files("freqcap.dags")))
