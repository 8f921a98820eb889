"""MLflow retention on a real local SQLite tracking store: old runs of freqcap's experiments go with their
artifacts, logged models and unaliased model versions; the champion's run (however old) and its training set stay;
other experiments are not touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

from freqcap.config import load_settings
from freqcap.jobs.retention import prune
from freqcap.layout import DataLayout

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MLFLOW_CUT = NOW - 180 * DAY  # retention.mlflow_runs default, restated
TRAINING_CUT = NOW - 90 * DAY  # retention.training_sets default
EXPERIMENT, MODEL = "freqcap-conversion", "freqcap-conversion"  # resources/models/conversion.yaml


class _Constant:
    """A trivial pyfunc model: what matters here is that MLflow 3 stores it as a logged model with artifacts."""

    def predict(self, context, model_input):
        return model_input


def _local(uri: str) -> Path:
    return Path(urlparse(uri).path)


@pytest.fixture
def tracked(tmp_path):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.pyfunc import PythonModel

    from freqcap.adapters.mlflow.tracking import configure, ensure_experiment

    settings = load_settings(environ={"FREQCAP__DATA_DIR": str(tmp_path / "data")})
    resolved = configure(settings)
    client = MlflowClient(resolved.tracking_uri, resolved.registry_uri)
    exp = ensure_experiment(settings, EXPERIMENT)
    other = ensure_experiment(settings, "someone-elses-experiment")
    layout = DataLayout.of(settings)
    artifact = tmp_path / "note.txt"
    artifact.write_text("artifact")
    model_cls = type("Constant", (PythonModel,), {"predict": _Constant.predict})

    def run(experiment_id: str, age_days: float, with_model: bool = False, training_age: float | None = None):
        started = int((NOW - age_days * DAY).timestamp() * 1000)
        r = client.create_run(experiment_id, start_time=started)
        client.log_artifact(r.info.run_id, str(artifact))
        if training_age is not None:
            path = layout.training_dir("conversion", NOW - training_age * DAY) / "training.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("rows")
            client.set_tag(r.info.run_id, "freqcap.training_set", str(path))
        model_uri = None
        if with_model:
            with mlflow.start_run(run_id=r.info.run_id):
                info = mlflow.pyfunc.log_model(name="model", python_model=model_cls(), pip_requirements=[])
            model_uri = info.model_uri
        client.set_terminated(r.info.run_id, end_time=started + 1000)
        return client.get_run(r.info.run_id), model_uri

    champion, champion_uri = run(exp, 400, with_model=True, training_age=200)
    old_model, old_model_uri = run(exp, 190, with_model=True, training_age=190)
    old_plain, _ = run(exp, 185)
    recent, _ = run(exp, 10)
    foreign, _ = run(other, 300)
    v1 = mlflow.register_model(champion_uri, MODEL).version
    v2 = mlflow.register_model(old_model_uri, MODEL).version
    client.set_registered_model_alias(MODEL, "champion", v1)
    return {
        "settings": settings,
        "client": client,
        "exp": exp,
        "runs": {"champion": champion, "old_model": old_model, "old_plain": old_plain, "recent": recent},
        "foreign": foreign,
        "versions": (v1, v2),
        "layout": layout,
    }


def _logged_models(client, experiment_id: str) -> dict[str, str]:
    return {m.model_id: m.source_run_id for m in client.search_logged_models([experiment_id])}


def test_old_runs_and_their_artifacts_go_the_champions_run_stays(tracked):
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    client, runs, settings = tracked["client"], tracked["runs"], tracked["settings"]
    # Independently: which runs are old (started before the cut-off) and not the champion's.
    doomed = {
        name for name, r in runs.items() if r.info.start_time < MLFLOW_CUT.timestamp() * 1000 and name != "champion"
    }
    assert doomed == {"old_model", "old_plain"}
    artifact_dirs = {name: _local(r.info.artifact_uri) for name, r in runs.items()}
    assert all(d.is_dir() for d in artifact_dirs.values())
    models_before = _logged_models(client, tracked["exp"])
    model_dirs = {mid: _local(client.get_logged_model(mid).artifact_location) for mid in models_before}
    assert all(d.is_dir() for d in model_dirs.values())

    dry = prune(settings, NOW, dry_run=True, groups=["training"])
    assert dry["mlflow_runs"] == len(doomed) and dry["mlflow_model_versions"] == 1
    assert {r.info.run_id for r in client.search_runs([tracked["exp"]], run_view_type=ViewType.ALL)} == {
        r.info.run_id for r in runs.values()
    }
    assert all(d.is_dir() for d in artifact_dirs.values())

    counts = prune(settings, NOW, groups=["training"])
    assert counts == dry
    left = {r.info.run_id for r in client.search_runs([tracked["exp"]], run_view_type=ViewType.ALL)}
    assert left == {runs[n].info.run_id for n in runs if n not in doomed}
    for name in doomed:
        with pytest.raises(MlflowException):
            client.get_run(runs[name].info.run_id)  # permanently deleted, not just marked
        assert not artifact_dirs[name].exists(), name
    for name in set(runs) - doomed:
        assert artifact_dirs[name].is_dir(), name
    # The old run's logged model went with its artifacts; the champion's stayed.
    for mid, source in models_before.items():
        if source == runs["old_model"].info.run_id:
            assert not model_dirs[mid].exists()
        else:
            assert model_dirs[mid].is_dir()
    v1, v2 = tracked["versions"]
    assert [v.version for v in client.search_model_versions(f"name = '{MODEL}'")] == [v1]
    with pytest.raises(MlflowException):
        client.get_model_version(MODEL, v2)  # the unaliased version of the deleted run went with it
    assert client.get_model_version_by_alias(MODEL, "champion").version == v1
    # Another experiment's run is not ours to prune, however old.
    assert client.get_run(tracked["foreign"].info.run_id).info.lifecycle_stage == "active"
    # Training sets: the champion's (200 days old) kept, the other old one gone.
    layout = tracked["layout"]
    assert layout.training_dir("conversion", NOW - 200 * DAY).is_dir()
    assert NOW - 190 * DAY < TRAINING_CUT and not layout.training_dir("conversion", NOW - 190 * DAY).exists()
