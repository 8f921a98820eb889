"""The stream worker's compiled helpers (C), when this install has them.

`hatch_build.py` compiles them wherever a C compiler is found (`make setup`'s editable install, the wheel); each has
a Python version that produces the same result, stays the reference (the tests compare both) and runs where the
compiled one is missing. `FREQCAP_NATIVE=off` turns them all off (a benchmark's baseline, or to rule them out).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

# Each compiled module (the C file beside it, `<name>.c`), built by hatch_build.py.
MODULES = (
    "freqcap.adapters.feast._rowcodec",
    "freqcap.adapters.stream._pending",
    "freqcap.adapters.stream._counts",
    "freqcap.adapters.stream._parse",
)


def enabled() -> bool:
    """False when `FREQCAP_NATIVE` turns the compiled helpers off."""
    return os.environ.get("FREQCAP_NATIVE", "on").lower() not in ("off", "0", "false", "no")


def load(name: str) -> ModuleType | None:
    """The compiled module `name` (one of `MODULES`), or None: not built in this install, or turned off."""
    if not enabled():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def status() -> str:
    """`native` (every compiled helper in use), `python` (none) or `partial` (some missing from this build)."""
    found = sum(load(name) is not None for name in MODULES)
    return "native" if found == len(MODULES) else "python" if found == 0 else "partial"
