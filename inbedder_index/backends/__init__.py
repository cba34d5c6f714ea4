"""Vector storage: one collection per instruction, in FAISS files or Qdrant.

Importing this package needs neither FAISS nor qdrant-client; each backend imports its
library when a collection is opened and says which extra to install when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import VectorBackend, filter_matches, validate_filter
from .faiss import FaissBackend
from .qdrant import QdrantBackend, make_qdrant_client

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

BACKEND_KINDS = ("faiss", "qdrant")

__all__ = [
    "BACKEND_KINDS",
    "FaissBackend",
    "QdrantBackend",
    "VectorBackend",
    "filter_matches",
    "make_qdrant_client",
    "open_backend",
    "validate_filter",
]


def open_backend(
    kind: str,
    *,
    directory: Path,
    name: str,
    dim: int,
    create: bool,
    hnsw: bool = False,
    hnsw_m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    qdrant_client: QdrantClient | None = None,
    read_only: bool = False,
    index_id: str | None = None,
) -> VectorBackend:
    """Open (or with ``create=True`` create) the collection ``name`` of the given kind.

    FAISS keeps its files under ``directory / name``; Qdrant needs ``qdrant_client`` (see
    :func:`make_qdrant_client`), shared by every collection of an index, and ignores
    ``directory``. ``read_only`` opens never change anything on disk (not even leftover
    temporary files, which may belong to a running writer). ``index_id`` tags a Qdrant
    collection's points with the index that owns them.
    """
    if kind == "faiss":
        return FaissBackend(
            directory, name, dim, create=create, hnsw=hnsw, hnsw_m=hnsw_m,
            ef_construction=ef_construction, ef_search=ef_search, read_only=read_only,
        )
    if kind == "qdrant":
        if qdrant_client is None:
            raise ValueError("kind='qdrant' needs qdrant_client=... (see make_qdrant_client)")
        return QdrantBackend(
            qdrant_client, name, dim, create=create, hnsw=hnsw, hnsw_m=hnsw_m,
            ef_construction=ef_construction, ef_search=ef_search,
        )
    raise ValueError(f"unknown backend kind {kind!r}; valid kinds: {', '.join(BACKEND_KINDS)}")
