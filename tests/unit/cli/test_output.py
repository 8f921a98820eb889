"""The `freqcap` command's output policy: log levels by -v count, library warnings hidden by default."""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from pathlib import Path

import pytest

import freqcap
from freqcap.cli import output

cli_main = importlib.import_module("freqcap.cli.main")  # the module (`freqcap.cli.main` is also the function)

FREQCAP_FILE = str(Path(freqcap.__file__).parent / "jobs" / "features.py")
LIBRARY_FILE = str(Path(pytest.__file__).parent / "somewhere.py")


@pytest.fixture
def isolated(monkeypatch):
    """configure() then restore() around the test, and restore() must put everything back."""
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    root, own = logging.getLogger(), logging.getLogger("freqcap")
    before = root.level, own.level, warnings._showwarnmsg
    yield
    while output._saved:
        output.restore()
    assert (root.level, own.level, warnings._showwarnmsg) == before
    assert "MLFLOW_LOGGING_LEVEL" not in os.environ


def test_each_v_raises_freqcap_and_third_party_levels():
    table = {v: (output.levels(v).own, output.levels(v).third_party) for v in range(5)}
    assert table == {
        0: (logging.WARNING, logging.ERROR),
        1: (logging.INFO, logging.WARNING),
        2: (logging.DEBUG, logging.INFO),
        3: (logging.DEBUG, logging.DEBUG),
        4: (logging.DEBUG, logging.DEBUG),
    }
    assert cli_main.build_parser().parse_args(["-vv", "demo"]).verbose == 2
    assert cli_main.build_parser().parse_args(["demo"]).verbose == 0


def _emit(category: type[Warning], filename: str) -> None:
    warnings.warn_explicit(f"{category.__name__} from {filename}", category, filename, 1)


def test_default_hides_library_warnings_whatever_filters_libraries_install(isolated):
    with warnings.catch_warnings(record=True) as caught:
        output.configure(0)
        warnings.simplefilter("always")  # what a library may do at import (Feast does it for DeprecationWarning)
        for category in (DeprecationWarning, FutureWarning, UserWarning, PendingDeprecationWarning, RuntimeWarning):
            _emit(category, LIBRARY_FILE)
        _emit(FutureWarning, FREQCAP_FILE)  # raised from freqcap's own code: never hidden
    assert [(w.category, w.filename) for w in caught] == [(RuntimeWarning, LIBRARY_FILE), (FutureWarning, FREQCAP_FILE)]
    assert logging.getLogger("freqcap").level == logging.WARNING
    assert logging.getLogger().level == logging.ERROR


def test_verbose_shows_library_warnings_and_restore_removes_the_hook(isolated):
    with warnings.catch_warnings(record=True) as caught:
        output.configure(1)
        warnings.simplefilter("always")
        _emit(DeprecationWarning, LIBRARY_FILE)
    assert [w.category for w in caught] == [DeprecationWarning]
    assert logging.getLogger("freqcap").level == logging.INFO

    output.configure(0)
    output.restore()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _emit(DeprecationWarning, LIBRARY_FILE)
    assert [w.category for w in caught] == [DeprecationWarning]


def test_airflow_logs_at_the_third_party_level_but_passes_warnings_through(isolated):
    output.configure(0)
    assert output.airflow_logging() == {"log_level": "ERROR", "namespace_levels": "py.warnings=WARNING"}
    output.restore()
    output.configure(2)
    assert output.airflow_logging() == {"log_level": "INFO", "namespace_levels": "py.warnings=INFO"}


def test_mlflow_defaults_follow_the_level_unless_set(isolated, monkeypatch):
    output.configure(0)
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "ERROR"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    output.restore()
    assert "MLFLOW_LOGGING_LEVEL" not in os.environ
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "DEBUG")
    output.configure(0)
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "DEBUG"
    output.restore()
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "DEBUG"  # the user's, untouched
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL")


def test_a_missing_pipeline_library_is_named_with_the_extra(isolated, monkeypatch, capsys):
    def needs_airflow(args):
        raise ModuleNotFoundError("No module named 'airflow'", name="airflow")

    monkeypatch.setattr(cli_main.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(cli_main, "cmd_monitor", needs_airflow)
    assert cli_main.main(["monitor"]) == 2
    err = capsys.readouterr().err
    assert "freqcap monitor" in err and "airflow" in err and "freqcap[all]" in err


def test_other_missing_modules_still_raise(isolated, monkeypatch):
    def needs_something(args):
        raise ModuleNotFoundError("No module named 'nonexistent_thing'", name="nonexistent_thing")

    monkeypatch.setattr(cli_main, "cmd_monitor", needs_something)
    with pytest.raises(ModuleNotFoundError):
        cli_main.main(["monitor"])
