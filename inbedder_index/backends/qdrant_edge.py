"""Embedded Qdrant: Qdrant's own Rust engine in this process, through ``qdrant-edge-py``.

It is the laptop path of ``backend="qdrant"``: the same engine as a server (segments, HNSW,
payload indexes, a write-ahead log), none of qdrant-client local mode's pure-Python scan or
pickles, and the point layout of :mod:`.qdrant_common`, so a collection built here moves to
a server unchanged (:mod:`.migrate`).

Layout of a store folder (``make_qdrant_client(path=P)``)::

    P/.lock                  flock held by the one process that uses the store
    P/<name>/                one edge shard per collection: segments/, wal/, edge_config.json
    P/<name>/inbedder.json   {"index_id": ...}: the index that created the collection
    P/.dropped-<name>-<id>/  a collection being dropped (renamed first, so a drop is atomic)

Nothing here is pickled: the engine writes its own binary and JSON files, this module JSON.

Durability: every update goes to the shard's WAL first (a SIGKILL loses nothing the engine
accepted; the WAL is replayed on the next open); ``flush()`` also writes the segments.
Indexing: new points land in a plain segment that is searched exactly; ``close()`` after
writes (or :meth:`QdrantEdgeBackend.optimize`) runs the engine's optimizers, which build the
HNSW graph of every segment past the indexing threshold (about 10 MB of vectors). Search
then walks the graph with ``hnsw_ef = ef_search`` unless ``exact=True``.

Engine defect worked around: qdrant-edge 0.9 converts ``MatchValue(True)`` to the integer 1
(a Python bool is an int), which never equals a stored bool. NumPy's ``bool_`` is not an int,
so :func:`_match_value` passes bools as ``numpy.bool_`` and the engine receives a real bool.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._util import import_optional
from ..errors import CollectionCorruptError, CollectionNotFoundError, IndexLockedError
from .base import Scalar, validate_collection_name, validate_hnsw_params
from .qdrant_common import OWNER_FIELD, FilterDialect, QdrantLayoutBackend, validate_payload_fields

logger = logging.getLogger(__name__)

CONFIG_FILE = "edge_config.json"
OWNER_FILE = "inbedder.json"
LOCK_FILE = ".lock"
DROPPED_PREFIX = ".dropped-"
FULL_SCAN_THRESHOLD_KB = 10_000
"""Segments smaller than this many KB of vectors are scanned exactly (Qdrant's default)."""


def _edge() -> Any:
    return import_optional("qdrant_edge", "qdrant")


def _match_value(value: Scalar) -> Any:
    """``MatchValue`` with bools as ``numpy.bool_`` (see the module docstring)."""
    return _edge().MatchValue(np.bool_(value) if isinstance(value, bool) else value)


def _schema_types() -> dict[str, Any]:
    schema = _edge().PayloadSchemaType
    return {"keyword": schema.Keyword, "integer": schema.Integer, "float": schema.Float, "bool": schema.Bool}


def edge_dialect() -> FilterDialect:
    qe = _edge()
    return FilterDialect(
        match=lambda key, match: qe.FieldCondition(key, match=match),
        equals_number=lambda key, value: qe.FieldCondition(key, range=qe.RangeFloat(gte=value, lte=value)),
        match_value=_match_value,
        match_any=lambda values: qe.MatchAny(values),
        filter=lambda must=None, should=None, must_not=None: qe.Filter(must=must, should=should, must_not=must_not),
        has_ids=lambda ids: qe.HasIdCondition(set(ids)),
    )


class EdgeStore:
    """A folder of embedded Qdrant collections, held by one process (see the module docstring).

    Shards are opened once and shared by every backend of the same collection; :meth:`close`
    closes them all and releases the folder.
    """

    def __init__(self, path: Path, *, search_threads: int | None = None) -> None:
        self.path = Path(path)
        self._qe = _edge()
        self._search_threads = search_threads
        if (self.path / "meta.json").exists():
            raise ValueError(
                f"{self.path} holds qdrant-client local-mode storage, which unpickles what it reads; open it with "
                "make_qdrant_client(path=..., legacy_local=True) only if you trust the folder, and migrate it"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise IndexLockedError(f"the Qdrant storage {self.path} is in use by another client or process") from None
        self._shards: dict[str, Any] = {}
        for leftover in self.path.glob(f"{DROPPED_PREFIX}*"):  # a drop interrupted after its rename
            shutil.rmtree(leftover, ignore_errors=True)

    def __repr__(self) -> str:
        return f"EdgeStore({str(self.path)!r})"

    def _folder(self, name: str) -> Path:
        folder = self.path / validate_collection_name(name)
        if folder.is_symlink():
            raise CollectionCorruptError(f"{folder} is a symbolic link; refusing to open it")
        return folder

    def exists(self, name: str) -> bool:
        return (self._folder(name) / CONFIG_FILE).is_file()

    def vector_params(self, name: str) -> tuple[int, str]:
        """``(dim, distance)`` of a collection's unnamed vector, from the engine's JSON config."""
        path = self._folder(name) / CONFIG_FILE
        try:
            vectors = json.loads(path.read_text())["vectors"]
            params = vectors[""]
            return int(params["size"]), str(params["distance"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CollectionCorruptError(f"cannot read the Qdrant collection config {path}: {exc!r}") from exc

    def owner(self, name: str) -> str | None:
        """The index id recorded when the collection was created, if any."""
        path = self._folder(name) / OWNER_FILE
        try:
            return json.loads(path.read_text()).get(OWNER_FIELD) if path.exists() else None
        except (OSError, ValueError, AttributeError) as exc:
            raise CollectionCorruptError(f"cannot read {path}: {exc!r}") from exc

    def shard(self, name: str, dim: int, *, create: bool, hnsw_m: int, ef_construction: int,
              index_id: str | None) -> Any:
        """The open shard of ``name``, loading it, or creating it when ``create``."""
        if name in self._shards:
            return self._shards[name]
        qe = self._qe
        folder = self._folder(name)
        vectors = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Dot)
        if self.exists(name):
            config = None if self._search_threads is None else qe.EdgeConfig(
                vectors=vectors, max_search_threads=self._search_threads)
            try:
                shard = qe.EdgeShard.load(str(folder), config)
            except Exception as exc:  # the engine raises plain Exceptions
                raise CollectionCorruptError(
                    f"cannot open the embedded Qdrant collection {folder}: {exc}; drop the instruction and rebuild it"
                ) from exc
        elif create:
            if folder.exists():  # a create interrupted before the engine wrote its config
                shutil.rmtree(folder)
            config = qe.EdgeConfig(
                vectors=vectors, max_search_threads=self._search_threads,
                hnsw_config=qe.HnswIndexConfig(m=hnsw_m, ef_construct=ef_construction,
                                               full_scan_threshold=FULL_SCAN_THRESHOLD_KB),
            )
            shard = qe.EdgeShard.create(str(folder), config)
            if index_id is not None:
                (folder / OWNER_FILE).write_text(json.dumps({OWNER_FIELD: index_id}))
            logger.info("created embedded Qdrant collection %r (dim %d) in %s", name, dim, self.path)
        else:
            raise CollectionNotFoundError(f"Qdrant collection {name!r} does not exist in {self.path}")
        self._shards[name] = shard
        return shard

    def remove(self, name: str) -> None:
        """Close and delete a collection's shard: renamed away at once, then deleted."""
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.close()
        folder = self._folder(name)
        if folder.exists():
            doomed = self.path / f"{DROPPED_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
            os.replace(folder, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        logger.info("dropped embedded Qdrant collection %r in %s", name, self.path)

    def close(self) -> None:
        """Flush and close every shard, and release the folder."""
        shards, self._shards = self._shards, {}
        try:
            for shard in shards.values():
                shard.flush()
                shard.close()
        finally:
            if not self._lock.closed:
                self._lock.close()


class QdrantEdgeBackend(QdrantLayoutBackend):
    """An embedded Qdrant collection in an :class:`EdgeStore` (see the module docstring)."""

    def __init__(
        self,
        store: EdgeStore,
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
        self._qe = _edge()
        self._dialect = edge_dialect()
        self._store = store
        self.where = str(store.path)
        self._unflushed = False
        self._unoptimized = False
        self._params = self._qe.SearchParams(hnsw_ef=ef_search, exact=exact)
        existed = store.exists(self.name)
        if existed:
            self._check_vector_params(*store.vector_params(self.name))
        self._shard = store.shard(self.name, self.dim, create=create and not read_only, hnsw_m=hnsw_m,
                                  ef_construction=ef_construction, index_id=self._index_id)
        if existed:
            self._check_owner(store.owner(self.name))
        if fields and not read_only:
            self.ensure_payload_indexes(fields)

    # ------------------------------------------------------------------ primitives

    def _point(self, pid: str, vector: list[float], payload: dict[str, Any]) -> Any:
        return self._qe.Point(pid, vector, payload)

    def _write(self, points: list[Any]) -> None:
        self._shard.update(self._qe.UpdateOperation.upsert_points(points))
        self._unflushed = self._unoptimized = True

    def _remove(self, pids: list[str]) -> None:
        self._shard.update(self._qe.UpdateOperation.delete_points(pids))
        self._unflushed = self._unoptimized = True

    def _query(self, vector: list[float], k: int, query_filter: Any | None) -> list[Any]:
        qe = self._qe
        return self._shard.query(qe.QueryRequest(
            limit=k, query=qe.Query.Nearest(vector), filter=query_filter, with_payload=["doc_id"], params=self._params,
        ))

    def _retrieve(self, pids: list[str]) -> list[Any]:
        return self._shard.retrieve(pids, ["doc_id"], True)

    def _scroll_page(self, offset: Any, limit: int, with_payload: list[str], with_vector: bool,
                     query_filter: Any | None = None) -> tuple[list[Any], Any]:
        return self._shard.scroll(self._qe.ScrollRequest(
            offset=offset, limit=limit, filter=query_filter, with_payload=with_payload, with_vector=with_vector))

    # ------------------------------------------------------------------ the rest of the API

    def count(self) -> int:
        self._ensure_open()
        return self._shard.count(self._qe.CountRequest(exact=True))

    def _set_field_index(self, key: str, kind: str | None) -> None:
        operations = self._qe.UpdateOperation
        self._shard.update(operations.delete_field_index(key) if kind is None
                           else operations.create_field_index(key, _schema_types()[kind]))
        self._unflushed = True

    def payload_indexes(self) -> dict[str, str]:
        self._ensure_open()
        kinds = {schema: kind for kind, schema in _schema_types().items()}
        return {key.removeprefix("metadata."): kinds[info.data_type]
                for key, info in self._shard.info().payload_schema.items()
                if key.startswith("metadata.") and info.data_type in kinds}

    def engine_info(self) -> dict[str, int]:
        """Segments, points and HNSW-indexed vectors, as the engine reports them."""
        self._ensure_open()
        info = self._shard.info()
        return {"segments": info.segments_count, "points": info.points_count,
                "indexed_vectors": info.indexed_vectors_count}

    def optimize(self) -> None:
        """Run the engine's optimizers now: build HNSW graphs, merge segments, vacuum deletions."""
        self._ensure_writable()
        self._shard.optimize()
        self._unoptimized = False
        self._unflushed = True

    def flush(self) -> None:
        self._ensure_open()
        if self._unflushed:
            self._shard.flush()
            self._unflushed = False

    def close(self) -> None:
        if self._closed:
            return
        if self._unoptimized:
            self.optimize()
        self.flush()
        self._closed = True  # the shard stays open in the store for other backends of the collection

    def drop(self) -> None:
        self._refuse_read_only()
        self._closed = True
        self._store.remove(self.name)
