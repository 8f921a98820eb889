"""Build hook: compiles the stream worker's C helpers (`freqcap.adapters.native.MODULES`, each `<module>.c`).

Runs for every build, the editable install `make setup` makes (each module is compiled next to its source, where
the editable install imports it) and the wheel (the modules are added to it, and the wheel is tagged for this
platform). Without a C compiler the build goes on without them and the stream worker runs the same steps in Python
(`freqcap.adapters.native`); the test suite fails under CI when one is missing.
"""

from __future__ import annotations

import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# Kept equal to freqcap.adapters.native.MODULES (tests/unit/adapters/test_native.py checks it).
SOURCES = (
    "src/freqcap/adapters/feast/_rowcodec.c",
    "src/freqcap/adapters/stream/_pending.c",
    "src/freqcap/adapters/stream/_counts.c",
    "src/freqcap/adapters/stream/_parse.c",
)


class NativeBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name not in ("wheel", "editable"):
            return
        built = [target for source in SOURCES if (target := self._compile(Path(self.root) / source)) is not None]
        if version == "editable" or not built:  # the editable install imports them from the source tree
            return
        for target in built:
            package = target.parent.relative_to(Path(self.root) / "src").as_posix()
            build_data["force_include"][str(target)] = f"{package}/{target.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def _compile(self, source: Path) -> Path | None:
        target = source.with_name(source.stem + sysconfig.get_config_var("EXT_SUFFIX"))
        compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
        command = [*compiler, "-O2", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], str(source),
                   "-o", str(target)]  # fmt: skip
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            self.app.display_warning(f"freqcap: {source.name} was not compiled (its Python path is used): {detail}")
            return None
        return target
