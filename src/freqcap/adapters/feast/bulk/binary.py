"""Arrow binary arrays built and joined row-wise in C++: the bulk writer's bytes are assembled a column at a time.

Everything the writer sends (serialized values, RESP commands, DUMP payloads) is a concatenation of per-row pieces
and constants; building it with `binary_join_element_wise` and NumPy buffers keeps Python out of the per-row loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freqcap.adapters.feast.bulk.errors import BulkMaterializeError


def join(*parts: Any) -> pa.Array:
    """Row-wise concatenation of binary arrays and byte-string constants."""
    args = [pa.scalar(p, pa.binary()) if isinstance(p, bytes) else p for p in parts]
    out = pc.binary_join_element_wise(*args, pa.scalar(b"", pa.binary()))
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def ascii_lengths(arr: pa.Array) -> pa.Array:
    """Each row's byte length in decimal ASCII (a RESP bulk-string header)."""
    return pc.cast(pc.cast(pc.binary_length(arr), pa.string()), pa.binary())


def binary_from_rows(mat: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """Row i of `mat` truncated to lengths[i] bytes, as an Arrow binary array."""
    n, width = mat.shape
    if n and bool((lengths == width).all()):
        data = np.ascontiguousarray(mat).reshape(-1)
    else:
        data = mat[np.arange(width)[None, :] < lengths[:, None]]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise BulkMaterializeError("batch too large for 32-bit offsets: lower batch_rows")
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data.tobytes())]
    )
