"""The vector collections of one index: where they live, and opening each one safely.

``index.py`` asks for a collection by its manifest entry; this module knows the folders
(``faiss/<name>/``, ``qdrant-edge/``, the legacy ``qdrant/``), the Qdrant client an index
shares between its collections, and the rules that keep a crafted folder harmless: no path
through a link or outside the index, no collection created by a read, and qdrant-client's
legacy local storage (which unpickles what it reads) only when the caller asks for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .backends import make_qdrant_client, open_backend
from .backends.base import VectorBackend
from .errors import CollectionCorruptError, CollectionNotFoundError, InBedderError, MissingCollectionError
from .manifest import QDRANT_LEGACY
from .safepath import inside, remove_tree

logger = logging.getLogger(__name__)

FAISS_FOLDER = "faiss"
QDRANT_EDGE_FOLDER = "qdrant-edge"
QDRANT_LEGACY_FOLDER = "qdrant"


class Storage:
    """Opens (and caches) the backend of each collection of one index."""

    def __init__(self, root: Path, backend: str, *, index_id: str | None, qdrant_url: str | None,
                 qdrant_api_key: str | None, qdrant_storage: str | None, read_only: bool,
                 legacy_qdrant: bool, exact: bool = False) -> None:
        self.root = root
        self.kind = backend
        self.index_id = index_id
        self.read_only = read_only
        self.exact = exact
        self.where = "the Qdrant server " + qdrant_url if qdrant_url else f"{root}"
        self._open: dict[str, VectorBackend] = {}
        self._client: Any = None
        if backend != "qdrant":
            return
        if qdrant_url:
            self._client = make_qdrant_client(url=qdrant_url, api_key=qdrant_api_key)
        elif qdrant_storage == QDRANT_LEGACY:
            if not legacy_qdrant:
                raise InBedderError(
                    f"{root} keeps its Qdrant points in qdrant-client's legacy local storage "
                    f"({QDRANT_LEGACY_FOLDER}/), which unpickles what it reads and so can run code planted in "
                    "the folder. Open it with legacy_qdrant=True (CLI: --legacy-qdrant) only if you trust "
                    "the folder, then move it with `inbedder-index migrate`"
                )
            self._client = make_qdrant_client(path=inside(root, QDRANT_LEGACY_FOLDER), legacy_local=True)
        else:
            self._client = make_qdrant_client(path=inside(root, QDRANT_EDGE_FOLDER))

    def _faiss_directory(self) -> Path:
        directory = inside(self.root, FAISS_FOLDER)
        if not self.read_only:
            directory.mkdir(exist_ok=True)
        return directory

    def collection(self, entry: dict[str, Any], *, create: bool = False) -> VectorBackend:
        """The backend of a manifest entry; a missing one raises MissingCollectionError unless ``create``."""
        name = entry["name"]
        if name in self._open:
            return self._open[name]
        directory = self._faiss_directory() if self.kind == "faiss" else self.root
        if self.kind == "faiss":
            inside(directory, name)  # refuses a linked or escaping collection folder
        try:
            backend = open_backend(
                self.kind, directory=directory, name=name, dim=entry["dim"], create=create and not self.read_only,
                hnsw=entry.get("hnsw", False), qdrant_client=self._client, read_only=self.read_only,
                index_id=self.index_id, exact=self.exact,
            )
        except CollectionNotFoundError as exc:
            raise MissingCollectionError(
                f"the collection of instruction {entry['instruction']!r} ({name}) is missing from {self.where}, "
                f"though the index lists it; rebuild it with: inbedder-index build {self.root} "
                f"--instruction {entry['instruction']!r} (it re-encodes the corpus under that instruction)"
            ) from exc
        self._open[name] = backend
        return backend

    def drop(self, entry: dict[str, Any]) -> None:
        """Delete a collection, even one too corrupt to open."""
        name = entry["name"]
        backend = self._open.pop(name, None)
        if self.kind == "faiss":
            if backend is not None:
                backend.close()
            remove_tree(self._faiss_directory(), name)
            return
        try:
            (backend or self.collection(entry)).drop()
        except MissingCollectionError:
            pass
        self._open.pop(name, None)

    def drop_name(self, name: str, dim: int) -> None:
        """Finish dropping a collection that only its name is left of (an interrupted drop)."""
        self.drop({"name": name, "dim": dim, "instruction": name})

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
