"""The vector collections of one index: where they live, and opening each one safely.

Where an index keeps its vectors is decided once, when it opens (``Location.resolve``, from
the manifest and the open options, as qdrant-client picks its mode from its constructor's
arguments): a FAISS folder, Qdrant's engine embedded in the folder, qdrant-client's legacy
local storage, or a Qdrant server. Everything after that reads the ``Location``.

``Storage`` opens a collection from its manifest entry; it knows the folders (``faiss/<name>/``,
``qdrant-edge/``, the legacy ``qdrant/``), the Qdrant client an index shares between its
collections, and the rules that keep a crafted folder harmless: no path through a link or
outside the index, no collection created by a read, and qdrant-client's legacy local storage
(which unpickles what it reads) only when the caller asks for it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import make_qdrant_client, open_backend
from .backends.base import VectorBackend
from .errors import (
    CollectionCorruptError,
    CollectionNotFoundError,
    InBedderError,
    IndexLockedError,
    MissingCollectionError,
)
from .manifest import BACKENDS, QDRANT_LEGACY, CollectionEntry, Manifest
from .safepath import inside, remove_tree

logger = logging.getLogger(__name__)

FAISS_FOLDER = "faiss"
QDRANT_EDGE_FOLDER = "qdrant-edge"
QDRANT_LEGACY_FOLDER = "qdrant"


@dataclass(frozen=True)
class OpenOptions:
    """The storage options of ``InstructionIndex.open``, checked once when they are given."""

    backend: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = field(default=None, repr=False)
    hnsw: bool = False
    read_only: bool = False
    legacy_qdrant: bool = False
    exact: bool = False

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.qdrant_url and self.backend == "faiss":
            raise ValueError("qdrant_url is given but the backend is 'faiss'; pass backend='qdrant'")

    @property
    def new_backend(self) -> str:
        """The backend a new index gets: the one asked for, else Qdrant for a URL, else FAISS."""
        return self.backend or ("qdrant" if self.qdrant_url else "faiss")


class LocationKind(enum.Enum):
    """The four places vectors can live."""

    FAISS = "faiss"
    QDRANT_EDGE = "qdrant-edge"
    QDRANT_LEGACY = "qdrant-legacy"
    QDRANT_SERVER = "qdrant-server"


@dataclass(frozen=True)
class Location:
    """Where one index keeps its vectors, and the index id its Qdrant points carry (the API key
    travels with it, to Ray workers too, but is never shown)."""

    kind: LocationKind
    root: Path
    index_id: str | None
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def resolve(cls, root: Path, manifest: Manifest, options: OpenOptions) -> Location:
        """The one place that decides it: the manifest's record, else the server the index is opened with."""
        index_id = manifest.index_id
        if manifest.backend == "faiss":
            return cls(LocationKind.FAISS, root, index_id)
        url = manifest.qdrant_url or options.qdrant_url
        if url:
            return cls(LocationKind.QDRANT_SERVER, root, index_id, url, options.qdrant_api_key)
        if manifest.qdrant_storage == QDRANT_LEGACY:
            return cls(LocationKind.QDRANT_LEGACY, root, index_id)
        return cls(LocationKind.QDRANT_EDGE, root, index_id)

    @property
    def backend(self) -> str:
        """The backend kind (``open_backend``'s ``kind``): "faiss" or "qdrant"."""
        return "faiss" if self.kind is LocationKind.FAISS else "qdrant"

    def describe(self) -> str:
        return f"the Qdrant server {self.url}" if self.url else str(self.root)


