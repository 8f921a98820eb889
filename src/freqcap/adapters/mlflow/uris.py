"""Where MLflow keeps runs, models and artifacts: the `tracking` settings section resolved to absolute URIs.

Embedded default: a SQLite database and a local artifact directory under the data dir (`DataLayout.mlflow_dir`).
Production: an MLflow server (`http://...`) or a PostgreSQL URL, and an object-store artifact root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from freqcap.config import TrackingConfig
from freqcap.layout import DataLayout


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
    layout = DataLayout.of(settings)
    tracking_uri = config.tracking_uri or f"sqlite:///{layout.mlflow_db}"
    is_local_db = tracking_uri.startswith("sqlite:")
    artifact_location = config.artifact_location
    if artifact_location is None and (is_local_db or tracking_uri.startswith("file:")):
        artifact_location = layout.mlflow_artifacts.as_uri()
    if tracking_uri.startswith("sqlite:///") and config.tracking_uri is None:
        layout.mlflow_dir.mkdir(parents=True, exist_ok=True)
    return ResolvedTracking(tracking_uri, config.registry_uri or tracking_uri, artifact_location)
