"""Qdrant server backend: one collection per instruction, through qdrant-client.

A :class:`QdrantConnection` (from :func:`inbedder_index.backends.make_qdrant_client`) is
shared by every collection of an index; closing a backend never closes it. The point layout,
filters and ownership rule are those of :mod:`.qdrant_common`, identical to the embedded
backend's, so a collection moves between the two (:mod:`.migrate`).

* Requests time out after the connection's ``timeout`` and are retried with exponential
  backoff on transient failures (a refused or reset connection, a timeout, HTTP 429/502/503/504);
  every retried request is idempotent (upserts and deletes name their point ids).
* Upserts are cut into requests of at most :data:`~.qdrant_common.UPSERT_BATCH_BYTES` of JSON,
  and ``wait=True``: once a call returns the server has applied it, so ``flush()`` has nothing to do.
* Search uses the server's HNSW graph with ``hnsw_ef = ef_search`` (default 128: recall@10
  near 1 on embeddings; raise it for recall, lower it for latency); ``exact=True`` scans every
  point instead (a full scan per query on a cluster: for tests and small collections).
* ``payload_fields`` creates keyword/integer/float/bool payload indexes on the metadata fields
  filters use, as Qdrant advises for filtered search; results are the same with or without.
* qdrant-client's *local* mode (``make_qdrant_client(path=..., legacy_local=True)``) also runs
  through this class, only to read or migrate old folders: it unpickles its storage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._util import import_optional
from ..errors import BackendUnavailableError, CollectionNotFoundError, IndexLockedError
from .base import validate_hnsw_params
from .qdrant_common import (
    OWNER_FIELD,
    PAYLOAD_INDEX_KINDS,
    FilterDialect,
    QdrantLayoutBackend,
    validate_payload_fields,
)

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10
DEFAULT_RETRIES = 3
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})


def _qdrant() -> Any:
    return import_optional("qdrant_client", "qdrant")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: the network or an overloaded server, not a bad request."""
    import httpx
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in TRANSIENT_STATUS
    if isinstance(exc, ResponseHandlingException):
        return isinstance(exc.source, httpx.TransportError)
    return isinstance(exc, (ResourceExhaustedResponse, httpx.TransportError, ConnectionError, TimeoutError))


@dataclass
class QdrantConnection:
    """A qdrant-client client and how its requests are retried (one per index)."""

    client: QdrantClient
    where: str
    """The server URL (never the API key), or a local path: for messages."""
    retries: int = DEFAULT_RETRIES
    backoff_s: float = 0.5

    def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``method(*args, **kwargs)``, retried ``retries`` times on transient failures."""
        for attempt in range(self.retries + 1):
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                if attempt == self.retries or not is_transient(exc):
                    raise
                delay = self.backoff_s * 2**attempt
                logger.warning("Qdrant at %s: %s; retrying in %.1f s (%d/%d)", self.where, _first_line(exc),
                               delay, attempt + 1, self.retries)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def is_local(self) -> bool:
        options = self.client.init_options
        return options.get("path") is not None or options.get("location") == ":memory:"

    def close(self) -> None:
        self.client.close()


def connect_server(url: str, api_key: str | None, timeout: float, retries: int) -> QdrantConnection:
    """A connection to the server at ``url`` (http or https), probed once with retries."""
    qdrant_client = _qdrant()
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    if not timeout or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    client = qdrant_client.QdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout)),
                                        check_compatibility=False)
    connection = QdrantConnection(client, url, retries=retries)
    try:
        connection.call(client.get_collections)
    except Exception as exc:  # connection, TLS, auth and HTTP errors all mean "unusable"
        client.close()
        raise BackendUnavailableError(
            f"cannot reach Qdrant at {url} ({_first_line(exc)}); check the URL, that the server runs, and its API key"
        ) from exc
    return connection


def connect_legacy_local(path: Path) -> QdrantConnection:
    """qdrant-client's local mode (pickles in SQLite): only to read or migrate an old folder."""
    qdrant_client = _qdrant()
    path.mkdir(parents=True, exist_ok=True)
    try:
        client = qdrant_client.QdrantClient(path=str(path))
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise IndexLockedError(f"the Qdrant storage {path} is in use by another client or process") from exc
        raise
    return QdrantConnection(client, str(path), retries=0)


def client_dialect(models: Any) -> FilterDialect:
    return FilterDialect(
        match=lambda key, match: models.FieldCondition(key=key, match=match),
        equals_number=lambda key, value: models.FieldCondition(key=key, range=models.Range(gte=value, lte=value)),
        match_value=lambda value: models.MatchValue(value=value),
        match_any=lambda values: models.MatchAny(any=values),
        filter=lambda must=None, should=None, must_not=None: models.Filter(must=must, should=should, must_not=must_not),
        has_ids=lambda ids: models.HasIdCondition(has_id=ids),
    )


