"""What the two Qdrant backends share, so that a collection moves between them unchanged.

The embedded engine (:mod:`.qdrant_edge`) and a server (:mod:`.qdrant`) store a document the
same way:

* point id ``uuid5(POINT_ID_NAMESPACE, doc_id)`` (Qdrant accepts only unsigned ints and UUIDs);
* payload ``{"doc_id": ..., "metadata": {...}, "index_id": ...}``: the original id, the
  metadata that filters run on (``metadata.<field>``), and the id of the index that owns the
  point (absent when the caller gives none);
* one unnamed vector, distance ``Dot`` (vectors arrive normalised, so scores equal FAISS's).

The operations themselves (validation, payloads, batching, search, scrolling, ownership and
payload-index checks) are written once in :class:`QdrantLayoutBackend`; each backend supplies
a handful of primitive calls of its library.

Filters follow :mod:`inbedder_index.backends.base`. Each backend's library has its own
condition classes, so the translation below is written once against a small
:class:`FilterDialect` that each backend fills in:

* strings: ``MatchAny`` (a list-valued field matches when any element does);
* bools: ``MatchValue(bool)``; a stored bool never equals a number, as in Python's reference;
* numbers: a degenerate range ``[v, v]``, so ``2`` matches a stored ``2.0``; integers beyond
  ±2**53 (where a float range cannot tell neighbours apart) match exactly-equal integers.
"""

from __future__ import annotations

import json
import logging
import uuid
from abc import abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._util import chunked, validate_ids
from ..errors import CollectionOwnershipError
from .base import (
    NormalisedFilter,
    Scalar,
    VectorBackend,
    is_filter_field,
    validate_filter,
    validate_query,
    validate_upsert,
)

logger = logging.getLogger(__name__)

POINT_ID_NAMESPACE = uuid.UUID("5b0a8f4e-3c1d-4e6a-9f27-8d2c61b7e9a3")
"""Namespace of the uuid5 point ids; changing it orphans every stored point."""

OWNER_FIELD = "index_id"
"""The payload field (and server collection-metadata key) naming the index that owns a point."""

PAYLOAD_INDEX_KINDS = ("keyword", "integer", "float", "bool")
"""Payload index types a metadata field can get (Qdrant's names)."""

READ_BATCH = 1024
_EXACT_FLOAT_INT = 2**53


def point_id(doc_id: str) -> str:
    """The Qdrant point id of a document id."""
    return str(uuid.uuid5(POINT_ID_NAMESPACE, doc_id))


def point_payload(doc_id: str, metadata: Mapping[str, Any], index_id: str | None) -> dict[str, Any]:
    """The payload stored with a document's vector (the layout both backends share)."""
    payload: dict[str, Any] = {"doc_id": doc_id, "metadata": dict(metadata)}
    if index_id is not None:
        payload[OWNER_FIELD] = index_id
    return payload


def validate_index_id(index_id: str | None) -> str | None:
    if index_id is not None and (not isinstance(index_id, str) or not index_id):
        raise ValueError(f"index_id must be a non-empty string or None, got {index_id!r}")
    return index_id


def ownership_error(name: str, where: str, found: str | None, index_id: str) -> CollectionOwnershipError:
    """The error for a collection that belongs to another index (``found`` None: points without an id)."""
    owner = f"index {found!r}" if found is not None else "points that carry no index id (another index, or an old one)"
    return CollectionOwnershipError(
        f"Qdrant collection {name!r} in {where} holds {owner}, not index {index_id!r}; it is left untouched. "
        "Two indexes resolved to one collection name: give this index its own folder name, or drop the "
        "other index's collection from that index"
    )


# --------------------------------------------------------------------------- payload indexes


