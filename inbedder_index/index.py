"""``InstructionIndex``: one corpus, one vector collection per instruction.

Layout under ``path``::

    corpus.sqlite      documents (id, text, metadata), the manifest, per-collection state
    lock               held (flock) by the one writer; the kernel frees it if the process dies
    faiss/<name>/      one FAISS collection per instruction      (backend="faiss")
    qdrant-edge/       Qdrant's engine, embedded                  (backend="qdrant", no url)

Every change first commits to the corpus, then brings each collection in step (``sync.py``).
A process killed at any point leaves an index that opens, and the next write finishes the
work it left: every write, and ``stats()``, first looks for documents whose vectors are
missing or stale. Everything a call could refuse is checked before its first write.

InBedder is symmetric: a query is embedded under the collection's instruction exactly like a
document, so "find texts whose answer to *this question* is like this text's" is the search.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import VectorBackend, validate_filter, validate_ids
from .corpus import CORPUS_FILENAME, Corpus, Document
from .encoder import InBedder
from .errors import InBedderError, IncompleteIndexError, IndexClosedError, IndexLockedError
from .manifest import BACKENDS, MANIFEST_KEY, Manifest, ManifestError
from .models import DEFAULT_MODEL
from .safepath import inside, open_regular
from .storage import MissingCollectionError, Storage
from .sync import Sync
from .threads import set_threads

logger = logging.getLogger(__name__)

LOCK_FILENAME = "lock"


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None


DocumentLike = Document | Mapping[str, Any] | tuple[str, str]


def as_document(item: DocumentLike, position: int) -> Document:
    """A ``Document`` from a Document, a ``{"id", "text", "metadata"}`` mapping or an ``(id, text)`` pair."""
    if isinstance(item, Document):
        return item
    if isinstance(item, Mapping):
        missing = [key for key in ("id", "text") if key not in item]
        if missing:
            raise ValueError(f"document {position} has no {' or '.join(missing)!r} field")
        return Document(item["id"], item["text"], dict(item.get("metadata") or {}))
    if isinstance(item, tuple) and len(item) == 2:
        return Document(item[0], item[1])
    raise TypeError(f"document {position} is a {type(item).__name__}; give a Document, a mapping or an (id, text) pair")


def _document_list(docs: Iterable[DocumentLike]) -> Iterable[DocumentLike]:
    if isinstance(docs, (str, bytes, Mapping, Document)):
        raise TypeError(f"give a list of documents, not a single {type(docs).__name__}")
    return docs


def _index_path(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"give the index folder's path, not {path!r} (an empty path would turn the current "
                         "folder into an index)")
    resolved = Path(path).expanduser()
    if resolved.exists() and not resolved.is_dir():
        raise NotADirectoryError(f"{resolved} exists and is not a folder; an index is a folder")
    return resolved


def _check_encoder_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Settings checked at open, so a bad one is refused before anything is written."""
    for key in ("max_length", "batch_size"):
        value = kwargs.get(key)
        minimum = 8 if key == "max_length" else 1
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