class QdrantBackend(QdrantLayoutBackend):
    """A Qdrant collection named ``name`` on a server (see the module docstring)."""

    def __init__(
        self,
        connection: QdrantConnection,
        name: str,
        dim: int,
        *,
        create: bool,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        exact: bool = False,
        index_id: str | None = None,
        payload_fields: Mapping[str, str] | None = None,
        read_only: bool = False,
    ) -> None:
        super().__init__(name, dim, index_id=index_id, read_only=read_only)
        validate_hnsw_params(hnsw_m, ef_construction, ef_search)
        fields = validate_payload_fields(payload_fields)
        self._models = models = _qdrant().models
        self._dialect = client_dialect(models)
        self._connection = connection
        self._client = connection.client
        self.where = connection.where
        self._search_params = None if connection.is_local else models.SearchParams(hnsw_ef=ef_search, exact=exact)
        if self._call(self._client.collection_exists, self.name):
            self._check_existing()
        elif create and not read_only:
            self._create(hnsw_m, ef_construction)
        else:
            raise CollectionNotFoundError(f"Qdrant collection {self.name!r} does not exist in {self.where}")
        if fields and not read_only:
            self.ensure_payload_indexes(fields)

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._connection.call(method, *args, **kwargs)

    def _create(self, hnsw_m: int, ef_construction: int) -> None:
        models = self._models
        metadata = {OWNER_FIELD: self._index_id} if self._index_id is not None else None
        try:
            self._call(
                self._client.create_collection, self.name,
                vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.DOT),
                hnsw_config=models.HnswConfigDiff(m=hnsw_m, ef_construct=ef_construction),
                **({"metadata": metadata} if metadata else {}),
            )
        except Exception:
            if not self._call(self._client.collection_exists, self.name):
                raise
            self._check_existing()  # created meanwhile (a retried request, or another writer): check it
            return
        if self._index_id is not None and not self._connection.is_local:
            self._set_field_index(OWNER_FIELD, "keyword")  # the ownership check filters on it
        logger.info("created Qdrant collection %r (dim %d) in %s", self.name, self.dim, self.where)

    def _check_existing(self) -> None:
        info = self._call(self._client.get_collection, self.name)
        params = info.config.params.vectors
        if not isinstance(params, self._models.VectorParams):
            raise ValueError(f"Qdrant collection {self.name!r} in {self.where} uses named vectors; "
                             "expected one unnamed vector")
        self._check_vector_params(params.size, params.distance.value)
        self._check_owner((getattr(info.config, "metadata", None) or {}).get(OWNER_FIELD))

    # ------------------------------------------------------------------ primitives

    def _point(self, pid: str, vector: list[float], payload: dict[str, Any]) -> Any:
        return self._models.PointStruct(id=pid, vector=vector, payload=payload)

    def _write(self, points: list[Any]) -> None:
        self._call(self._client.upsert, self.name, points=points, wait=True)

    def _remove(self, pids: list[str]) -> None:
        self._call(self._client.delete, self.name, points_selector=self._models.PointIdsList(points=pids), wait=True)

    def _query(self, vector: list[float], k: int, query_filter: Any | None) -> list[Any]:
        return self._call(
            self._client.query_points, self.name, query=vector, limit=k, query_filter=query_filter,
            search_params=self._search_params, with_payload=["doc_id"],
        ).points

    def _retrieve(self, pids: list[str]) -> list[Any]:
        return self._call(self._client.retrieve, self.name, ids=pids, with_payload=["doc_id"], with_vectors=True)

    def _scroll_page(self, offset: Any, limit: int, with_payload: list[str], with_vector: bool,
                     query_filter: Any | None = None) -> tuple[list[Any], Any]:
        return self._call(self._client.scroll, self.name, scroll_filter=query_filter, limit=limit, offset=offset,
                          with_payload=with_payload, with_vectors=with_vector)

    # ------------------------------------------------------------------ the rest of the API

    def count(self) -> int:
        self._ensure_open()
        return self._call(self._client.count, self.name, exact=True).count

    def _set_field_index(self, key: str, kind: str | None) -> None:
        if kind is None:
            self._call(self._client.delete_payload_index, self.name, field_name=key, wait=True)
        else:
            self._call(self._client.create_payload_index, self.name, field_name=key,
                       field_schema=self._models.PayloadSchemaType(kind), wait=True)

    def ensure_payload_indexes(self, fields: Mapping[str, str]) -> None:
        if not self._connection.is_local:  # qdrant-client's local mode has no payload indexes (it scans)
            super().ensure_payload_indexes(fields)

    def payload_indexes(self) -> dict[str, str]:
        self._ensure_open()
        schema = self._call(self._client.get_collection, self.name).payload_schema or {}
        return {key.removeprefix("metadata."): info.data_type.value for key, info in schema.items()
                if key.startswith("metadata.") and info.data_type.value in PAYLOAD_INDEX_KINDS}

    def flush(self) -> None:
        self._ensure_open()  # every write already waited for the server to apply it

    def close(self) -> None:
        self._closed = True  # the shared connection belongs to the caller

    def drop(self) -> None:
        self._refuse_read_only()
        self._closed = True
        self._call(self._client.delete_collection, self.name)
        logger.info("dropped Qdrant collection %r in %s", self.name, self.where)
