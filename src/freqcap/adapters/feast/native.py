"""The compiled row codec (`_rowcodec.c`), when this install has it: the stream worker's per-row encoding in C.

Built by the package's build hook (`hatch_build.py`) wherever a C compiler is found; without one the stream
worker runs the same steps in Python (`freqcap.adapters.feast.stream_push`), which produce the same bytes and stay
the reference. `FREQCAP_NATIVE=off` turns the codec off (a benchmark's baseline, or to rule it out).
"""

from __future__ import annotations

import os
from types import ModuleType

from freqcap.adapters.feast import online_format as fmt


def row_codec() -> ModuleType | None:
    """The configured codec module, or None (not built here, or turned off)."""
    if os.environ.get("FREQCAP_NATIVE", "on").lower() in ("off", "0", "false", "no"):
        return None
    try:
        from freqcap.adapters.feast import _rowcodec  # type: ignore[attr-defined]
    except ImportError:
        return None
    _rowcodec.configure(
        fmt.TAGS[fmt.ValueType.INT64_LIST],
        fmt.PACKED_VAL_TAG,
        fmt.EMPTY_INT64_LIST,
        fmt.NULL_UNIX_TIMESTAMP,
        fmt.TAGS[fmt.ValueType.UNIX_TIMESTAMP],
    )
    return _rowcodec


def row_codec_name() -> str:
    """`native` or `python`: which row codec a worker of this install runs (status and benchmarks say it)."""
    return "native" if row_codec() is not None else "python"