def infer_payload_schema(metadatas: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The payload index type for each metadata field whose values allow one.

    Strings give ``keyword``, bools ``bool``, ints ``integer``, floats (or ints and floats
    mixed) ``float``; list values count by their elements. A field with values of other
    mixtures (a string and a number, a nested object) gets no index: Qdrant holds one index
    per field, and an index of one type would hide the values of the other from filters.
    A field that filters cannot name (``"first name"``, ``"a.b"``: Qdrant reads a dot as
    nesting) gets none either: it is stored and returned like any other, only not indexed.
    """
    seen: dict[str, set[str]] = {}
    unnamed: set[str] = set()
    for metadata in metadatas:
        for field, value in metadata.items():
            if not is_filter_field(field):
                unnamed.add(field)
                continue
            kinds = seen.setdefault(field, set())
            for item in value if isinstance(value, list) else [value]:
                kinds.add(_kind_of(item))
    if unnamed:
        logger.debug("no payload index for metadata fields that filters cannot name: %s",
                     ", ".join(sorted(map(repr, unnamed))[:20]))
    schema: dict[str, str] = {}
    for field, kinds in seen.items():
        if kinds == {"integer", "float"}:
            kinds = {"float"}
        if len(kinds) == 1 and next(iter(kinds)) in PAYLOAD_INDEX_KINDS:
            schema[field] = next(iter(kinds))
    return schema


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "keyword"
    return "other"


def validate_payload_fields(fields: Mapping[str, str] | None) -> dict[str, str]:
    """``{field: kind}`` checked: valid field names and kinds from :data:`PAYLOAD_INDEX_KINDS`."""
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise ValueError(f"payload_fields must map field -> index type, not {type(fields).__name__}")
    validate_filter({field: "" for field in fields})  # the same field-name rule as filters
    for field, kind in fields.items():
        if kind not in PAYLOAD_INDEX_KINDS:
            raise ValueError(
                f"payload index type {kind!r} of field {field!r} is not one of {', '.join(PAYLOAD_INDEX_KINDS)}"
            )
    return dict(fields)


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class FilterDialect:
    """How one Qdrant library spells the few conditions the translation needs."""

    match: Callable[[str, Any], Any]
    """``(key, match) -> FieldCondition``."""
    equals_number: Callable[[str, float], Any]
    """``(key, v) -> FieldCondition`` with the range ``[v, v]``."""
    match_value: Callable[[Scalar], Any]
    match_any: Callable[[list[str]], Any]
    filter: Callable[..., Any]
    """``(must=[...], should=[...], must_not=[...]) -> Filter``."""
    has_ids: Callable[[list[str]], Any]


def _field_condition(dialect: FilterDialect, field: str, values: tuple[Scalar, ...]) -> Any:
    key = f"metadata.{field}"
    strings = [value for value in values if isinstance(value, str)]
    alternatives = [dialect.match(key, dialect.match_any(strings))] if strings else []
    for value in values:
        if isinstance(value, str):
            continue
        if isinstance(value, bool) or (isinstance(value, int) and abs(value) > _EXACT_FLOAT_INT):
            alternatives.append(dialect.match(key, dialect.match_value(value)))
        else:
            alternatives.append(dialect.equals_number(key, float(value)))
    return alternatives[0] if len(alternatives) == 1 else dialect.filter(should=alternatives)


def to_qdrant_filter(
    dialect: FilterDialect,
    flt: Mapping[str, Any] | NormalisedFilter | None,
    candidate_ids: Collection[str] | None = None,
) -> Any | None:
    """A metadata filter (and optional doc-id restriction) as one Qdrant filter, or None."""
    conditions = [_field_condition(dialect, field, values) for field, values in validate_filter(flt).items()]
    if candidate_ids is not None:
        conditions.append(dialect.has_ids([point_id(doc_id) for doc_id in candidate_ids]))
    return dialect.filter(must=conditions) if conditions else None


def foreign_points_filter(dialect: FilterDialect, index_id: str) -> Any:
    """Points that do not carry ``index_id`` (another index's, or no index's)."""
    return dialect.filter(must_not=[dialect.match(OWNER_FIELD, dialect.match_value(index_id))])


# --------------------------------------------------------------------------- batching


UPSERT_BATCH_BYTES = 4 * 2**20
"""Upper bound of one upsert request body (a server's default limit is 32 MiB)."""


def point_bytes(dim: int, payload: Mapping[str, Any]) -> int:
    """An upper estimate of a point's size in a JSON request: 25 characters per float (the longest
    repr of a double, and a comma), the payload, the id and the field names."""
    return 25 * dim + len(json.dumps(payload, ensure_ascii=False).encode("utf-8")) + 96


def batches_by_bytes(sizes: Sequence[int], limit: int) -> Iterator[slice]:
    """Consecutive slices of items whose sizes sum to at most ``limit`` (an oversized item goes alone)."""
    start, total = 0, 0
    for position, size in enumerate(sizes):
        if position > start and total + size > limit:
            yield slice(start, position)
            start, total = position, 0
        total += size
    if start < len(sizes):
        yield slice(start, len(sizes))



# --------------------------------------------------------------------------- the shared operations


class QdrantLayoutBackend(VectorBackend):
    """The operations both Qdrant backends share, written once against a few primitives.

    A subclass supplies its library's calls (``_point``, ``_write``, ``_remove``, ``_query``,
    ``_retrieve``, ``_scroll_page``, ``count``) and sets ``_dialect`` and ``where``.
    """

    filters_payload = True
    _dialect: FilterDialect
    where: str
    """Where the collection lives (a server URL or a folder), for messages."""

    def __init__(self, name: str, dim: int, *, index_id: str | None, read_only: bool) -> None:
        super().__init__(name, dim)
        self._index_id = validate_index_id(index_id)
        self._read_only = read_only

    # ------------------------------------------------------------------ primitives

    @abstractmethod
    def _point(self, pid: str, vector: list[float], payload: dict[str, Any]) -> Any:
        """One point object of the library."""

    @abstractmethod
    def _write(self, points: list[Any]) -> None:
        """Upsert points, applied when the call returns."""

    @abstractmethod
    def _remove(self, pids: list[str]) -> None:
        """Delete points by id."""

    @abstractmethod
    def _query(self, vector: list[float], k: int, query_filter: Any | None) -> list[Any]:
        """Scored points with the ``doc_id`` payload, best first."""

    @abstractmethod
    def _retrieve(self, pids: list[str]) -> list[Any]:
        """Records with the ``doc_id`` payload and the vector."""

    @abstractmethod
    def _scroll_page(self, offset: Any, limit: int, with_payload: list[str], with_vector: bool,
                     query_filter: Any | None = None) -> tuple[list[Any], Any]:
        """One page of records and the offset of the next (None at the end)."""

    @abstractmethod
    def _set_field_index(self, key: str, kind: str | None) -> None:
        """Create the payload index ``kind`` on ``key``, or delete it (``kind`` None)."""

    @abstractmethod
    def payload_indexes(self) -> dict[str, str]:
        """``{metadata field: index type}`` of the payload indexes the collection has."""

    # ------------------------------------------------------------------ checks

    def _ensure_writable(self) -> None:
        self._ensure_open()
        self._refuse_read_only()

    def _refuse_read_only(self) -> None:
        if self._read_only:
            raise RuntimeError(f"Qdrant collection {self.name!r} is open read-only")

    def _check_owner(self, recorded: str | None) -> None:
        """Refuse a collection that another index owns: by its record, or else by its points."""
        if self._index_id is None:
            return
        if recorded is None:
            records, _ = self._scroll_page(None, 1, [OWNER_FIELD], False,
                                           foreign_points_filter(self._dialect, self._index_id))
            if not records:
                return
            recorded = (records[0].payload or {}).get(OWNER_FIELD)
        elif recorded == self._index_id:
            return
        raise ownership_error(self.name, self.where, recorded, self._index_id)

    def _check_vector_params(self, size: int, distance: str) -> None:
        where = f"Qdrant collection {self.name!r} in {self.where}"
        if size != self.dim:
            raise ValueError(
                f"{where} stores vectors of dimension {size}, not the requested {self.dim} "
                "(the index's model); it was made by another model or index"
            )
        if distance.lower() != "dot":
            raise ValueError(f"{where} uses {distance} distance; this library needs Dot")

    # ------------------------------------------------------------------ VectorBackend

    def upsert(
        self,
        ids: Sequence[str],
        vectors: Any,
        payloads: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        doc_ids, matrix, metadata = validate_upsert(ids, vectors, payloads, self.dim)
        self._ensure_writable()
        bodies = [point_payload(doc_id, meta, self._index_id) for doc_id, meta in zip(doc_ids, metadata)]
        points = [self._point(point_id(doc_id), vector, body)
                  for doc_id, vector, body in zip(doc_ids, matrix.tolist(), bodies)]
        for batch in batches_by_bytes([point_bytes(self.dim, body) for body in bodies], UPSERT_BATCH_BYTES):
            self._write(points[batch])

    def delete(self, ids: Sequence[str]) -> None:
        doc_ids = validate_ids(ids)
        self._ensure_writable()
        for batch in chunked(doc_ids, READ_BATCH):
            self._remove([point_id(doc_id) for doc_id in batch])

    def search(
        self,
        vector: Any,
        k: int,
        *,
        filter: Mapping[str, Any] | None = None,
        candidate_ids: Collection[str] | None = None,
    ) -> list[tuple[str, float]]:
        query, k = validate_query(vector, k, self.dim)
        query_filter = to_qdrant_filter(self._dialect, filter, candidate_ids)
        self._ensure_open()
        if candidate_ids is not None and not candidate_ids:
            return []
        return [(point.payload["doc_id"], float(point.score)) for point in self._query(query[0].tolist(), k, query_filter)]

    def get_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        doc_ids = validate_ids(ids)
        self._ensure_open()
        found: dict[str, np.ndarray] = {}
        for batch in chunked(doc_ids, READ_BATCH):
            for record in self._retrieve([point_id(doc_id) for doc_id in batch]):
                found[record.payload["doc_id"]] = np.asarray(record.vector, dtype=np.float32)
        return found

    def _pages(self, with_payload: list[str], with_vector: bool, batch_size: int) -> Iterator[list[Any]]:
        offset = None
        while True:
            records, offset = self._scroll_page(offset, batch_size, with_payload, with_vector)
            if records:
                yield records
            if offset is None:
                return

    def iter_points(self, batch_size: int = READ_BATCH) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
        """Every stored point as ``(doc ids, vectors, metadata)`` batches (for :func:`.migrate.migrate`)."""
        self._ensure_open()
        for records in self._pages(["doc_id", "metadata"], True, batch_size):
            yield ([record.payload["doc_id"] for record in records],
                   np.asarray([record.vector for record in records], dtype=np.float32),
                   [record.payload.get("metadata") or {} for record in records])

    def ids(self) -> set[str]:
        self._ensure_open()
        return {record.payload["doc_id"] for records in self._pages(["doc_id"], False, READ_BATCH) for record in records}

    def ensure_payload_indexes(self, fields: Mapping[str, str]) -> None:
        """Create (or retype) payload indexes on ``metadata.<field>``: ``{field: keyword|integer|float|bool}``."""
        wanted = validate_payload_fields(fields)
        self._ensure_writable()
        existing = self.payload_indexes()
        for field, kind in wanted.items():
            if existing.get(field) == kind:
                continue
            key = f"metadata.{field}"
            if field in existing:
                self._set_field_index(key, None)
            self._set_field_index(key, kind)
            logger.info("Qdrant collection %r in %s: %s payload index on %s", self.name, self.where, kind, key)
