"""Where MLflow keeps runs: embedded SQLite + local artifacts under the data dir unless configured."""

from __future__ import annotations

from types import SimpleNamespace

from freqcap.adapters.mlflow.uris import TrackingConfig, resolve_tracking
from freqcap.config import load_settings


def test_embedded_defaults_are_absolute_uris_under_the_data_dir(tmp_path):
    settings = load_settings(environ={"FREQCAP__DATA_DIR": str(tmp_path / "data")})
    resolved = resolve_tracking(settings)
    db = (tmp_path / "data" / "mlflow" / "mlflow.db").resolve()
    assert resolved.tracking_uri == f"sqlite:///{db}" and resolved.tracking_uri.startswith("sqlite:////")
    assert resolved.registry_uri == resolved.tracking_uri
    assert resolved.artifact_location == (tmp_path / "data" / "mlflow" / "artifacts").resolve().as_uri()
    assert resolved.artifact_location.startswith("file:///")


def test_a_tracking_section_wins(tmp_path):
    section = TrackingConfig(tracking_uri="http://mlflow:5000", registry_uri="http://registry:5000")
    resolved = resolve_tracking(SimpleNamespace(data_dir=tmp_path, tracking=section))
    assert resolved.tracking_uri == "http://mlflow:5000" and resolved.registry_uri == "http://registry:5000"
    assert resolved.artifact_location is None  # a server decides its own artifact root
    as_dict = SimpleNamespace(
        data_dir=tmp_path, tracking={"tracking_uri": "postgresql://db/mlflow", "artifact_location": "s3://b/a"}
    )
    resolved = resolve_tracking(as_dict)
    assert resolved.tracking_uri == "postgresql://db/mlflow" and resolved.artifact_location == "s3://b/a"
