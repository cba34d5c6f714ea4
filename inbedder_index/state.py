"""One open index's state: its writer lock, corpus, manifest, location and collections.

``InstructionIndex`` is a facade over this object. It opens the folder's parts in order,
checks the manifest against the open options, resolves once where the vectors live
(``storage.Location``), and is the only code that writes the manifest (``save``). A failed
open removes what it created, so a later open starts afresh.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import VectorBackend
from .corpus import CORPUS_FILENAME, Corpus, Document
from .errors import IndexClosedError, IndexLockedError, InBedderError, ManifestError, MissingCollectionError
from .manifest import MANIFEST_KEY, CollectionEntry, Manifest, ModelRecord
from .safepath import inside, open_regular
from .storage import Location, OpenOptions, Storage

logger = logging.getLogger(__name__)

LOCK_FILENAME = "lock"


def index_path(path: str | os.PathLike[str]) -> Path:
    """The folder of an index, refused when it cannot be one."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"give the index folder's path, not {path!r} (an empty path would turn the current "
                         "folder into an index)")
    resolved = Path(path).expanduser()
    if resolved.exists() and not resolved.is_dir():
        raise NotADirectoryError(f"{resolved} exists and is not a folder; an index is a folder")
    return resolved


class IndexState:
    """The corpus, manifest and collections of one open index (``close`` releases them)."""

    def __init__(self, path: Path, options: OpenOptions) -> None:
        if options.read_only and not (path / CORPUS_FILENAME).exists():
            raise FileNotFoundError(f"no index at {path} to open read-only")
        self.path = path
        self.read_only = options.read_only
        self.storage: Storage | None = None
        self._corpus: Corpus | None = None
        self._lock_fd: int | None = None
        self._created = (not path.exists(), not (path / CORPUS_FILENAME).exists())
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not self.read_only:
                self._lock()
            self._corpus = Corpus(inside(path, CORPUS_FILENAME), read_only=self.read_only)
            self.manifest, self._changed = self._read_manifest(options)
            self.manifest.check_backend(path, options.backend, options.qdrant_url)
            self.hnsw = options.hnsw or self.manifest.hnsw
            self.location = Location.resolve(path, self.manifest, options)
            self.storage = Storage(self.location, options)
        except BaseException:
            self.abandon()
            raise

    def _read_manifest(self, options: OpenOptions) -> tuple[Manifest, bool]:
        """The stored manifest (upgraded by a writer), or a new one; and whether it needs saving."""
        corpus_file = self.corpus.path
        manifest = Manifest.parse(self.corpus.get_meta(MANIFEST_KEY), corpus_file)
        if manifest is None:
            if self.read_only:
                raise ManifestError(f"{corpus_file} has no index manifest; it is not an index")
            return Manifest.new(options.new_backend, options.qdrant_url, options.hnsw, corpus_file), True
        return manifest, not self.read_only and manifest.upgrade(options.qdrant_url)

    def _lock(self) -> None:
        fd = open_regular(self.path / LOCK_FILENAME, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise IndexLockedError(
                f"{self.path} is open for writing by {holder}; close it there first, "
                "or open this one with read_only=True to search"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._lock_fd = fd

    def settle(self) -> None:
        """A writer's last step of opening: finish an interrupted drop, store a new or upgraded manifest."""
        if self.read_only:
            return
        self.finish_drops()
        if self._changed:
            self.save()

    # ----------------------------------------------------------------- lifecycle

    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            raise IndexClosedError(f"the index at {self.path} is closed; open it again with InstructionIndex.open")
        return self._corpus

    def writable(self) -> None:
        """Refuse a closed or read-only index."""
        self.corpus  # noqa: B018 - raises IndexClosedError
        if self.read_only:
            raise InBedderError(f"{self.path} is open read-only; open it without read_only=True to change it")

    def close(self) -> None:
        """Make everything durable and release the writer lock (closing twice is harmless)."""
        try:
            if self.storage is not None:
                self.storage.close()
        finally:
            self.storage = None
            if self._corpus is not None:
                self._corpus.close()
                self._corpus = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def abandon(self) -> None:
        """Close after a failed open, removing what the open created."""
        try:
            self.close()
        except InBedderError:
            pass
        created_folder, created_corpus = self._created
        if self.read_only:
            return
        if created_corpus:
            for suffix in ("", "-wal", "-shm"):
                (self.path / f"{CORPUS_FILENAME}{suffix}").unlink(missing_ok=True)
            (self.path / LOCK_FILENAME).unlink(missing_ok=True)
        if created_folder:
            try:
                self.path.rmdir()
            except OSError:  # something else was put there meanwhile: leave it
                pass

    # ----------------------------------------------------------------- manifest

    def save(self) -> None:
        """Store the manifest (in the corpus, so inside any transaction the caller holds)."""
        self.corpus.set_meta(MANIFEST_KEY, self.manifest.dumps())

    def adopt_model(self, model_id: str, fingerprint: str, dim: int, max_length: int,
                    earlier: Callable[[], Sequence[str]] | None = None) -> None:
        """Refuse a model other than the index's; a writer records the first one it meets.

        An index an earlier release built records the same model under that release's fingerprint
        (``earlier``): it is accepted, and a writer records the current fingerprint from now on.
        """
        if self.manifest.check_model(self.path, model_id, fingerprint, earlier):
            logger.info("%s: recording the model's fingerprint in the current scheme", self.path)
            self.manifest.renew_fingerprint(fingerprint)
            if not self.read_only:
                self.save()
        if self.manifest.model is None and not self.read_only:
            self.manifest.model = ModelRecord(model_id, fingerprint, dim, max_length)
            self.save()

    def instructions(self) -> list[str]:
        self.corpus  # noqa: B018 - raises IndexClosedError
        return self.manifest.instructions()

    def entry(self, instruction: str) -> CollectionEntry:
        self.corpus  # noqa: B018 - raises IndexClosedError
        return self.manifest.entry(instruction)

    def collection(self, instruction: str) -> VectorBackend:
        """A collection for reading: never created by a read, an error naming it when it is missing."""
        entry = self.entry(instruction)  # first: it refuses a closed index
        return self.storage.collection(entry)

    def drop(self, instruction: str) -> None:
        """Delete an instruction's collection. The manifest forgets it first (and remembers the name
        until the data is gone), so a drop cut short never leaves an index counting a collection it lacks."""
        entry = self.entry(instruction)
        with self.corpus.transaction():
            del self.manifest.collections[instruction]
            self.manifest.dropping.append(entry.name)
            self.corpus.forget_collection(entry.name)
            self.save()
        self.storage.drop(entry)
        self.manifest.dropping.remove(entry.name)
        self.save()

    def finish_drops(self) -> None:
        """Delete the collections of an interrupted drop (already out of the manifest)."""
        dim = self.manifest.model.dim if self.manifest.model else 1  # every collection holds the model's vectors
        for name in list(self.manifest.dropping):
            self.storage.drop_name(name, dim=dim)
            self.manifest.dropping.remove(name)
            self.save()

    # ----------------------------------------------------------------- inspection

    def vectors(self, instruction: str, batch_size: int) -> Iterator[tuple[list[Document], np.ndarray]]:
        """Every document with its vector under ``instruction``, in corpus order."""
        backend = self.collection(instruction)
        for batch in self.corpus.iter_batches(batch_size):
            stored = backend.get_vectors([d.id for d in batch])
            present = [d for d in batch if d.id in stored]
            if present:
                yield present, np.stack([stored[d.id] for d in present])

    def _collection_stats(self, entry: CollectionEntry) -> dict[str, Any]:
        """A manifest entry with what is really stored: the backend's count and the pending work."""
        stats = entry.to_json()
        stats["pending"] = self.corpus.pending_count(entry.name)
        try:
            stats["count"] = self.storage.collection(entry).count()
            stats["problem"] = None
        except MissingCollectionError as exc:
            stats["count"] = 0
            stats["problem"] = str(exc)
        if stats["pending"] and stats["problem"] is None:
            stats["problem"] = (f"{stats['pending']} documents have no up-to-date vector (an interrupted write); "
                                "the next write, or `inbedder-index build` with this instruction, finishes it")
        return stats

    def stats(self) -> dict[str, Any]:
        """What is stored: documents, backend, model and each collection, with any unfinished work."""
        model = self.manifest.model
        return {
            "path": str(self.path),
            "index_id": self.manifest.index_id,
            "documents": len(self.corpus),
            "backend": self.manifest.backend,
            "qdrant_url": self.location.url,
            "hnsw": self.hnsw,
            "model": None if model is None else model.to_json(),
            "collections": [self._collection_stats(entry) for entry in self.manifest.collections.values()],
        }
