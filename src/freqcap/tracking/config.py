"""Where MLflow keeps runs, models and artifacts: the `tracking` settings section.

Embedded default: a SQLite database and a local artifact directory under the data dir
(`sqlite:////<data_dir>/mlflow/mlflow.db`, `file:///<data_dir>/mlflow/artifacts`). Production: an MLflow
server (`http://...`) or a PostgreSQL URL, and an object-store artifact root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class TrackingConfig(BaseModel):
    """`Settings.tracking`. Empty URIs mean the embedded defaults under the data dir."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # MLflow tracking URI; None: SQLite at <data_dir>/mlflow/mlflow.db.
    tracking_uri: str | None = None
    # Model registry URI; None: the tracking URI.
    registry_uri: str | None = None
    # Artifact root for experiments this code creates; None: <data_dir>/mlflow/artifacts (or the server's default
    # when the tracking URI is a server).
    artifact_location: str | None = None


@dataclass(frozen=True)
class ResolvedTracking:
    tracking_uri: str
    registry_uri: str
    artifact_location: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracking_uri": self.tracking_uri,
            "registry_uri": self.registry_uri,
            "artifact_location": self.artifact_location,
        }


def tracking_config(settings: Any) -> TrackingConfig:
    """`settings.tracking` when the settings have that section, else the defaults."""
    section = getattr(settings, "tracking", None)
    if section is None:
        return TrackingConfig()
    if isinstance(section, TrackingConfig):
        return section
    return TrackingConfig.model_validate(section.model_dump() if hasattr(section, "model_dump") else section)


def resolve_tracking(settings: Any) -> ResolvedTracking:
    """Absolute URIs for these settings (SQLite needs `sqlite:////abs/path`, artifacts `file:///abs/path`)."""
    config = tracking_config(settings)
    root = Path(settings.data_dir).resolve() / "mlflow"
    tracking_uri = config.tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
    is_local_db = tracking_uri.startswith("sqlite:")
    artifact_location = config.artifact_location
    if artifact_location is None and (is_local_db or tracking_uri.startswith("file:")):
        artifact_location = (root / "artifacts").as_uri()
    if tracking_uri.startswith("sqlite:///") and config.tracking_uri is None:
        (root).mkdir(parents=True, exist_ok=True)
    return ResolvedTracking(tracking_uri, config.registry_uri or tracking_uri, artifact_location)
