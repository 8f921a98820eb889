"""Build hook: compiles the stream worker's row codec (`src/freqcap/adapters/feast/_rowcodec.c`).

Runs for every build, the editable install `make setup` makes (the module is compiled next to its source, where the
editable install imports it) and the wheel (the module is added to it, and the wheel is tagged for this platform).
Without a C compiler the build goes on without the codec and the stream worker runs the same steps in Python
(`freqcap.adapters.feast.native`); the test suite fails under CI when the codec is missing.
"""

from __future__ import annotations

import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src/freqcap/adapters/feast/_rowcodec.c")


class RowCodecBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name not in ("wheel", "editable"):
            return
        source = Path(self.root) / SOURCE
        target = source.with_name("_rowcodec" + sysconfig.get_config_var("EXT_SUFFIX"))
        compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
        command = [*compiler, "-O2", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], str(source),
                   "-o", str(target)]  # fmt: skip
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            self.app.display_warning(f"freqcap: the row codec was not compiled (the Python path is used): {detail}")
            return
        if version != "editable":  # the editable install imports it from the source tree
            build_data["force_include"][str(target)] = f"freqcap/adapters/feast/{target.name}"
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
