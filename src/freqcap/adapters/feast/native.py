"""The compiled row codec (`_rowcodec.c`): the stream worker's row encoding and HSET building in C, configured
with the ValueProto constants of `online_format` (their one home). See `freqcap.adapters.native`."""

from __future__ import annotations

from types import ModuleType

from freqcap.adapters.feast import online_format as fmt
from freqcap.adapters.native import load, status


def row_codec() -> ModuleType | None:
    """The configured codec module, or None (not built here, or turned off)."""
    codec = load("freqcap.adapters.feast._rowcodec")
    if codec is not None:
        codec.configure(
            fmt.TAGS[fmt.ValueType.INT64_LIST],
            fmt.PACKED_VAL_TAG,
            fmt.EMPTY_INT64_LIST,
            fmt.NULL_UNIX_TIMESTAMP,
            fmt.TAGS[fmt.ValueType.UNIX_TIMESTAMP],
        )
    return codec


def row_codec_name() -> str:
    """`native` or `python`: which path a stream worker of this install runs (`partial`: some compiled helpers of
    the build are missing); the worker logs it at start, the image's build checks it."""
    return status()
