"""The contract every vector backend fulfils, and the validation they share.

A backend stores one collection of float32 vectors keyed by string document ids; the index
keeps one collection per instruction.  Vectors arrive already L2-normalised, so every backend
scores with the plain inner product and scores are comparable across backends.

All input checks live here so that FAISS and Qdrant reject exactly the same input with the
same messages, and so that a backend can validate *everything* before it modifies anything.

Metadata filters
----------------
A filter is a mapping ``{field: value}``; ``value`` is a ``str``, ``int``, ``float`` or ``bool``
(equality) or a non-empty list/tuple of them (any-of).  All fields must match (AND).  Equality
is type-aware, identically in :func:`filter_matches`, the corpus's SQL and Qdrant:

* ``bool`` matches only ``bool`` (``True`` does not match ``1``);
* numbers compare numerically (``2`` matches ``2.0``);
* ``str`` matches only the same string;
* a metadata value that is a list matches when any of its elements matches;
  a nested object never matches.

Field names are restricted to letters, digits, ``_`` and ``-`` because Qdrant reads a dot as
nesting and SQLite's JSON paths need quoting for other characters.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from .._util import validate_ids
from ..limits import check_k, check_metadata

Scalar = str | int | float | bool
"""A filterable metadata value."""

NormalisedFilter = dict[str, tuple[Scalar, ...]]
"""A validated filter: each field maps to the tuple of values it may equal."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FIELD_NAME = re.compile(r"[\w\-]+")
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")


# --------------------------------------------------------------------------- filters


def is_filter_field(name: Any) -> bool:
    """Whether filters can name this metadata field (see the module docstring)."""
    return isinstance(name, str) and _FIELD_NAME.fullmatch(name) is not None


def validate_filter(filter: Mapping[str, Any] | None) -> NormalisedFilter:
    """Check a metadata filter and return it as ``{field: (allowed values, ...)}``.

    Raises ValueError describing the first problem; ``None`` and ``{}`` match everything.
    """
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise ValueError(f"a filter must be a mapping of field -> value, not {type(filter).__name__}")
    normalised: NormalisedFilter = {}
    for field, value in filter.items():
        if not is_filter_field(field):
            raise ValueError(
                f"filter field {field!r} is not a valid name: use letters, digits, '_' or '-'"
            )
        values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if not values:
            raise ValueError(f"filter field {field!r} has an empty any-of list, which matches nothing")
        for item in values:
            if not isinstance(item, (str, int, float)):  # bool is an int
                raise ValueError(
                    f"filter field {field!r}: value {item!r} must be a str, int, float or bool "
                    "(or a list of them)"
                )
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"filter field {field!r}: value {item!r} is not finite")
            if isinstance(item, int) and not isinstance(item, bool) and not _INT64_MIN <= item <= _INT64_MAX:
                raise ValueError(f"filter field {field!r}: value {item} is outside the 64-bit integer range "
                                 "that stored metadata can hold")
        normalised[field] = values
    return normalised


def _scalar_equals(expected: Scalar, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, (int, float)):
        return isinstance(actual, (int, float)) and actual == expected
    return isinstance(actual, str) and actual == expected


def filter_matches(filter: Mapping[str, Any] | None, metadata: Mapping[str, Any]) -> bool:
    """Whether a document's metadata satisfies a filter (the reference semantics)."""
    for field, allowed in validate_filter(filter).items():
        if field not in metadata:
            return False
        value = metadata[field]
        candidates = value if isinstance(value, list) else [value]
        if not any(_scalar_equals(expected, actual) for expected in allowed for actual in candidates):
            return False
    return True


# --------------------------------------------------------------------------- inputs


def validate_collection_name(name: str) -> str:
    """A collection name doubles as a folder name (FAISS) and a Qdrant collection name."""
    if not isinstance(name, str) or not _COLLECTION_NAME.fullmatch(name) or len(name) > 200:
        raise ValueError(
            f"invalid collection name {name!r}: use 1-200 letters, digits, '_', '-' or '.', "
            "not starting with '.'"
        )
    return name


def validate_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    return dim


