"""Qdrant backend: one collection per instruction, on a caller-owned ``QdrantClient``.

The client is shared by every collection of an index (embedded local mode locks its folder,
so there must be one client per path per process); closing a backend never closes it.

* Distance is ``DOT``: vectors arrive normalised, so scores equal FAISS inner products.
* Point ids are ``uuid5(POINT_ID_NAMESPACE, doc_id)`` because Qdrant only accepts unsigned
  ints and UUIDs; the payload ``{"doc_id": ..., "metadata": {...}}`` keeps the original id
  and the metadata that filters run on (``metadata.<field>``).
* Filters follow the semantics in :mod:`inbedder_index.backends.base`; numbers are matched
  with a degenerate ``Range`` so that ``2`` matches a stored ``2.0`` as it does in Python.
* Writes use ``wait=True``: once a call returns the points are stored (the embedded mode
  persists every operation), so ``flush()`` has nothing to do.
* ``hnsw=False`` asks a server for exact search, matching FAISS's default; the embedded mode
  always searches exactly and ignores search parameters.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendUnavailableError, CollectionNotFoundError, IndexLockedError
from .base import (
    Scalar,
    VectorBackend,
    chunked,
    import_optional,
    validate_filter,
    validate_hnsw_params,
    validate_ids,
    validate_query,
    validate_upsert,
)

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

logger = logging.getLogger(__name__)

POINT_ID_NAMESPACE = uuid.UUID("5b0a8f4e-3c1d-4e6a-9f27-8d2c61b7e9a3")
"""Namespace of the uuid5 point ids; changing it orphans every stored point."""

UPSERT_BATCH = 256
READ_BATCH = 1024
PROBE_TIMEOUT_S = 5


def _qdrant() -> Any:
    return import_optional("qdrant_client", "qdrant")


def point_id(doc_id: str) -> str:
    """The Qdrant point id of a document id."""
    return str(uuid.uuid5(POINT_ID_NAMESPACE, doc_id))


def make_qdrant_client(
    path: Path | None = None, url: str | None = None, api_key: str | None = None
) -> QdrantClient:
    """A client in embedded mode under ``path``, or for the server at ``url`` (probed once)."""
    qdrant_client = _qdrant()
    if (path is None) == (url is None):
        raise ValueError("give exactly one of path (embedded Qdrant) or url (Qdrant server)")
    if path is not None:
        if api_key is not None:
            raise ValueError("api_key only applies to a Qdrant server (url=...)")
        Path(path).mkdir(parents=True, exist_ok=True)
        try:
            return qdrant_client.QdrantClient(path=str(path))
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise IndexLockedError(
                    f"the Qdrant storage {path} is in use by another client or process"
                ) from exc
            raise
    probe = qdrant_client.QdrantClient(
        url=url, api_key=api_key, timeout=PROBE_TIMEOUT_S, check_compatibility=False
    )
    try:
        probe.get_collections()
    except Exception as exc:  # connection, TLS, auth and HTTP errors all mean "unusable"
        raise BackendUnavailableError(f"cannot reach Qdrant at {url}: {exc}") from exc
    finally:
        probe.close()
    return qdrant_client.QdrantClient(url=url, api_key=api_key)


def _is_local(client: QdrantClient) -> bool:
    options = client.init_options
    return options.get("path") is not None or options.get("location") == ":memory:"


class QdrantBackend(VectorBackend):
    """A Qdrant collection named ``name`` (see the module docstring)."""

    filters_payload = True

    def __init__(
        self,
        client: QdrantClient,
        name: str,
        dim: int,
        *,
        create: bool,
        hnsw: bool = False,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
    ) -> None:
        super().__init__(name, dim)
        validate_hnsw_params(hnsw_m, ef_construction, ef_search)
        self._models = _qdrant().models
        self._client = client
        models = self._models
        self._search_params = (
            None if _is_local(client) else models.SearchParams(hnsw_ef=ef_search, exact=not hnsw)
        )
        if client.collection_exists(self.name):
            self._check_existing()
        elif create:
            client.create_collection(
                self.name,
                vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.DOT),
                hnsw_config=models.HnswConfigDiff(m=hnsw_m, ef_construct=ef_construction),
            )
            logger.info("created Qdrant collection %r (dim %d)", self.name, self.dim)
        else:
            raise CollectionNotFoundError(f"Qdrant collection {self.name!r} does not exist")

    def _check_existing(self) -> None:
        params = self._client.get_collection(self.name).config.params.vectors
        if not isinstance(params, self._models.VectorParams):
            raise ValueError(f"Qdrant collection {self.name!r} uses named vectors; expected one unnamed vector")
        if params.size != self.dim:
            raise ValueError(
                f"Qdrant collection {self.name!r} stores vectors of dimension {params.size}, "
                f"not the requested {self.dim}"
            )
        if params.distance != self._models.Distance.DOT:
            raise ValueError(
                f"Qdrant collection {self.name!r} uses {params.distance.value} distance; expected Dot"
            )

    # ------------------------------------------------------------------ public API

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        doc_ids, matrix, metadata = validate_upsert(ids, vectors, payloads, self.dim)
        self._ensure_open()
        points = [
            self._models.PointStruct(
                id=point_id(doc_id), vector=vector, payload={"doc_id": doc_id, "metadata": meta}
            )
            for doc_id, vector, meta in zip(doc_ids, matrix.tolist(), metadata)
        ]
        for batch in chunked(points, UPSERT_BATCH):
            self._client.upsert(self.name, points=list(batch), wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        doc_ids = validate_ids(ids)
        self._ensure_open()
        for batch in chunked(doc_ids, READ_BATCH):
            self._client.delete(
                self.name,
                points_selector=self._models.PointIdsList(points=[point_id(d) for d in batch]),
                wait=True,
            )

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filter: Mapping[str, Any] | None = None,
        candidate_ids: Collection[str] | None = None,
    ) -> list[tuple[str, float]]:
        query, k = validate_query(vector, k, self.dim)
        conditions: list[Any] = [self._condition(field, values) for field, values in validate_filter(filter).items()]
        if candidate_ids is not None:
            if not candidate_ids:
                return []
            conditions.append(self._models.HasIdCondition(has_id=[point_id(d) for d in candidate_ids]))
        self._ensure_open()
        response = self._client.query_points(
            self.name,
            query=query[0].tolist(),
            limit=k,
            query_filter=self._models.Filter(must=conditions) if conditions else None,
            search_params=self._search_params,
            with_payload=["doc_id"],
        )
        return [(point.payload["doc_id"], float(point.score)) for point in response.points]

    def get_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        doc_ids = validate_ids(ids)
        self._ensure_open()
        found: dict[str, np.ndarray] = {}
        for batch in chunked(doc_ids, READ_BATCH):
            records = self._client.retrieve(
                self.name, ids=[point_id(d) for d in batch], with_payload=["doc_id"], with_vectors=True
            )
            for record in records:
                found[record.payload["doc_id"]] = np.asarray(record.vector, dtype=np.float32)
        return found

    def ids(self) -> set[str]:
        self._ensure_open()
        stored: set[str] = set()
        offset = None
        while True:
            records, offset = self._client.scroll(
                self.name, limit=READ_BATCH, offset=offset, with_payload=["doc_id"], with_vectors=False
            )
            stored.update(record.payload["doc_id"] for record in records)
            if offset is None:
                return stored

    def count(self) -> int:
        self._ensure_open()
        return self._client.count(self.name, exact=True).count

    def flush(self) -> None:
        self._ensure_open()  # every write already waited for the server to apply it

    def close(self) -> None:
        self._closed = True  # the shared client belongs to the caller

    def drop(self) -> None:
        self._closed = True
        self._client.delete_collection(self.name)
        logger.info("dropped Qdrant collection %r", self.name)

    # ------------------------------------------------------------------ filters

    def _condition(self, field: str, values: tuple[Scalar, ...]) -> Any:
        """One field of a filter (see :func:`validate_filter`) as a Qdrant condition."""
        models = self._models
        key = f"metadata.{field}"
        if all(isinstance(value, str) for value in values):
            return models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))
        alternatives = [
            models.FieldCondition(key=key, match=models.MatchValue(value=value))
            if isinstance(value, (bool, str))
            else models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
            for value in values
        ]
        return models.Filter(should=alternatives)
