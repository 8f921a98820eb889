"""Fixtures shared by the adapters' unit tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType

import pytest

from freqcap.adapters.native import load


@pytest.fixture(scope="session")
def compiled() -> Callable[[str], ModuleType]:
    """`compiled(name)`: the compiled module `name` (one of `freqcap.adapters.native.MODULES`); a test that needs one
    skips where this install was built without a C compiler, and fails under CI, where it must be built."""

    def module(name: str) -> ModuleType:
        found = load(name)
        if found is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{name} is not built in this install (hatch_build.py needs a C compiler)")
            pytest.skip(f"{name} is not built here (no C compiler when the package was installed)")
        return found

    return module
