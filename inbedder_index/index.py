"""``InstructionIndex``: one corpus, one vector collection per instruction.

Layout under ``path``::

    corpus.sqlite      documents (id, text, metadata), the manifest, per-collection state
    lock               held (flock) by the one writer; the kernel frees it if the process dies
    faiss/<name>/      one FAISS collection per instruction      (backend="faiss")
    qdrant/            Qdrant's embedded storage                  (backend="qdrant", no url)

The corpus records, per collection, the text hash each stored vector was computed from.
Every change first commits to the corpus, then brings each collection in step by encoding
exactly the documents whose recorded hash is missing or stale, and records them only after
the backend made them durable. A process killed at any point therefore leaves an index that
opens, and the next write (or ``add_instruction`` of the same instruction) finishes the work:
vectors are keyed by document id, so nothing is lost and nothing is duplicated.

InBedder is symmetric: a query is embedded under the collection's instruction exactly like a
document, so "find texts whose answer to *this question* is like this text's" is the search.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .backends import make_qdrant_client, open_backend
from .backends.base import VectorBackend, validate_filter
from .corpus import Corpus, Document
from .encoder import InBedder
from .errors import IndexLockedError, InBedderError, ModelMismatchError, UnknownInstructionError
from .models import DEFAULT_MODEL

logger = logging.getLogger(__name__)

_MANIFEST_KEY = "manifest"
_MANIFEST_VERSION = 1
_BACKENDS = ("faiss", "qdrant")
_CHECKPOINT_SECONDS = 30.0  # how often a long build makes its vectors durable ...
_CHECKPOINT_DOCS = 8192  # ... or after this many vectors, which bounds what waits in memory


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def collection_name(prefix: str, fingerprint: str, instruction: str) -> str:
    """Deterministic from the index's prefix, the model fingerprint and the instruction."""
    digest = hashlib.sha256(f"{fingerprint}\0{instruction}".encode()).hexdigest()[:16]
    return f"{prefix}_{digest}"


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
        **encoder_kwargs: Any,
    ) -> InstructionIndex:
        """Open the index at ``path``, creating it when absent.

        ``model`` defaults to the model the index was built with (or the default model for a
        new index) and is loaded only when something needs vectors. ``backend`` is "faiss"
        (embedded, the default) or "qdrant": embedded under ``path``, or the server at
        ``qdrant_url``. ``hnsw=True`` makes new collections approximate (HNSW) for large
        corpora. ``read_only=True`` opens without the writer lock (FAISS only: Qdrant's
        embedded mode admits one process).
        """
        self = cls.__new__(cls)
        self._setup(Path(path).expanduser(), model, backend, qdrant_url, qdrant_api_key, hnsw, read_only,
                    encoder_kwargs)
        return self

    def _setup(
        self,
        path: Path,
        model: str | InBedder | None,
        backend: str | None,
        qdrant_url: str | None,
        qdrant_api_key: str | None,
        hnsw: bool,
        read_only: bool,
        encoder_kwargs: dict[str, Any],
    ) -> None:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} exists and is not a folder; an index is a folder")
        if read_only and not (path / "corpus.sqlite").exists():
            raise FileNotFoundError(f"no index at {path} to open read-only")
        self.path = path
        self.read_only = read_only
        self._lock_handle = None
        self._backends: dict[str, VectorBackend] = {}
        self._qdrant = None
        self._qdrant_url = qdrant_url
        path.mkdir(parents=True, exist_ok=True)
        if not read_only:
            self._lock()
        try:
            self._corpus = Corpus(path / "corpus.sqlite")
            stored = self._corpus.get_meta(_MANIFEST_KEY)
            self._manifest: dict[str, Any] = json.loads(stored) if stored else {}
            self._check_options(backend, qdrant_url, hnsw)
            self._encoder_kwargs = encoder_kwargs
            self._encoder = InBedder(model, **encoder_kwargs) if isinstance(model, str) else model
            if self._encoder is not None:
                self._check_model(self._encoder)
            if self.backend == "qdrant":
                self._qdrant = make_qdrant_client(
                    path=None if qdrant_url else path / "qdrant", url=qdrant_url, api_key=qdrant_api_key
                )
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        handle = open(self.path / "lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise IndexLockedError(
                f"{self.path} is open for writing by {holder}; close it there first, "
                "or open this one with read_only=True to search"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock_handle = handle

    def _check_options(self, backend: str | None, qdrant_url: str | None, hnsw: bool) -> None:
        recorded = self._manifest.get("backend")
        chosen = backend or recorded or ("qdrant" if qdrant_url else "faiss")
        if chosen not in _BACKENDS:
            raise ValueError(f"unknown backend {chosen!r}; use one of {', '.join(_BACKENDS)}")
        if qdrant_url and chosen != "qdrant":
            raise ValueError("qdrant_url is given but the backend is 'faiss'; pass backend='qdrant'")
        if recorded and recorded != chosen:
            raise ValueError(f"{self.path} was built with backend {recorded!r}, not {chosen!r}")
        self.backend = chosen
        self.hnsw = hnsw or bool(self._manifest.get("hnsw"))
        if not self._manifest:
            self._manifest = {
                "version": _MANIFEST_VERSION,
                "backend": chosen,
                "hnsw": hnsw,
                "model": None,
                "collections": {},
                "created": _now(),
            }
        elif self._manifest.get("version") != _MANIFEST_VERSION:
            raise InBedderError(f"{self.path} has manifest version {self._manifest.get('version')}; "
                                f"this library reads version {_MANIFEST_VERSION}")

    def _check_model(self, encoder: InBedder) -> None:
        recorded = self._manifest["model"]
        if recorded is None:
            if not self.read_only:
                self._manifest["model"] = {"id": encoder.model_id, "fingerprint": encoder.fingerprint,
                                           "dim": encoder.dim, "max_length": encoder.max_length}
                self._save_manifest()
            return
        if recorded["fingerprint"] != encoder.fingerprint:
            raise ModelMismatchError(
                f"{self.path} was built with model {recorded['id']!r} (fingerprint {recorded['fingerprint']}), "
                f"but it was opened with {encoder.model_id!r} (fingerprint {encoder.fingerprint}); "
                f"open it with model={recorded['id']!r}, or build a new index for the new model"
            )

    @property
    def encoder(self) -> InBedder:
        """The model, loaded on first use (listing and inspecting an index never loads it)."""
        if self._encoder is None:
            recorded = self._manifest["model"]
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
        """Make everything durable and release the writer lock."""
        for backend in getattr(self, "_backends", {}).values():
            backend.close()
        self._backends = {}
        if getattr(self, "_qdrant", None) is not None:
            self._qdrant.close()
            self._qdrant = None
        if getattr(self, "_corpus", None) is not None:
            self._corpus.close()
            self._corpus = None  # type: ignore[assignment]
        if getattr(self, "_lock_handle", None) is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self) -> InstructionIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._corpus)

    # ----------------------------------------------------------------- manifest

    def _save_manifest(self) -> None:
        self._corpus.set_meta(_MANIFEST_KEY, json.dumps(self._manifest, sort_keys=True))

    def _writable(self) -> None:
        if self.read_only:
            raise InBedderError(f"{self.path} is open read-only; open it without read_only=True to change it")

    def instructions(self) -> list[str]:
        """The instructions this index has a collection for, oldest first."""
        return list(self._manifest["collections"])

    def _entry(self, instruction: str) -> dict[str, Any]:
        entry = self._manifest["collections"].get(instruction)
        if entry is None:
            known = "; ".join(repr(i) for i in self.instructions()) or "none yet"
            raise UnknownInstructionError(
                f"no collection for instruction {instruction!r}; known instructions: {known}. "
                "Add it with add_instruction() (CLI: inbedder-index build --instruction ...)"
            )
        return entry

    def _backend(self, instruction: str) -> VectorBackend:
        entry = self._entry(instruction)
        name = entry["name"]
        if name not in self._backends:
            self._backends[name] = open_backend(
                self.backend, directory=self.path / "faiss", name=name, dim=entry["dim"], create=True,
                hnsw=entry.get("hnsw", False), qdrant_client=self._qdrant,
            )
        return self._backends[name]

    def _prefix(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", self.path.resolve().name).strip("-") or "index"
        return f"ib_{stem[:40]}"

    # ----------------------------------------------------------------- documents

    def add(self, docs: Iterable[DocumentLike]) -> list[str]:
        """Add new documents (an id that exists is an error: use ``upsert``). Returns their ids."""
        self._writable()
        documents = [as_document(d, i) for i, d in enumerate(docs)]
        self._corpus.add(documents)
        self._sync_all([d.id for d in documents])
        return [d.id for d in documents]

    def upsert(self, docs: Iterable[DocumentLike]) -> list[str]:
        """Insert or replace documents; only new or changed texts are encoded. Returns the ids encoded."""
        self._writable()
        documents = [as_document(d, i) for i, d in enumerate(docs)]
        changed = self._corpus.upsert(documents)
        encoded = set(changed)  # re-encoded documents get fresh payloads with their vectors
        self._refresh_payloads([d for d in documents if d.id not in encoded])
        self._sync_all(changed)
        return changed

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete documents from the corpus and every collection. Returns the ids that existed."""
        self._writable()
        wanted = list(ids)
        for position, doc_id in enumerate(wanted):
            if not isinstance(doc_id, str):
                raise TypeError(f"ids[{position}] is {type(doc_id).__name__}, not str")
        existed = self._corpus.delete(wanted)
        for instruction in self.instructions():
            backend = self._backend(instruction)
            backend.delete(existed)
            backend.flush()
            self._entry(instruction)["count"] = backend.count()
            self._entry(instruction)["updated"] = _now()
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
            backend = self._backend(instruction)
            if not backend.filters_payload:  # metadata is filtered through the corpus: nothing to refresh
                continue
            vectors = backend.get_vectors([d.id for d in documents])
            present = [d for d in documents if d.id in vectors]
            if present:
                backend.upsert([d.id for d in present], np.stack([vectors[d.id] for d in present]),
                               [d.metadata for d in present])

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
        for instruction in wanted:
            if instruction not in self._manifest["collections"]:
                self._manifest["collections"][instruction] = {
                    "instruction": instruction,
                    "name": collection_name(self._prefix(), encoder.fingerprint, instruction),
                    "fingerprint": encoder.fingerprint,
                    "dim": encoder.dim,
                    "hnsw": self.hnsw,
                    "count": 0,
                    "answers": answers,
                    "created": _now(),
                    "updated": _now(),
                }
        self._save_manifest()
        return self._sync(wanted, None, answers=answers, show_progress_bar=show_progress_bar, batch_size=batch_size)

    def ensure_instruction(self, instruction: str, *, answers: bool = True) -> str:
        """Build ``instruction``'s collection if it is new (a read-only index only checks it exists)."""
        if instruction not in self._manifest["collections"]:
            if self.read_only:
                self._entry(instruction)  # raises UnknownInstructionError listing the known ones
            self.add_instruction(instruction, answers=answers)
        return instruction

    def drop_instruction(self, instruction: str) -> None:
        """Delete an instruction's collection (the corpus and other collections stay)."""
        self._writable()
        entry = self._entry(instruction)
        self._backend(instruction).drop()
        self._backends.pop(entry["name"], None)
        self._corpus.forget_collection(entry["name"])
        del self._manifest["collections"][instruction]
        self._save_manifest()

    def _sync_all(self, ids: Sequence[str]) -> None:
        instructions = self.instructions()
        if instructions:
            answers = any(self._entry(i).get("answers", True) for i in instructions)
            self._sync(instructions, ids, answers=answers, show_progress_bar=None, batch_size=256)

    def _sync(self, instructions: Sequence[str], ids: Sequence[str] | None, *, answers: bool,
              show_progress_bar: bool | None, batch_size: int) -> int:
        """Encode what each collection lacks (or holds stale), checkpointing as it goes.

        ``ids`` narrows the work to documents just changed; ``None`` checks the whole corpus
        (how an interrupted build resumes).
        """
        names = {instruction: self._entry(instruction)["name"] for instruction in instructions}
        if ids is None:
            self._drop_orphans(instructions)
        total = len(self._corpus) if ids is None else len(ids)
        if total == 0:
            return 0
        encoder = self.encoder
        show = total >= 256 if show_progress_bar is None else show_progress_bar
        last_checkpoint = time.monotonic()
        pending: dict[str, dict[str, str]] = {instruction: {} for instruction in instructions}
        encoded = 0
        # Streamed: staleness is checked batch by batch, so memory holds one batch and what awaits
        # the next checkpoint, never the whole corpus.
        with tqdm(total=total, desc="indexing", unit="doc", disable=not show) as bar:
            for batch in self._corpus.iter_batches(batch_size, ids=ids):
                batch_ids = [d.id for d in batch]
                stale = {i: set(self._corpus.stale_ids(names[i], batch_ids)) for i in instructions}
                needing = [i for i in instructions if stale[i]]
                todo = [d for d in batch if any(d.id in stale[i] for i in needing)]
                if todo:
                    results = encoder.encode([d.text for d in todo], needing, return_answers=answers,
                                             show_progress_bar=False)
                    encoded += len(todo)
                for instruction in needing:
                    vectors, batch_answers = results[instruction] if answers else (results[instruction], None)
                    rows = [row for row, d in enumerate(todo) if d.id in stale[instruction]]
                    chosen = [todo[row] for row in rows]
                    self._backend(instruction).upsert([d.id for d in chosen], vectors[rows],
                                                      [d.metadata for d in chosen])
                    pending[instruction].update({d.id: d.text_hash for d in chosen})
                    if batch_answers is not None:
                        self._corpus.set_answers(names[instruction], {d.id: batch_answers[r] for r, d in zip(rows, chosen)})
                bar.update(len(batch))
                waiting = sum(len(done) for done in pending.values())
                if waiting >= _CHECKPOINT_DOCS or time.monotonic() - last_checkpoint > _CHECKPOINT_SECONDS:
                    self._checkpoint(pending, names)
                    last_checkpoint = time.monotonic()
        self._checkpoint(pending, names)
        return encoded

    def _drop_orphans(self, instructions: Sequence[str]) -> None:
        """Remove vectors of documents deleted from the corpus by a write that was cut short."""
        corpus_ids = set(self._corpus.ids())
        for instruction in instructions:
            backend = self._backend(instruction)
            orphans = sorted(backend.ids() - corpus_ids)
            if orphans:
                logger.info("removing %d vectors of deleted documents from %r", len(orphans), instruction)
                backend.delete(orphans)
                backend.flush()

    def _checkpoint(self, pending: dict[str, dict[str, str]], names: Mapping[str, str]) -> None:
        """Make vectors durable, then record them: a crash between the two only repeats work."""
        for instruction, done in pending.items():
            if not done:
                continue
            backend = self._backend(instruction)
            backend.flush()
            self._corpus.mark_embedded(names[instruction], done)
            entry = self._entry(instruction)
            entry["count"] = backend.count()
            entry["updated"] = _now()
            done.clear()
        self._save_manifest()

    # ----------------------------------------------------------------- search

    def search(self, query: str, instruction: str, k: int = 10, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` documents nearest to ``query`` when both are embedded under ``instruction``."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, not {type(query).__name__}")
        self._entry(instruction)
        vector = self.encoder.encode([query], instruction)[0]
        return self.search_by_vector(vector, instruction, k=k, filter=filter)

    def search_by_vector(self, vector: Sequence[float] | np.ndarray, instruction: str, k: int = 10,
                         filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """Like ``search`` for a vector you already have (e.g. from ``encoder.encode``)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        validate_filter(filter)
        backend = self._backend(instruction)
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

    def stats(self) -> dict[str, Any]:
        """What is stored: documents, backend, model and each collection's manifest entry."""
        return {
            "path": str(self.path),
            "documents": len(self._corpus),
            "backend": self.backend,
            "qdrant_url": self._qdrant_url,
            "hnsw": self.hnsw,
            "model": self._manifest["model"],
            "collections": [dict(entry) for entry in self._manifest["collections"].values()],
        }