class InstructionIndex:
    """A corpus searchable under many instructions; open it with ``InstructionIndex.open``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("use InstructionIndex.open(path, ...) to open or create an index")

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        model: str | InBedder | None = None,
        backend: str | None = None,
        qdrant_url: str | None = None,
        qdrant_api_key: str | None = None,
        hnsw: bool = False,
        read_only: bool = False,
        legacy_qdrant: bool = False,
        threads: int | None = None,
        exact: bool = False,
        **encoder_kwargs: Any,
    ) -> InstructionIndex:
        """Open the index at ``path``, creating it when absent.

        ``model`` defaults to the model the index was built with (or the default model for a
        new index) and is loaded only when something needs vectors. ``backend`` is "faiss"
        (embedded, the default) or "qdrant": Qdrant's engine embedded under ``path``, or the
        server at ``qdrant_url`` (recorded in the manifest; the API key never is).
        ``hnsw=True`` makes new FAISS collections approximate (HNSW) for large corpora.
        ``read_only=True`` opens without the writer lock and never writes. ``legacy_qdrant``
        opens an index kept in qdrant-client's old local storage, which unpickles its data:
        only for folders you trust, to migrate them. ``threads`` sets the CPU threads of the
        model and FAISS for the process (``inbedder_index.threads``). On a Qdrant server, search
        uses the server's HNSW (``hnsw_ef`` 128) unless ``exact=True`` asks for a full scan.
        """
        set_threads(threads)
        self = cls.__new__(cls)
        self._setup(_index_path(path), model, backend, qdrant_url, qdrant_api_key, hnsw, read_only,
                    legacy_qdrant, exact, encoder_kwargs)
        return self

    def _setup(self, path: Path, model: str | InBedder | None, backend: str | None, qdrant_url: str | None,
               qdrant_api_key: str | None, hnsw: bool, read_only: bool, legacy_qdrant: bool, exact: bool,
               encoder_kwargs: dict[str, Any]) -> None:
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if qdrant_url and backend == "faiss":
            raise ValueError("qdrant_url is given but the backend is 'faiss'; pass backend='qdrant'")
        _check_encoder_kwargs(encoder_kwargs)
        if read_only and not (path / CORPUS_FILENAME).exists():
            raise FileNotFoundError(f"no index at {path} to open read-only")
        self.path = path
        self.read_only = read_only
        self._lock_fd: int | None = None
        self._corpus_handle: Corpus | None = None
        self._storage: Storage | None = None
        self._encoder_kwargs = encoder_kwargs
        created_folder = not path.exists()
        created_corpus = not (path / CORPUS_FILENAME).exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not read_only:
                self._lock()
            self._corpus_handle = Corpus(inside(path, CORPUS_FILENAME), read_only=read_only)
            corpus_file = self._corpus_handle.path
            manifest = Manifest.parse(self._corpus_handle.get_meta(MANIFEST_KEY), corpus_file)
            changed = manifest is None
            if manifest is None:
                if read_only:
                    raise ManifestError(f"{corpus_file} has no index manifest; it is not an index")
                chosen = backend or ("qdrant" if qdrant_url else "faiss")
                manifest = Manifest.new(chosen, qdrant_url, hnsw, corpus_file)
            elif not read_only and manifest.upgrade():
                if manifest.backend == "qdrant":
                    manifest.data["qdrant_url"] = qdrant_url
                changed = True
            manifest.check_backend(path, backend, qdrant_url)
            self._manifest = manifest
            self.backend = manifest.backend
            self.hnsw = hnsw or bool(manifest.data.get("hnsw"))
            self._qdrant_url = manifest.data.get("qdrant_url") or qdrant_url
            self._storage = Storage(path, self.backend, index_id=manifest.index_id, qdrant_url=self._qdrant_url,
                                    qdrant_api_key=qdrant_api_key, qdrant_storage=manifest.data.get("qdrant_storage"),
                                    read_only=read_only, legacy_qdrant=legacy_qdrant, exact=exact)
            self._sync = Sync(self._corpus_handle, self._storage, manifest, self._save_manifest)
            self._encoder = InBedder(model, **encoder_kwargs) if isinstance(model, str) else model
            if self._encoder is not None:
                self._check_model(self._encoder)
            if not read_only:
                self._finish_drops()
                if changed:
                    self._save_manifest()
        except BaseException:
            self._abandon(created_folder, created_corpus)
            raise

    def _abandon(self, created_folder: bool, created_corpus: bool) -> None:
        """A failed open leaves nothing behind that it created (a later open starts afresh)."""
        try:
            self.close()
        except InBedderError:
            pass
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

    def _lock(self) -> None:
        lock_path = self.path / LOCK_FILENAME
        fd = open_regular(lock_path, os.O_RDWR | os.O_CREAT)
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

    def _check_model(self, encoder: InBedder) -> None:
        self._manifest.check_model(self.path, encoder.model_id, encoder.fingerprint)
        if self._manifest.data["model"] is None and not self.read_only:
            self._manifest.data["model"] = {"id": encoder.model_id, "fingerprint": encoder.fingerprint,
                                            "dim": encoder.dim, "max_length": encoder.max_length}
            self._save_manifest()

    @property
    def encoder(self) -> InBedder:
        """The model, loaded on first use (listing and inspecting an index never loads it)."""
        self._open_corpus()
        if self._encoder is None:
            recorded = self._manifest.data["model"]
            name = recorded["id"] if recorded else DEFAULT_MODEL
            kwargs = dict(self._encoder_kwargs)
            if recorded:
                kwargs.setdefault("max_length", recorded.get("max_length", 512))
            try:
                encoder = InBedder(name, **kwargs)
            except OSError as error:
                raise InBedderError(f"{self.path} was built with model {name!r}, which cannot be loaded here "
                                    f"({error}); open the index with model=<the same model>") from error
            self._check_model(encoder)
            self._encoder = encoder
        return self._encoder

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Make everything durable and release the writer lock (closing twice is harmless)."""
        try:
            if self._storage is not None:
                self._storage.close()
        finally:
            self._storage = None
            if self._corpus_handle is not None:
                self._corpus_handle.close()
                self._corpus_handle = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> InstructionIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._open_corpus())

    def _open_corpus(self) -> Corpus:
        if self._corpus_handle is None:
            raise IndexClosedError(f"the index at {self.path} is closed; open it again with InstructionIndex.open")
        return self._corpus_handle

    @property
    def _corpus(self) -> Corpus:
        return self._open_corpus()

    # ----------------------------------------------------------------- manifest

    def _save_manifest(self) -> None:
        self._corpus.set_meta(MANIFEST_KEY, self._manifest.dumps())

    def _writable(self) -> None:
        self._open_corpus()
        if self.read_only:
            raise InBedderError(f"{self.path} is open read-only; open it without read_only=True to change it")

    def _begin_write(self) -> None:
        """Refuse a closed or read-only index, then finish what an interrupted write left."""
        self._writable()
        unfinished = self._sync.unfinished()
        if unfinished:
            logger.warning("%s: finishing an interrupted write (%s)", self.path,
                           ", ".join(repr(i) for i in unfinished))
            self._sync.run(self.encoder, unfinished, None, answers=self._answers(unfinished))

    def _finish_drops(self) -> None:
        """Delete the collections of an interrupted ``drop_instruction`` (already out of the manifest)."""
        dim = (self._manifest.data.get("model") or {}).get("dim", 1)  # every collection holds the model's vectors
        for name in list(self._manifest.dropping):
            self._storage.drop_name(name, dim=dim)
            self._manifest.dropping.remove(name)
            self._save_manifest()

    def instructions(self) -> list[str]:
        """The instructions this index has a collection for, oldest first."""
        self._open_corpus()
        return self._manifest.instructions()

    def _entry(self, instruction: str) -> dict[str, Any]:
        self._open_corpus()
        return self._manifest.entry(instruction)

    def _backend(self, instruction: str) -> VectorBackend:
        """A collection for reading: never created by a read, an error naming it when it is missing."""
        entry = self._entry(instruction)  # first: it refuses a closed index
        return self._storage.collection(entry)

    def _answers(self, instructions: Sequence[str]) -> bool:
        return any(self._entry(i).get("answers", True) for i in instructions)

    # ----------------------------------------------------------------- documents

    def _prepare_documents(self, docs: Iterable[DocumentLike]) -> list[Document]:
        """Documents checked, and everything their encoding needs opened, before any write."""
        documents = [as_document(d, i) for i, d in enumerate(_document_list(docs))]
        instructions = self.instructions()
        if instructions and documents:
            self.encoder  # noqa: B018 - a model that cannot load (or a bad setting) fails before the corpus changes
            for instruction in instructions:
                self._sync.collection(instruction)  # a corrupt collection fails now, not after the corpus write
        return documents

    def add(self, docs: Iterable[DocumentLike]) -> list[str]:
        """Add new documents; returns their ids.

        An id stored with other content is an error (use ``upsert``); one stored with the same
        text and metadata is skipped, so rerunning an interrupted ``add`` completes it.
        """
        self._begin_write()
        documents = [as_document(d, i) for i, d in enumerate(_document_list(docs))]
        stored = {d.id: d for d in self._corpus.get([d.id for d in documents])}
        self._corpus.refuse_existing([d.id for d in documents if d.id in stored and d != stored[d.id]])
        new = [d for d in documents if d.id not in stored]
        self._prepare_documents(new)
        self._corpus.add(new)
        self._sync_all([d.id for d in new])
        return [d.id for d in new]

    def upsert(self, docs: Iterable[DocumentLike]) -> list[str]:
        """Insert or replace documents; only new or changed texts are encoded. Returns the ids encoded."""
        self._begin_write()
        documents = self._prepare_documents(docs)
        changed = self._corpus.upsert(documents)
        encoded = set(changed)  # re-encoded documents get fresh payloads with their vectors
        self._refresh_payloads([d for d in documents if d.id not in encoded])
        self._sync_all(changed)
        return changed

    def store_documents(self, docs: Iterable[DocumentLike]) -> list[str]:
        """Insert or replace documents without encoding them; returns the ids whose text is new or changed.

        Their vectors stay missing or stale (a later write, or a build such as
        ``inbedder_index.distributed.build``, encodes them); metadata-only changes are applied
        to the stored payloads at once.
        """
        self._writable()
        documents = self._prepare_documents(docs)
        changed = self._corpus.upsert(documents)
        encoded = set(changed)
        self._refresh_payloads([d for d in documents if d.id not in encoded])
        return changed

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete documents from the corpus and every collection. Returns the ids that existed."""
        wanted = validate_ids(ids)  # a bare string is refused, not read as one id per character
        self._begin_write()
        backends = [self._sync.collection(instruction) for instruction in self.instructions()]
        existed = self._corpus.delete(wanted)
        for instruction, backend in zip(self.instructions(), backends):
            backend.delete(existed)
            backend.flush()
            entry = self._entry(instruction)
            entry["count"] = backend.count()
        if existed:
            self._save_manifest()
        return existed

    def get(self, ids: Sequence[str]) -> list[Document]:
        """The stored documents among ``ids``, in the given order."""
        return self._corpus.get(ids)

    def ids(self, filter: Mapping[str, Any] | None = None) -> list[str]:
        """Every document id (insertion order), or those whose metadata match ``filter``."""
        if not filter:
            return self._corpus.ids()
        validate_filter(filter)
        matching = self._corpus.ids_matching(filter)
        return [doc_id for doc_id in self._corpus.ids() if doc_id in matching]

    def get_vectors(self, ids: Sequence[str], instruction: str) -> dict[str, np.ndarray]:
        """Stored vectors of ``ids`` under ``instruction`` (ids without one are left out)."""
        return self._backend(instruction).get_vectors(list(ids))

    def _refresh_payloads(self, documents: Sequence[Document]) -> None:
        """Rewrite the stored metadata of documents whose text (so vector) did not change."""
        if not documents:
            return
        for instruction in self.instructions():
            backend = self._sync.collection(instruction)
            if not backend.filters_payload:  # metadata is filtered through the corpus: nothing to refresh
                continue
            vectors = backend.get_vectors([d.id for d in documents])
            present = [d for d in documents if d.id in vectors]
            if present:
                backend.upsert([d.id for d in present], np.stack([vectors[d.id] for d in present]),
                               [d.metadata for d in present])

    def _sync_all(self, ids: Sequence[str]) -> None:
        instructions = self.instructions()
        if instructions and ids:
            self._sync.run(self.encoder, instructions, ids, answers=self._answers(instructions))

    # ----------------------------------------------------------------- instructions

    def add_instruction(self, instruction: str, *, answers: bool = True, show_progress_bar: bool | None = None,
                        batch_size: int = 256) -> int:
        """Encode the whole corpus under ``instruction`` into its own collection.

        Streams the corpus in batches with a progress bar; calling it again for an instruction
        that exists (or whose build was interrupted) encodes only what is missing or stale.
        Returns the number of documents encoded by this call.
        """
        return self.add_instructions([instruction], answers=answers, show_progress_bar=show_progress_bar,
                                     batch_size=batch_size)

    def add_instructions(self, instructions: Sequence[str], *, answers: bool = True,
                         show_progress_bar: bool | None = None, batch_size: int = 256) -> int:
        """``add_instruction`` for several instructions in one pass over the corpus."""
        _check_batch_size(batch_size)
        wanted = self.register_instructions(instructions, answers=answers)
        return self._sync.run(self.encoder, wanted, None, answers=answers, show_progress_bar=show_progress_bar,
                              batch_size=batch_size)

    def register_instructions(self, instructions: Sequence[str], *, answers: bool = True) -> list[str]:
        """Check the instructions and create the collections of new ones, encoding nothing yet.

        For builds that encode elsewhere (``inbedder_index.distributed``); returns the
        instructions without duplicates, in order. ``add_instructions`` is this plus the encoding.
        """
        self._writable()
        if isinstance(instructions, str):
            instructions = [instructions]
        wanted = list(dict.fromkeys(instructions))
        if not wanted:
            raise ValueError("give at least one instruction")
        for instruction in wanted:
            if not isinstance(instruction, str) or not instruction.strip():
                raise ValueError(f"instruction {instruction!r} is empty or not a string")
        encoder = self.encoder
        prompts = getattr(encoder, "prompts", None)  # adapters over other embedders have no prompt rule
        for instruction in wanted:
            if prompts is not None:
                prompts.input_budget(instruction)  # too long for max_length: refused before it is registered
        new = [i for i in wanted if i not in self._manifest.collections]
        for instruction in new:
            self._manifest.add_entry(self.path, instruction, encoder.fingerprint, encoder.dim, self.hnsw, answers)
        try:
            for instruction in new:
                self._sync.collection(instruction)
        except BaseException:
            for instruction in new:
                del self._manifest.collections[instruction]
            raise
        self._save_manifest()
        return wanted

    def sync_state(self) -> Sync:
        """The corpus, collections and manifest as a build needs them, for a build that encodes
        elsewhere (``inbedder_index.distributed``); refuses a closed or read-only index."""
        self._writable()
        return self._sync

    def ensure_instruction(self, instruction: str, *, answers: bool = True) -> str:
        """Build ``instruction``'s collection if it is new (a read-only index only checks it exists)."""
        if instruction not in self._manifest.collections:
            if self.read_only:
                self._entry(instruction)  # raises UnknownInstructionError listing the known ones
            self.add_instruction(instruction, answers=answers)
        return instruction

    def drop_instruction(self, instruction: str) -> None:
        """Delete an instruction's collection (the corpus and other collections stay).

        The manifest forgets it first (and remembers the name until the data is gone), so a
        drop cut short never leaves an index that counts a collection it no longer has.
        """
        self._writable()
        entry = self._entry(instruction)
        with self._corpus.transaction():
            del self._manifest.collections[instruction]
            self._manifest.dropping.append(entry["name"])
            self._corpus.forget_collection(entry["name"])
            self._save_manifest()
        self._storage.drop(entry)
        self._manifest.dropping.remove(entry["name"])
        self._save_manifest()

    # ----------------------------------------------------------------- search

    def search(self, query: str, instruction: str, k: int = 10, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` documents nearest to ``query`` when both are embedded under ``instruction``."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, not {type(query).__name__}")
        self._backend(instruction)  # an unknown or missing collection fails before the model loads
        vector = self.encoder.encode([query], instruction)[0]
        return self.search_by_vector(vector, instruction, k=k, filter=filter)

    def search_by_vector(self, vector: Sequence[float] | np.ndarray, instruction: str, k: int = 10,
                         filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """Like ``search`` for a vector you already have (e.g. from ``encoder.encode``)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        validate_filter(filter)
        backend = self._backend(instruction)
        if backend.count() == 0 and len(self._corpus):
            raise IncompleteIndexError(
                f"the collection of {instruction!r} holds no vectors, though the index has {len(self._corpus)} "
                f"documents; finish it with: inbedder-index build {self.path} --instruction {instruction!r}"
            )
        candidates = None
        if filter and not backend.filters_payload:
            candidates = self._corpus.ids_matching(filter)
            if not candidates:
                return []
        found = backend.search(np.asarray(vector, dtype=np.float32), k, filter=filter if backend.filters_payload else None,
                               candidate_ids=candidates)
        return self._hits(instruction, found)

    def _hits(self, instruction: str, found: Sequence[tuple[str, float]]) -> list[Hit]:
        ids = [doc_id for doc_id, _ in found]
        docs = {d.id: d for d in self._corpus.get(ids)}
        answers = self._corpus.get_answers(self._entry(instruction)["name"], ids)
        return [
            Hit(doc_id, float(score), docs[doc_id].text, dict(docs[doc_id].metadata), answers.get(doc_id))
            for doc_id, score in found
            if doc_id in docs
        ]

    def vectors(self, instruction: str, batch_size: int = 1024) -> Iterator[tuple[list[Document], np.ndarray]]:
        """Every document with its vector under ``instruction``, in corpus order (for clustering)."""
        backend = self._backend(instruction)
        for batch in self._corpus.iter_batches(batch_size):
            stored = backend.get_vectors([d.id for d in batch])
            present = [d for d in batch if d.id in stored]
            if present:
                yield present, np.stack([stored[d.id] for d in present])

    def answers(self, instruction: str, ids: Sequence[str]) -> dict[str, str]:
        """The model's stored short answers for ``ids`` under ``instruction``."""
        return self._corpus.get_answers(self._entry(instruction)["name"], ids)

    # ----------------------------------------------------------------- inspection

    def _collection_stats(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A manifest entry with what is really stored: the backend's count and the pending work."""
        stats = dict(entry)
        stats["pending"] = self._corpus.pending_count(entry["name"])
        try:
            stats["count"] = self._storage.collection(entry).count()
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
        return {
            "path": str(self.path),
            "index_id": self._manifest.index_id,
            "documents": len(self._corpus),
            "backend": self.backend,
            "qdrant_url": self._qdrant_url,
            "hnsw": self.hnsw,
            "model": self._manifest.data["model"],
            "collections": [self._collection_stats(entry) for entry in self._manifest.collections.values()],
        }