class Storage:
    """Opens (and caches) the backend of each collection of one index."""

    def __init__(self, location: Location, options: OpenOptions) -> None:
        self.location = location
        self.root = location.root
        self.read_only = options.read_only
        self.exact = options.exact
        self._open: dict[str, VectorBackend] = {}
        self._client = self._connect(options.legacy_qdrant)

    def _connect(self, legacy_qdrant: bool) -> Any:
        """The Qdrant handle the collections share (None for FAISS)."""
        kind, root = self.location.kind, self.root
        if kind is LocationKind.QDRANT_SERVER:
            return make_qdrant_client(url=self.location.url, api_key=self.location.api_key)
        if kind is LocationKind.QDRANT_LEGACY:
            if not legacy_qdrant:
                raise InBedderError(
                    f"{root} keeps its Qdrant points in qdrant-client's legacy local storage "
                    f"({QDRANT_LEGACY_FOLDER}/), which unpickles what it reads and so can run code planted in "
                    "the folder. Open it with legacy_qdrant=True (CLI: --legacy-qdrant) only if you trust "
                    "the folder, then move it to embedded Qdrant with: inbedder-index migrate "
                    f"{root} NEW_FOLDER --legacy-qdrant"
                )
            return make_qdrant_client(path=inside(root, QDRANT_LEGACY_FOLDER), legacy_local=True)
        if kind is LocationKind.QDRANT_EDGE:
            return self._edge_store(inside(root, QDRANT_EDGE_FOLDER))
        return None

    def _edge_store(self, folder: Path) -> Any:
        """The embedded Qdrant store, which one process holds at a time, readers included."""
        try:
            return make_qdrant_client(path=folder)
        except IndexLockedError as exc:
            if not self.read_only:
                raise
            raise IndexLockedError(
                f"{exc}. Embedded Qdrant (qdrant-edge) has no read-only mode: the process that holds the index "
                "(a writer, a server, or another reader) holds its engine, so it cannot be searched from here "
                f"at the same time. Search through that process (e.g. serve the index: inbedder-index serve "
                f"{self.root}, and query its HTTP API), or close it first; for many readers beside a writer, keep "
                "the index on a Qdrant server (qdrant_url=...) or on FAISS"
            ) from exc

    def _faiss_directory(self) -> Path:
        directory = inside(self.root, FAISS_FOLDER)
        if not self.read_only:
            directory.mkdir(exist_ok=True)
        return directory

    def _backend(self, name: str, dim: int, hnsw: bool, create: bool) -> VectorBackend:
        """The collection ``name``; CollectionNotFoundError when it is missing and not ``create``."""
        if name in self._open:
            return self._open[name]
        faiss = self.location.kind is LocationKind.FAISS
        directory = self._faiss_directory() if faiss else self.root
        if faiss:
            inside(directory, name)  # refuses a linked or escaping collection folder
        backend = open_backend(
            self.location.backend, directory=directory, name=name, dim=dim, create=create and not self.read_only,
            hnsw=hnsw, qdrant_client=self._client, read_only=self.read_only, index_id=self.location.index_id,
            exact=self.exact,
        )
        self._open[name] = backend
        return backend

    def collection(self, entry: CollectionEntry, *, create: bool = False) -> VectorBackend:
        """The backend of a manifest entry; a missing one raises MissingCollectionError unless ``create``."""
        try:
            return self._backend(entry.name, entry.dim, entry.hnsw, create)
        except CollectionNotFoundError as exc:
            raise MissingCollectionError(
                f"the collection of instruction {entry.instruction!r} ({entry.name}) is missing from "
                f"{self.location.describe()}, though the index lists it; rebuild it with: inbedder-index build "
                f"{self.root} --instruction {entry.instruction!r} (it re-encodes the corpus under that instruction)"
            ) from exc

    def drop(self, entry: CollectionEntry) -> None:
        """Delete a collection, even one too corrupt to open."""
        self.drop_name(entry.name, entry.dim)

    def drop_name(self, name: str, dim: int) -> None:
        """Delete the collection ``name`` (also what an interrupted drop left, known by its name alone)."""
        backend = self._open.pop(name, None)
        if self.location.kind is LocationKind.FAISS:
            if backend is not None:
                backend.close()
            remove_tree(self._faiss_directory(), name)
            return
        try:
            (backend or self._backend(name, dim, False, False)).drop()
        except CollectionNotFoundError:
            pass
        self._open.pop(name, None)

    def close(self) -> None:
        errors: list[BaseException] = []
        for backend in self._open.values():
            try:
                backend.close()
            except (OSError, CollectionCorruptError, InBedderError) as exc:  # close the rest all the same
                errors.append(exc)
        self._open = {}
        if self._client is not None:
            self._client.close()
            self._client = None
        if errors:
            raise errors[0]