def validate_hnsw_params(hnsw_m: int, ef_construction: int, ef_search: int) -> None:
    for label, value, minimum in (
        ("hnsw_m", hnsw_m, 2),
        ("ef_construction", ef_construction, 1),
        ("ef_search", ef_search, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{label} must be an int >= {minimum}, got {value!r}")


def validate_upsert(
    ids: Sequence[str],
    vectors: Any,
    payloads: Sequence[Mapping[str, Any]] | None,
    dim: int,
) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """Check an upsert completely and return ``(ids, float32 matrix, payloads)``.

    Nothing is stored before this passes, so a bad batch never leaves a collection half-written.
    """
    checked_ids = validate_ids(ids)
    duplicates = sorted(doc_id for doc_id, n in Counter(checked_ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate ids in one upsert: {', '.join(map(repr, duplicates))}")
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"vectors cannot be converted to float32: {exc}") from exc
    if not checked_ids and matrix.size == 0:
        matrix = matrix.reshape(0, dim)
    if matrix.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (n, {dim}), got shape {matrix.shape}")
    if matrix.shape[1] != dim:
        raise ValueError(f"vectors have dimension {matrix.shape[1]}, but the collection has dimension {dim}")
    if matrix.shape[0] != len(checked_ids):
        raise ValueError(f"got {matrix.shape[0]} vectors for {len(checked_ids)} ids")
    bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad_rows.size:
        raise ValueError(f"vector for id {checked_ids[bad_rows[0]]!r} contains NaN or infinity")
    if payloads is None:
        checked_payloads: list[dict[str, Any]] = [{} for _ in checked_ids]
    else:
        checked_payloads = list(payloads)
        if len(checked_payloads) != len(checked_ids):
            raise ValueError(f"got {len(checked_payloads)} payloads for {len(checked_ids)} ids")
        for doc_id, payload in zip(checked_ids, checked_payloads):
            if not isinstance(payload, Mapping):
                raise TypeError(f"payload for id {doc_id!r} must be a mapping, got {type(payload).__name__}")
        checked_payloads = [dict(payload) for payload in checked_payloads]
        for doc_id, payload in zip(checked_ids, checked_payloads):
            check_metadata(f"payload for id {doc_id!r}", payload)
    return checked_ids, np.ascontiguousarray(matrix), checked_payloads


def validate_query(vector: Any, k: int, dim: int) -> tuple[np.ndarray, int]:
    """A query as a ``(1, dim)`` float32 matrix, and ``k`` checked (``limits.MAX_K`` at most)."""
    check_k(k)
    try:
        query = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"query vector cannot be converted to float32: {exc}") from exc
    if query.shape not in ((dim,), (1, dim)):
        raise ValueError(f"query vector must have shape ({dim},), got {query.shape}")
    if not np.isfinite(query).all():
        raise ValueError("query vector contains NaN or infinity")
    return np.ascontiguousarray(query.reshape(1, dim)), k


# --------------------------------------------------------------------------- contract


class VectorBackend(ABC):
    """One collection of float32 vectors keyed by string document ids.

    Scores are inner products of (normalised) vectors, best first.  Backends are context
    managers; ``close()`` makes pending writes durable first.
    """

    filters_payload: ClassVar[bool]
    """True: search() applies ``filter`` natively; False: the caller resolves it to ``candidate_ids``."""

    name: str
    dim: int

    def __init__(self, name: str, dim: int) -> None:
        self.name = validate_collection_name(name)
        self.dim = validate_dim(dim)
        self._closed = False

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"collection {self.name!r} is closed")

    def __enter__(self) -> VectorBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @abstractmethod
    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Insert or replace vectors of shape ``(len(ids), dim)``; payloads are document metadata."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Remove ids; missing ids are ignored."""

    @abstractmethod
    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filter: Mapping[str, Any] | None = None,
        candidate_ids: Collection[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Up to ``k`` ``(doc_id, score)`` pairs, best first, restricted to ``candidate_ids`` if given."""

    @abstractmethod
    def get_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of the ids that are present."""

    @abstractmethod
    def ids(self) -> set[str]:
        """Every stored id (an interrupted build resumes with corpus ids minus these)."""

    @abstractmethod
    def count(self) -> int:
        """Number of stored vectors."""

    @abstractmethod
    def flush(self) -> None:
        """Make every write so far durable."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the collection; further calls raise RuntimeError."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the collection and its data; the backend is closed afterwards."""
