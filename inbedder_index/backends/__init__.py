"""Vector storage: one collection per instruction, in FAISS files or Qdrant.

Importing this package needs neither FAISS nor a Qdrant library; each backend imports its
library when a collection is opened and says which extra to install when it is missing.

Qdrant comes in two forms behind ``kind="qdrant"``, chosen by the handle that
:func:`make_qdrant_client` returns: Qdrant's engine embedded in this process (``path=``,
:mod:`.qdrant_edge`) or a server (``url=``, :mod:`.qdrant`). Both store the same point ids and
payloads, so :func:`.migrate.migrate` moves a collection between them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CollectionOwnershipError
from .base import VectorBackend, filter_matches, validate_filter
from .faiss import FaissBackend
from .qdrant import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    QdrantBackend,
    QdrantConnection,
    connect_legacy_local,
    connect_server,
)
from .qdrant_common import infer_payload_schema
from .qdrant_edge import EdgeStore, QdrantEdgeBackend

if TYPE_CHECKING:
    from collections.abc import Mapping

BACKEND_KINDS = ("faiss", "qdrant")

__all__ = [
    "BACKEND_KINDS",
    "CollectionOwnershipError",
    "EdgeStore",
    "FaissBackend",
    "QdrantBackend",
    "QdrantConnection",
    "QdrantEdgeBackend",
    "VectorBackend",
    "filter_matches",
    "infer_payload_schema",
    "make_qdrant_client",
    "open_backend",
    "validate_filter",
]


def make_qdrant_client(
    path: Path | None = None,
    url: str | None = None,
    api_key: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    legacy_local: bool = False,
    search_threads: int | None = None,
) -> EdgeStore | QdrantConnection:
    """The Qdrant handle an index shares between its collections; ``close()`` it at the end.

    - ``path=P``: Qdrant's engine embedded in this process, its collections under ``P``
      (:class:`.qdrant_edge.EdgeStore`; one process at a time). ``search_threads`` bounds the
      engine's search thread pool (default: one per CPU).
    - ``url=``: a Qdrant server (``http://`` or ``https://``; ``api_key`` is sent as its
      ``api-key`` header), probed once. Requests time out after ``timeout`` seconds and are
      retried ``retries`` times with backoff on transient failures; an unreachable server
      raises ``BackendUnavailableError``.
    - ``path=P, legacy_local=True``: qdrant-client's local mode, which keeps pickles in SQLite
      and unpickles them on open, so it can run code planted in the folder. It exists only to
      read (and migrate) folders written by earlier versions of this library; never use it on
      a folder you do not trust.
    """
    if (path is None) == (url is None):
        raise ValueError("give exactly one of path (embedded Qdrant) or url (Qdrant server)")
    if path is not None:
        if api_key is not None:
            raise ValueError("api_key only applies to a Qdrant server (url=...)")
        if legacy_local:
            return connect_legacy_local(Path(path))
        return EdgeStore(Path(path), search_threads=search_threads)
    if legacy_local:
        raise ValueError("legacy_local only applies to a local folder (path=...)")
    return connect_server(url, api_key, timeout, retries)


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
    qdrant_client: Any = None,
    read_only: bool = False,
    index_id: str | None = None,
    exact: bool = False,
    payload_fields: Mapping[str, str] | None = None,
) -> VectorBackend:
    """Open (or with ``create=True`` create) the collection ``name`` of the given kind.

    FAISS keeps its files under ``directory / name``; ``hnsw`` chooses its index type.
    Qdrant needs ``qdrant_client`` (the handle of :func:`make_qdrant_client`, or a
    ``qdrant_client.QdrantClient``), shared by every collection of an index, and ignores
    ``directory`` and ``hnsw``: Qdrant always indexes with HNSW, and searches it with
    ``hnsw_ef=ef_search`` unless ``exact=True``. ``read_only`` opens never change anything
    on disk (not even leftover temporary files, which may belong to a running writer).

    Qdrant only: ``index_id`` is stored in every point's payload (and recorded when a
    collection is created); a collection holding another index's points raises
    :class:`CollectionOwnershipError` and is left untouched. ``payload_fields``
    (``{field: "keyword" | "integer" | "float" | "bool"}``, see :func:`infer_payload_schema`)
    creates payload indexes on those metadata fields, which filtered search on a large
    collection needs.
    """
    if kind == "faiss":
        return FaissBackend(
            directory, name, dim, create=create, hnsw=hnsw, hnsw_m=hnsw_m,
            ef_construction=ef_construction, ef_search=ef_search, read_only=read_only,
        )
    if kind == "qdrant":
        options = dict(create=create, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search,
                       exact=exact, index_id=index_id, payload_fields=payload_fields, read_only=read_only)
        if isinstance(qdrant_client, EdgeStore):
            return QdrantEdgeBackend(qdrant_client, name, dim, **options)
        if isinstance(qdrant_client, QdrantConnection):
            return QdrantBackend(qdrant_client, name, dim, **options)
        client_module = sys.modules.get("qdrant_client")  # a QdrantClient given means it is imported
        if client_module is not None and isinstance(qdrant_client, client_module.QdrantClient):
            where = qdrant_client.init_options.get("url") or qdrant_client.init_options.get("path") or "Qdrant"
            return QdrantBackend(QdrantConnection(qdrant_client, str(where)), name, dim, **options)
        raise ValueError("kind='qdrant' needs qdrant_client=... (see make_qdrant_client)")
    raise ValueError(f"unknown backend kind {kind!r}; valid kinds: {', '.join(BACKEND_KINDS)}")
