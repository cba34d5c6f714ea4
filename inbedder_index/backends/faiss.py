"""FAISS backend: one collection = one file, ``<directory>/<name>/collection.faiss``.

Storage and crash safety
------------------------
The string ids and the vectors live in the *same* file, so one ``os.replace`` publishes both
at once and no crash can leave an id map that disagrees with the index::

    MAGIC (16 bytes) | header length (uint64 LE) | header (UTF-8 JSON) | faiss.write_index stream

The JSON header holds ``doc_ids`` and ``faiss_ids`` (parallel lists: string id -> int64 FAISS
id) and ``tombstones``.  Nothing is pickled.  ``flush()`` streams the file into a temporary
file in the same folder (no second in-memory copy of the index), fsyncs it, renames it over
the old file and fsyncs the folder.  A crash at any point leaves either the previous file or
the new one; leftover temporary files are removed on the next open.  Writes between two
flushes live only in memory: callers flush at checkpoints and resume from ``ids()``.

Index types
-----------
Exact search (default) is ``IndexIDMap2(IndexFlatIP)``.  ``hnsw=True`` builds
``IndexIDMap2(IndexHNSWFlat(M, inner product))``; the id map keeps our int64 ids and can
reconstruct vectors.  Build-time settings (M, efConstruction) are read back from the stored
file; ``ef_search`` is a query-time setting and is taken from the arguments on every open.

How deletions work
------------------
Doc ids map to int64 ids assigned sequentially.  Upserting an existing id deletes it and adds
the new vector under a fresh int id.  The flat index removes vectors with ``remove_ids``.  An
HNSW graph cannot remove nodes, so a deleted int id becomes a *tombstone*: it stays in the
graph but an ``IDSelectorNot`` excludes it from every search.  When tombstones exceed 25% of
the vectors in the graph, the graph is rebuilt from the live vectors (reconstructed from the
index, same int ids) and the tombstones are dropped.

Restricted search
-----------------
``candidate_ids`` (the caller's metadata filter, resolved by the corpus) becomes an
``IDSelectorBatch``.  Up to ``exact_candidate_limit`` candidates are instead scored exactly
from their reconstructed vectors: a very selective filter makes HNSW's graph walk miss
matches, and scoring a few thousand vectors directly is cheaper than a scan anyway.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import secrets
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._util import import_optional, validate_ids
from ..errors import CollectionCorruptError, CollectionNotFoundError
from ._faiss_format import check_stream
from .base import VectorBackend, validate_hnsw_params, validate_query, validate_upsert

logger = logging.getLogger(__name__)

FILENAME = "collection.faiss"
MAGIC = b"INBEDDER-FAISS\x00\x01"  # format name + version 1
_HEADER_LENGTH = struct.Struct("<Q")
TOMBSTONE_REBUILD_RATIO = 0.25


def _faiss() -> Any:
    return import_optional("faiss", "faiss")


def _int_ids(values: Collection[int]) -> np.ndarray:
    return np.fromiter(values, dtype=np.int64, count=len(values))


def _fsync_directory(folder: Path) -> None:
    """Persist a rename; directories cannot be opened for fsync on Windows."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FaissBackend(VectorBackend):
    """A FAISS collection persisted as a single file (see the module docstring)."""

    filters_payload = False
    exact_candidate_limit = 2048
    """Candidate sets up to this size are scored exactly instead of through the index."""

    def __init__(
        self,
        directory: Path,
        name: str,
        dim: int,
        *,
        create: bool,
        hnsw: bool = False,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        read_only: bool = False,
    ) -> None:
        super().__init__(name, dim)
        validate_hnsw_params(hnsw_m, ef_construction, ef_search)
        self._faiss = _faiss()
        self._folder = Path(directory) / self.name
        self._path = self._folder / FILENAME
        self._lock = threading.RLock()
        self._hnsw = hnsw
        self._hnsw_m = hnsw_m
        self._ef_construction = ef_construction
        self._ef_search = ef_search
        self._int_of: dict[str, int] = {}
        self._doc_of: dict[int, str] = {}
        self._tombstones: set[int] = set()
        self._next_id = 0
        self._read_only = read_only
        if self._folder.is_symlink() or self._path.is_symlink():
            raise CollectionCorruptError(f"{self._folder} or its file is a symbolic link; refusing to open it")
        if self._path.exists():
            if not read_only:  # only the writer may: a temporary file can be a running writer's
                self._remove_stale_temp_files()
            self._load()
            self._dirty = False
        elif create and not read_only:
            self._folder.mkdir(parents=True, exist_ok=True)
            self._index = self._new_index()
            self._dirty = True
            self.flush()  # a created collection exists on disk even before the first write
        else:
            raise CollectionNotFoundError(
                f"FAISS collection {self.name!r} does not exist ({self._path} is missing)"
            )

    # ------------------------------------------------------------------ public API

    @property
    def tombstone_count(self) -> int:
        """Deleted vectors still in the HNSW graph (always 0 for exact search)."""
        return len(self._tombstones)

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        doc_ids, matrix, _ = validate_upsert(ids, vectors, payloads, self.dim)
        with self._lock:
            self._ensure_writable()
            if not doc_ids:
                return
            self._remove([doc_id for doc_id in doc_ids if doc_id in self._int_of])
            new_ids = np.arange(self._next_id, self._next_id + len(doc_ids), dtype=np.int64)
            self._index.add_with_ids(matrix, new_ids)
            for doc_id, int_id in zip(doc_ids, new_ids.tolist()):
                self._int_of[doc_id] = int_id
                self._doc_of[int_id] = doc_id
            self._next_id += len(doc_ids)
            self._dirty = True
            self._rebuild_if_needed()

    def delete(self, ids: Sequence[str]) -> None:
        doc_ids = validate_ids(ids)
        with self._lock:
            self._ensure_writable()
            present = [doc_id for doc_id in dict.fromkeys(doc_ids) if doc_id in self._int_of]
            if present:
                self._remove(present)
                self._dirty = True
                self._rebuild_if_needed()

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filter: Mapping[str, Any] | None = None,
        candidate_ids: Collection[str] | None = None,
    ) -> list[tuple[str, float]]:
        if filter:
            raise ValueError(
                "the FAISS backend cannot filter on metadata: resolve the filter to candidate_ids "
                "(FaissBackend.filters_payload is False)"
            )
        query, k = validate_query(vector, k, self.dim)
        with self._lock:
            self._ensure_open()
            if candidate_ids is None:
                return self._search_index(query, k, allowed=None)
            allowed = _int_ids(sorted({self._int_of[c] for c in candidate_ids if c in self._int_of}))
            if allowed.size <= self.exact_candidate_limit:
                return self._search_exact(query, k, allowed)
            return self._search_index(query, k, allowed=allowed)

    def get_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        doc_ids = validate_ids(ids)
        with self._lock:
            self._ensure_open()
            present = [doc_id for doc_id in dict.fromkeys(doc_ids) if doc_id in self._int_of]
            if not present:
                return {}
            matrix = self._index.reconstruct_batch(_int_ids([self._int_of[d] for d in present]))
            return dict(zip(present, matrix))

    def ids(self) -> set[str]:
        with self._lock:
            self._ensure_open()
            return set(self._int_of)

    def count(self) -> int:
        with self._lock:
            self._ensure_open()
            return len(self._int_of)

    def flush(self) -> None:
        with self._lock:
            self._ensure_open()
            if self._dirty:
                self._write()
                self._dirty = False

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self.flush()
                self._closed = True

    def drop(self) -> None:
        with self._lock:
            self._ensure_writable()
            self._closed = True
            if self._folder.is_symlink():  # never delete through a link
                raise CollectionCorruptError(f"{self._folder} is a symbolic link; refusing to delete through it")
            shutil.rmtree(self._folder, ignore_errors=True)
            logger.info("dropped FAISS collection %r (%s)", self.name, self._folder)

    def _ensure_writable(self) -> None:
        self._ensure_open()
        if self._read_only:
            raise RuntimeError(f"FAISS collection {self.name!r} is open read-only")

    # ------------------------------------------------------------------ index

    def _new_index(self) -> Any:
        faiss = self._faiss
        if self._hnsw:
            inner = faiss.IndexHNSWFlat(self.dim, self._hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self._ef_construction
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)  # faiss's Python wrapper keeps `inner` alive with it

    def _remove(self, doc_ids: Sequence[str]) -> None:
        int_ids = [self._int_of.pop(doc_id) for doc_id in doc_ids]
        for int_id in int_ids:
            del self._doc_of[int_id]
        if self._hnsw:
            self._tombstones.update(int_ids)
        elif int_ids:
            self._index.remove_ids(_int_ids(int_ids))

    def _rebuild_if_needed(self) -> None:
        if len(self._tombstones) <= TOMBSTONE_REBUILD_RATIO * self._index.ntotal:
            return
        live = _int_ids(sorted(self._doc_of))
        vectors = (
            self._index.reconstruct_batch(live) if live.size else np.empty((0, self.dim), np.float32)
        )
        rebuilt = self._new_index()
        rebuilt.add_with_ids(vectors, live)
        logger.info(
            "rebuilt HNSW graph of %r: dropped %d tombstones, kept %d vectors",
            self.name,
            len(self._tombstones),
            live.size,
        )
        self._index = rebuilt
        self._tombstones.clear()

    def _search_index(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> list[tuple[str, float]]:
        faiss = self._faiss
        k = min(k, len(self._int_of) if allowed is None else allowed.size)
        if k == 0:
            return []
        # The selectors must stay referenced until the search returns: FAISS keeps raw pointers.
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)
        elif self._tombstones:
            dead = faiss.IDSelectorBatch(_int_ids(self._tombstones))
            selector = faiss.IDSelectorNot(dead)
        else:
            selector = None
        if self._hnsw:
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=self._ef_search)
        else:
            params = faiss.SearchParameters(sel=selector)
        scores, labels = self._index.search(query, k, params=params)
        return [
            (self._doc_of[label], float(score))
            for score, label in zip(scores[0].tolist(), labels[0].tolist())
            if label != -1
        ]

    def _search_exact(self, query: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[str, float]]:
        if allowed.size == 0:
            return []
        scores = self._index.reconstruct_batch(allowed) @ query[0]
        best = np.argsort(-scores, kind="stable")[:k]
        return [(self._doc_of[int(allowed[i])], float(scores[i])) for i in best]

    # ------------------------------------------------------------------ persistence

    def _write(self) -> None:
        header = json.dumps(
            {
                "doc_ids": list(self._int_of),
                "faiss_ids": list(self._int_of.values()),
                "tombstones": sorted(self._tombstones),
            }
        ).encode("ascii")
        temp = self._folder / f".{FILENAME}.{secrets.token_hex(8)}.tmp"
        # os.open with 0o666 lets the umask decide the file's mode, as for any file the user creates
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(MAGIC)
                file.write(_HEADER_LENGTH.pack(len(header)))
                file.write(header)
                self._faiss.write_index(self._index, self._faiss.PyCallbackIOWriter(file.write))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self._path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_directory(self._folder)
        logger.debug("wrote %s (%d vectors)", self._path, len(self._int_of))

    def _remove_stale_temp_files(self) -> None:
        for stale in self._folder.glob(f".{FILENAME}.*.tmp"):
            logger.warning("removing %s left by an interrupted write", stale)
            stale.unlink(missing_ok=True)

    def _load(self) -> None:
        faiss = self._faiss
        try:
            with open(self._path, "rb") as file:
                if file.read(len(MAGIC)) != MAGIC:
                    raise ValueError("not an inbedder FAISS collection file")
                (length,) = _HEADER_LENGTH.unpack(file.read(_HEADER_LENGTH.size))
                if length > os.fstat(file.fileno()).st_size - file.tell():
                    raise ValueError("the file is truncated")
                header = json.loads(file.read(length).decode("utf-8"))
                vectors = len(header["doc_ids"]) + len(header["tombstones"])
                check_stream(file, self.dim, vectors)  # before FAISS allocates what the file claims
                index = faiss.read_index(faiss.PyCallbackIOReader(file.read))
            doc_ids = [str(doc_id) for doc_id in header["doc_ids"]]
            int_ids = [int(int_id) for int_id in header["faiss_ids"]]
            tombstones = {int(int_id) for int_id in header["tombstones"]}
            inner = faiss.downcast_index(index.index)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, struct.error) as exc:
            raise CollectionCorruptError(f"cannot read FAISS collection {self._path}: {exc}") from exc

        stored = faiss.vector_to_array(index.id_map).tolist()
        if (
            index.metric_type != faiss.METRIC_INNER_PRODUCT
            or len(doc_ids) != len(int_ids)
            or len(set(doc_ids)) != len(doc_ids)
            or len(stored) != len(int_ids) + len(tombstones)
            or set(stored) != set(int_ids) | tombstones
        ):
            raise CollectionCorruptError(f"{self._path}: the id map or metric does not match the stored index")
        stored_hnsw = isinstance(inner, faiss.IndexHNSW)
        if stored_hnsw != self._hnsw:
            kinds = {True: "HNSW", False: "exact (flat)"}
            raise ValueError(
                f"FAISS collection {self.name!r} was built for {kinds[stored_hnsw]} search "
                f"but is opened with hnsw={self._hnsw}"
            )
        if index.d != self.dim:
            raise ValueError(
                f"FAISS collection {self.name!r} stores vectors of dimension {index.d}, "
                f"not the requested {self.dim}"
            )
        if stored_hnsw:
            self._hnsw_m = inner.hnsw.nb_neighbors(1)
            self._ef_construction = inner.hnsw.efConstruction
        self._index = index
        self._int_of = dict(zip(doc_ids, int_ids))
        self._doc_of = dict(zip(int_ids, doc_ids))
        self._tombstones = tombstones
        self._next_id = max(stored, default=-1) + 1
