"""Numpy views of an Arrow string array's buffers, for checks and hashes without Python objects."""
import numpy as np
import pyarrow as pa


def string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The array's n + 1 offsets (int32, into the text; the first need not be 0) and its whole
    text buffer (uint8), without copying."""
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset:values.offset + n + 1]
    data = values.buffers()[2]
    text = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, dtype=np.uint8)
    return offsets, text
