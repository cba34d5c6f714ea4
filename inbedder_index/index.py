"""``InstructionIndex``: one corpus, one vector collection per instruction.

Layout under ``path``::

    corpus.sqlite      documents (id, text, metadata), the manifest, per-collection state
    lock               held (flock) by the one writer; the kernel frees it if the process dies
    faiss/<name>/      one FAISS collection per instruction      (backend="faiss")
    qdrant-edge/       Qdrant's engine, embedded                  (backend="qdrant", no url)

The class is a facade: ``state.IndexState`` owns the lock, corpus, manifest and collections
(where they live is resolved once, ``storage.Location``), ``sync.Sync`` is the one write path
and build loop, and ``search`` answers queries. Every change first commits to the corpus, then
brings each collection in step. A process killed at any point leaves an index that opens, and
the next write finishes the work it left: every write, and ``stats()``, first looks for
documents whose vectors are missing or stale. Everything a call could refuse is checked
before its first write.

InBedder is symmetric: a query is embedded under the collection's instruction exactly like a
document, so "find texts whose answer to *this question* is like this text's" is the search.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import search as _search
from ._util import check_int, validate_ids
from .backends.base import VectorBackend
from .corpus import Corpus, Document, DocumentLike, as_document, as_documents  # noqa: F401 - as_document: public name
from .encoder import InBedder
from .errors import InBedderError, IndexClosedError  # noqa: F401 - IndexClosedError: importable here, as before
from .models import model_for_index
from .search import Hit
from .state import IndexState, index_path
from .storage import OpenOptions
from .sync import LocalEncoding, Sync, unique_instructions
from .threads import set_threads

logger = logging.getLogger(__name__)


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
        folder = index_path(path)
        options = OpenOptions(backend, qdrant_url, qdrant_api_key, hnsw, read_only, legacy_qdrant, exact)
        for key, minimum in (("max_length", 8), ("batch_size", 1)):  # refused before anything is written
            if encoder_kwargs.get(key) is not None:
                check_int(key, encoder_kwargs[key], minimum)
        self = cls.__new__(cls)
        self._setup(folder, model, options, encoder_kwargs)
        return self

    def _setup(self, path: Path, model: str | InBedder | None, options: OpenOptions,
               encoder_kwargs: dict[str, Any]) -> None:
        self._state = state = IndexState(path, options)
        self._sync = Sync(state)
        self._encoder_kwargs = encoder_kwargs
        self.path, self.read_only, self.backend, self.hnsw = path, state.read_only, state.location.backend, state.hnsw
        try:
            recorded = state.manifest.model.id if state.manifest.model else None
            self._encoder = InBedder(model_for_index(model, recorded), **encoder_kwargs) \
                if isinstance(model, str) else model
            if self._encoder is not None:
                self._adopt(self._encoder)
            state.settle()
        except BaseException:
            state.abandon()
            raise

    def _adopt(self, encoder: InBedder) -> None:
        self._state.adopt_model(encoder.model_id, encoder.fingerprint, encoder.dim, encoder.max_length,
                                getattr(encoder, "earlier_fingerprints", None))

    @property
    def encoder(self) -> InBedder:
        """The model, loaded on first use (listing and inspecting an index never loads it)."""
        self._state.corpus  # noqa: B018 - refuses a closed index
        if self._encoder is None:
            recorded = self._state.manifest.model
            name = model_for_index(None, recorded.id if recorded else None)
            kwargs = dict(self._encoder_kwargs)
            if recorded:
                kwargs.setdefault("max_length", recorded.max_length or 512)
            try:
                encoder = InBedder(name, **kwargs)
            except OSError as error:
                raise InBedderError(f"{self.path} was built with model {name!r}, which cannot be loaded here "
                                    f"({error}); open the index with model=<the same model>") from error
            self._adopt(encoder)
            self._encoder = encoder
        return self._encoder

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Make everything durable and release the writer lock (closing twice is harmless)."""
        self._state.close()

    def __enter__(self) -> InstructionIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._corpus)

    @property
    def _corpus(self) -> Corpus:
        return self._state.corpus  # IndexClosedError once closed

    # ----------------------------------------------------------------- state

    def _begin_write(self) -> None:
        """Refuse a closed or read-only index, then finish what an interrupted write left."""
        self._state.writable()
        self._sync.finish_interrupted(self._encoding)

    def _encoding(self, instructions: Sequence[str]) -> LocalEncoding:
        """This process's model, keeping answers when any of the instructions does."""
        return LocalEncoding(self.encoder, self._sync.answers_wanted(instructions))

    def instructions(self) -> list[str]:
        """The instructions this index has a collection for, oldest first."""
        return self._state.instructions()

    def _entry(self, instruction: str) -> dict[str, Any]:
        """An instruction's manifest entry as stored (for inspection)."""
        return self._state.entry(instruction).to_json()

    def _backend(self, instruction: str) -> VectorBackend:
        """A collection for reading: never created by a read, an error naming it when it is missing."""
        return self._state.collection(instruction)

    # ----------------------------------------------------------------- documents

    def add(self, docs: Iterable[DocumentLike]) -> list[str]:
        """Add new documents; returns their ids.

        An id stored with other content is an error (use ``upsert``); one stored with the same
        text and metadata is skipped, so rerunning an interrupted ``add`` completes it.
        """
        self._begin_write()
        return self._sync.add(as_documents(docs), self._encoding)

    def upsert(self, docs: Iterable[DocumentLike]) -> list[str]:
        """Insert or replace documents; only new or changed texts are encoded. Returns the ids encoded."""
        self._begin_write()
        return self._sync.upsert(as_documents(docs), self._encoding)

    def store_documents(self, docs: Iterable[DocumentLike]) -> list[str]:
        """Insert or replace documents without encoding them; returns the ids whose text is new or changed.

        Their vectors stay missing or stale (a later write, or a build such as
        ``inbedder_index.distributed.build``, encodes them); metadata-only changes are applied
        to the stored payloads at once.
        """
        self._state.writable()
        return self._sync.upsert(as_documents(docs), self._encoding, encode=False)

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete documents from the corpus and every collection. Returns the ids that existed."""
        wanted = validate_ids(ids)  # a bare string is refused, not read as one id per character
        self._begin_write()
        return self._sync.delete(wanted)

    def get(self, ids: Sequence[str]) -> list[Document]:
        """The stored documents among ``ids``, in the given order."""
        return self._corpus.get(ids)

    def ids(self, filter: Mapping[str, Any] | None = None) -> list[str]:
        """Every document id (insertion order), or those that pass ``filter`` (metadata fields and
        ``"$answer"``, see ``inbedder_index.search``)."""
        matching = _search.matching_ids(self._source(), filter)
        return [doc_id for doc_id in self._corpus.ids() if matching is None or doc_id in matching]

    def get_vectors(self, ids: Sequence[str], instruction: str) -> dict[str, np.ndarray]:
        """Stored vectors of ``ids`` under ``instruction`` (ids without one are left out)."""
        return self._backend(instruction).get_vectors(list(ids))

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
        check_int("batch_size", batch_size)
        wanted = self.register_instructions(instructions, answers=answers)
        return self._sync.run(LocalEncoding(self.encoder, answers), wanted, None, show_progress_bar=show_progress_bar,
                              batch_size=batch_size)

    def register_instructions(self, instructions: Sequence[str], *, answers: bool = True) -> list[str]:
        """Check the instructions and create the collections of new ones, encoding nothing yet.

        For builds that encode elsewhere (``inbedder_index.distributed``); returns the
        instructions without duplicates, in order. ``add_instructions`` is this plus the encoding.
        """
        self._state.writable()
        wanted = unique_instructions(instructions)
        self._sync.register(wanted, self.encoder, answers)
        return wanted

    def sync_state(self) -> Sync:
        """The corpus, collections and manifest as a build needs them, for a build that encodes
        elsewhere (``inbedder_index.distributed``); refuses a closed or read-only index."""
        self._state.writable()
        return self._sync

    def ensure_instruction(self, instruction: str, *, answers: bool = True) -> str:
        """Build ``instruction``'s collection if it is new (a read-only index only checks it exists)."""
        if instruction not in self.instructions():
            if self.read_only:
                self._state.entry(instruction)  # raises UnknownInstructionError listing the known ones
            self.add_instruction(instruction, answers=answers)
        return instruction

    def drop_instruction(self, instruction: str) -> None:
        """Delete an instruction's collection (the corpus and other collections stay); a drop cut
        short is finished by the next writer's open."""
        self._state.writable()
        self._state.drop(instruction)

    # ----------------------------------------------------------------- search

    def _source(self) -> _search.Source:
        """What ``inbedder_index.search`` reads from this index."""
        return _search.Source(
            corpus=self._corpus, collection=self._backend,
            collection_name=lambda instruction: self._state.entry(instruction).name,
            keeps_answers=lambda instruction: self._state.entry(instruction).answers,
            encoder=lambda: self.encoder, where=str(self.path))

    def search(self, query: str, instruction: str, k: int = 10, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` documents nearest to ``query`` when both are embedded under ``instruction``.

        ``filter`` holds metadata fields and, under ``"$answer"``, stored answers per instruction:
        ``{"$answer": {"How does the customer feel?": ["angry", "furious"]}, "lang": "en"}``.
        """
        return _search.search_text(self._source(), query, instruction, k=k, filter=filter)

    def search_by_vector(self, vector: Sequence[float] | np.ndarray, instruction: str, k: int = 10,
                         filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """Like ``search`` for a vector you already have (e.g. from ``encoder.encode``)."""
        return _search.search_vector(self._source(), vector, instruction, k=k, filter=filter)

    def search_combined(self, queries: Mapping[str, str], *, k: int = 10, weights: Mapping[str, float] | None = None,
                        filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` documents that best match several instructions at once: ``queries`` maps each
        instruction to the query text under it, and a document scores the weighted sum of its
        cosines (equal weights by default). Each hit has its score and answer under every one."""
        return _search.search_combined(self._source(), queries, k=k, weights=weights, filter=filter)

    def search_combined_by_vectors(self, vectors: Mapping[str, Sequence[float] | np.ndarray], *, k: int = 10,
                                   weights: Mapping[str, float] | None = None,
                                   filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """Like ``search_combined`` for query vectors you already have, one per instruction."""
        return _search.search_combined_vectors(self._source(), vectors, k=k, weights=weights, filter=filter)

    def facets(self, instruction: str, *, k: int = 20, filter: Mapping[str, Any] | None = None) -> list[tuple[str, int]]:
        """The ``k`` most frequent stored answers under ``instruction`` (normalised: case, spacing,
        trailing punctuation), with counts, over the documents that pass ``filter``."""
        return _search.facets(self._source(), instruction, k=k, filter=filter)

    def vectors(self, instruction: str, batch_size: int = 1024) -> Iterator[tuple[list[Document], np.ndarray]]:
        """Every document with its vector under ``instruction``, in corpus order (for clustering)."""
        return self._state.vectors(instruction, batch_size)

    def answers(self, instruction: str, ids: Sequence[str]) -> dict[str, str]:
        """The model's stored short answers for ``ids`` under ``instruction``."""
        return self._corpus.get_answers(self._state.entry(instruction).name, ids)

    # ----------------------------------------------------------------- inspection

    def stats(self) -> dict[str, Any]:
        """What is stored: documents, backend, model and each collection, with any unfinished work."""
        return self._state.stats()
