"""A check of a FAISS stream's structure before ``faiss.read_index`` trusts it.

FAISS sizes its buffers from the lengths a file claims, so a few hundred crafted bytes can make
it allocate gigabytes. This walks the only layouts this library writes (``IndexIDMap2`` over
``IndexFlatIP`` or ``IndexHNSWFlat``), checks every claimed length against the bytes really
left and every count against what the collection header says, without allocating anything.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

import numpy as np

from ..errors import StreamError

_INDEX_HEADER = struct.Struct("<4siqqqBi")  # fourcc, d, ntotal, 2 unused, is_trained, metric type
_U64 = struct.Struct("<Q")
_HNSW_SCALARS = 5 * 4  # entry point, max level, efConstruction, efSearch, an unused int
_METRIC_INNER_PRODUCT = 0


class _Walker:
    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.end = os.fstat(file.fileno()).st_size

    def read(self, size: int) -> bytes:
        if size > self.end - self.file.tell():
            raise StreamError("the file is truncated")
        return self.file.read(size)

    def header(self, dim: int, count: int) -> bytes:
        fourcc, d, ntotal, _, _, _, metric = _INDEX_HEADER.unpack(self.read(_INDEX_HEADER.size))
        if d != dim or ntotal != count or metric != _METRIC_INNER_PRODUCT:
            raise StreamError(f"the index claims dimension {d}, {ntotal} vectors and metric {metric}; "
                              f"expected dimension {dim}, {count} vectors, inner product")
        return fourcc

    def vector(self, item_size: int, expected: int | None = None) -> int:
        """Skip a length-prefixed table, checking its length; returns the number of entries."""
        (length,) = _U64.unpack(self.read(_U64.size))
        if expected is not None and length != expected:
            raise StreamError(f"a table holds {length} entries where {expected} are expected")
        if length * item_size > self.end - self.file.tell():
            raise StreamError(f"a table claims {length * item_size} bytes, more than the file holds")
        self.file.seek(length * item_size, os.SEEK_CUR)
        return length

    def array(self, dtype: str, expected: int | None = None) -> np.ndarray:
        """Read a length-prefixed table (bounded by the file's size, so by what is on disk)."""
        start = self.file.tell()
        length = self.vector(np.dtype(dtype).itemsize, expected)
        self.file.seek(start + _U64.size)
        return np.frombuffer(self.read(length * np.dtype(dtype).itemsize), dtype=dtype)

    def hnsw(self, dim: int, count: int) -> None:
        """The graph's tables must agree, and every neighbour must be a stored vector (or -1)."""
        self.vector(8)  # level probabilities
        per_level = self.array("<i4")  # cumulative neighbours per level
        levels = self.array("<i4", expected=count)
        offsets = self.array("<u8", expected=count + 1)
        neighbours = self.array("<i4")
        entry_point, max_level = struct.unpack("<ii", self.read(8))
        self.read(_HNSW_SCALARS - 8)
        if count and (
            levels.min() < 1 or levels.max() >= per_level.size or offsets[0] != 0
            or np.any(np.diff(offsets.astype(np.int64)) != per_level[levels]) or offsets[-1] != neighbours.size
            or neighbours.min(initial=-1) < -1 or neighbours.max(initial=-1) >= count
            or not 0 <= entry_point < count or not 0 <= max_level < per_level.size
        ):
            raise StreamError("the HNSW graph's tables are inconsistent")
        if self.header(dim, count) != b"IxFI":
            raise StreamError("the vector storage is not a flat inner-product index")
        self.vector(4, expected=count * dim)


def check_stream(file: BinaryIO, dim: int, count: int) -> None:
    """Validate the stream from the file's position on, then seek back there."""
    start = file.tell()
    walker = _Walker(file)
    if walker.header(dim, count) != b"IxM2":
        raise StreamError("the stream is not an IndexIDMap2")
    inner = walker.header(dim, count)
    if inner == b"IxFI":
        walker.vector(4, expected=count * dim)
    elif inner == b"IHNf":
        walker.hnsw(dim, count)
    else:
        raise StreamError(f"unexpected index type {inner!r}")
    walker.vector(8, expected=count)  # the id map
    if file.tell() != walker.end:
        raise StreamError("the file has data after the index")
    file.seek(start)
