"""What the `freqcap` command prints besides its own output, by verbosity (`-v`, `-vv`, `-vvv`).

    verbosity   freqcap's logs   third-party logs   library warnings (Deprecation, Future, User)
    (default)   WARNING          ERROR              hidden
    -v          INFO             WARNING            as Python's and the libraries' own warning filters have them
    -vv         DEBUG            INFO               same (and MLflow's progress bars)
    -vvv        DEBUG            DEBUG              same

freqcap's own log warnings and errors are never hidden, and neither is a Python warning raised from freqcap's
code, nor one of another category (RuntimeWarning...). The settings hold for the whole command, including the
Airflow task runs the demo does in-process (`dag.test()`): Airflow configures logging its own way when it is
imported, so the demo hands it `airflow_logging()` and calls `after_airflow_import()` once it has.
Variables a user set (`MLFLOW_LOGGING_LEVEL`, `MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`) win over these defaults.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Categories libraries use to talk to developers, not to the person running a command.
LIBRARY_WARNINGS: tuple[type[Warning], ...] = (
    DeprecationWarning,
    PendingDeprecationWarning,
    FutureWarning,
    UserWarning,
)
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)  # the installed freqcap package


@dataclass(frozen=True)
class Output:
    verbosity: int
    own: int  # level of the `freqcap` loggers
    third_party: int  # level of every other logger (the root)

    @property
    def library_warnings(self) -> bool:
        return self.verbosity > 0


def levels(verbosity: int) -> Output:
    """freqcap's and third-party log levels for `verbosity` (the number of `-v`)."""
    own = (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG
    third_party = (logging.ERROR, logging.WARNING, logging.INFO)[verbosity] if verbosity < 3 else logging.DEBUG
    return Output(verbosity, own, third_party)


def _from_freqcap(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)


def is_library_noise(category: type[Warning], filename: str) -> bool:
    """A developer-facing warning raised outside freqcap's own code."""
    return issubclass(category, LIBRARY_WARNINGS) and not _from_freqcap(filename)


def _wrap_showwarnmsg(original: Callable) -> Callable:
    def showwarnmsg(msg: warnings.WarningMessage) -> None:
        if not is_library_noise(msg.category, msg.filename):
            original(msg)

    showwarnmsg.freqcap_wrapped = original  # type: ignore[attr-defined]
    return showwarnmsg


# What configure() changed, for restore(): (root level, freqcap level, environment variables it set).
_saved: list[tuple[int, int, list[str]]] = []


def configure(verbosity: int) -> Output:
    """Set up logging and warnings for one command; `restore()` puts back what this changed."""
    out = levels(verbosity)
    root, own = logging.getLogger(), logging.getLogger("freqcap")
    set_env: list[str] = []
    _saved.append((root.level, own.level, set_env))
    logging.basicConfig(level=out.third_party, format=LOG_FORMAT)
    root.setLevel(out.third_party)
    own.setLevel(out.own)
    # Read when these libraries are imported or used (always lazily, inside a command).
    defaults = {"MLFLOW_LOGGING_LEVEL": logging.getLevelName(out.third_party)}
    if verbosity < 2:
        defaults["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    for name, value in defaults.items():
        if name not in os.environ:
            os.environ[name] = value
            set_env.append(name)
    if not out.library_warnings and not hasattr(warnings._showwarnmsg, "freqcap_wrapped"):
        # Libraries insert their own filters at import (Feast turns every DeprecationWarning back on, Airflow its
        # own), and Airflow replaces `warnings.showwarning`; `_showwarnmsg` is the one hook between the filters and
        # whichever `showwarning` is current, so the decision made here holds whoever imports what later.
        warnings._showwarnmsg = _wrap_showwarnmsg(warnings._showwarnmsg)  # type: ignore[attr-defined]
    return out


def restore() -> None:
    """Undo the last `configure()` (the command is over, e.g. `main()` called in a test): levels, the variables
    it set and the warnings hook."""
    original = getattr(warnings._showwarnmsg, "freqcap_wrapped", None)
    if original is not None:
        warnings._showwarnmsg = original  # type: ignore[attr-defined]
    if _saved:
        root_level, own_level, set_env = _saved.pop()
        logging.getLogger().setLevel(root_level)
        logging.getLogger("freqcap").setLevel(own_level)
        for name in set_env:
            os.environ.pop(name, None)


def airflow_logging() -> dict[str, str]:
    """Levels for Airflow's logging configuration (`airflow_environment`): Airflow's loggers at the third-party
    level, except the one Python warnings go through once Airflow handles them (`py.warnings`), which keeps the
    warnings the hook above lets through, as before Airflow was imported."""
    third_party = logging.getLogger().getEffectiveLevel()
    warnings_level = min(third_party, logging.WARNING)
    return {
        "log_level": logging.getLevelName(third_party),
        "namespace_levels": f"py.warnings={logging.getLevelName(warnings_level)}",
    }


def after_airflow_import() -> None:
    """Airflow's logging configuration replaces the root handler with its own, at Airflow's level: let freqcap's
    records through it at freqcap's level (third-party loggers keep Airflow's, the third-party level)."""
    own = logging.getLogger("freqcap").getEffectiveLevel()
    for handler in logging.getLogger().handlers:
        if handler.level > own:
            handler.setLevel(own)
