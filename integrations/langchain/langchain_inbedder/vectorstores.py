"""``InBedderVectorStore``: a LangChain ``VectorStore`` over an ``InstructionIndex``.

One corpus, one collection per instruction: every search method takes ``instruction=`` (also in a
retriever's ``search_kwargs``), so one store answers "who is angry?" and "who wants a refund?";
``instructions=[...]`` (with optional ``weights=``) asks them at once: "angry AND wants a refund".
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from inbedder_index import InstructionIndex
from inbedder_index.corpus import Document as IndexDocument
from inbedder_index.index import Hit

from .embeddings import InBedderEmbeddings



class _EmbeddingsEncoder:
    """Any LangChain ``Embeddings`` as an ``inbedder_index.Embedder``, which ``InstructionIndex`` stores vectors with.

    A plain embedding model cannot follow an instruction: every collection of such an index holds
    the same vectors and the instruction only names the collection. Queries go through
    ``embed_query`` (see ``InBedderVectorStore._query_vector``), never through ``encode``.
    """

    def __init__(self, embeddings: Embeddings) -> None:  # nothing to load: the model is the Embeddings
        self.embeddings = embeddings
        self.max_length = 0  # recorded in the index manifest; the wrapped model truncates on its own
        self._dim: int | None = None

    @property
    def model_id(self) -> str:
        return f"langchain:{type(self.embeddings).__module__}.{type(self.embeddings).__qualname__}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = len(self.embeddings.embed_query("dimension probe"))
        return self._dim

    @property
    def fingerprint(self) -> str:
        """Class, model name and dimension: reopening an index with another embedding model is refused."""
        name = next((getattr(self.embeddings, a) for a in ("model", "model_name")
                     if isinstance(getattr(self.embeddings, a, None), str)), "")
        return hashlib.sha256(f"{self.model_id}\0{name}\0{self.dim}".encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"_EmbeddingsEncoder({self.embeddings!r})"

    def encode(self, texts: str | Sequence[str], instruction: str | Sequence[str], *, batch_size: int | None = None,
               normalize: bool = True, show_progress_bar: bool | None = None, return_answers: bool = False) -> Any:
        single = isinstance(texts, str)
        vectors = np.asarray(self.embeddings.embed_documents([texts] if single else list(texts)), dtype=np.float32)
        vectors = vectors.reshape(-1, self.dim)
        if normalize:
            vectors = _unit(vectors)
        result: Any = vectors[0] if single else vectors
        if return_answers:  # a plain embedding model gives no short answers
            result = (result, "" if single else [""] * len(vectors))
        return result if isinstance(instruction, str) else {item: result for item in instruction}


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Scores are inner products in the index: unit vectors make them cosines."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _document(hit: Hit | IndexDocument) -> Document:
    return Document(id=hit.id, page_content=hit.text, metadata=dict(hit.metadata))


class InBedderVectorStore(VectorStore):
    """A corpus searchable under any instruction, stored in an ``InstructionIndex`` (FAISS or Qdrant).

    Every search method takes ``instruction=`` (default: ``default_instruction``), and so does a
    retriever: ``store.as_retriever(search_kwargs={"instruction": "What does the customer want?"})``.
    ``similarity_search`` and ``similarity_search_with_score`` (so the retriever) also take
    ``instructions=[...]`` and ``weights={instruction: w}``: the query under each instruction at
    once, each document scored by the weighted sum of its cosines (``InstructionIndex.search_combined``).
    A search under an instruction the index has no collection for builds that collection on first
    use (one pass over the corpus, then it is kept), because asking a new question of the same
    corpus is the point; an index opened ``read_only=True`` cannot build, and raises
    ``UnknownInstructionError`` listing the instructions it has.

    Adding texts updates every collection; scores are cosine similarities (higher is closer).
    Any LangChain ``Embeddings`` works as ``embedding=`` of ``open``/``from_texts``: documents and
    queries are then embedded by it, and the instruction only names the collection.
    """

    def __init__(self, index: InstructionIndex, default_instruction: str) -> None:
        if not isinstance(default_instruction, str) or not default_instruction.strip():
            raise ValueError("default_instruction is blank; give a question, e.g. 'How does the customer feel?'")
        self.index = index
        self.default_instruction = default_instruction
        self._embedding: Embeddings | None = None
        self._temporary: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, embedding: Embeddings | None = None,
             default_instruction: str | None = None, **index_options: Any) -> InBedderVectorStore:
        """Open (or create) the index at ``path``.

        ``embedding``: an ``InBedderEmbeddings`` (its model is shared and its instruction is the
        default), any other LangChain ``Embeddings``, or ``None`` for the index's own model.
        ``index_options`` go to ``InstructionIndex.open`` (``backend``, ``qdrant_url``, ``hnsw``,
        ``read_only``, or ``model`` when no ``embedding`` is given).
        """
        if embedding is not None:
            if "model" in index_options:
                raise TypeError("give embedding= or model=, not both")
            index_options["model"] = (embedding.load() if isinstance(embedding, InBedderEmbeddings)
                                      else _EmbeddingsEncoder(embedding))
        index = InstructionIndex.open(path, **index_options)
        try:
            instruction = (default_instruction
                           or (embedding.instruction if isinstance(embedding, InBedderEmbeddings) else None)
                           or next(iter(index.instructions()), None))
            if instruction is None:
                raise ValueError(f"{index.path} has no instruction yet: give default_instruction=")
            store = cls(index, instruction)
        except BaseException:
            index.close()
            raise
        if isinstance(embedding, InBedderEmbeddings):  # keep the caller's settings (query_instruction, batch_size)
            store._embedding = (embedding if embedding.instruction == instruction
                                else embedding.with_instruction(instruction))
        return store

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, path: str | os.PathLike[str] | None = None,
                   instruction: str | None = None, **kwargs: Any) -> InBedderVectorStore:
        """A store holding ``texts``, at ``path`` or in a temporary folder removed with the store.

        ``instruction`` is the default instruction (default: ``embedding.instruction``);
        ``kwargs`` go to ``open``.
        """
        temporary = None if path is not None else tempfile.TemporaryDirectory(prefix="inbedder-index-")
        store = cls.open(path if temporary is None else temporary.name, embedding=embedding,
                         default_instruction=instruction, **kwargs)
        store._temporary = temporary
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def close(self) -> None:
        """Release the index (its writer lock, Qdrant's embedded storage)."""
        self.index.close()

    @property
    def embeddings(self) -> Embeddings:
        """What embeds queries: an ``InBedderEmbeddings`` on the index's model bound to
        ``default_instruction``, or the plain ``Embeddings`` the index was opened with."""
        if self._embedding is None:
            encoder = self.index.encoder
            self._embedding = (encoder.embeddings if isinstance(encoder, _EmbeddingsEncoder)
                               else InBedderEmbeddings(encoder=encoder, instruction=self.default_instruction))
        return self._embedding

    # ----------------------------------------------------------------- writes

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                  ids: list[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Insert or replace texts (ids kept as given, uuid4 strings where missing); returns the ids.

        Every collection is updated; the default instruction's collection is created first if
        it does not exist. Metadata must be JSON-serialisable. Other ``kwargs`` are ignored.
        """
        texts = list(texts)
        for label, values in (("metadatas", metadatas), ("ids", ids)):
            if values is not None and len(values) != len(texts):
                raise ValueError(f"got {len(values)} {label} for {len(texts)} texts")
        ids = [doc_id or str(uuid.uuid4()) for doc_id in (ids or [None] * len(texts))]
        metadatas = metadatas or [{} for _ in texts]
        self._collection(self.default_instruction)
        self.index.upsert(IndexDocument(i, t, dict(m or {})) for i, t, m in zip(ids, texts, metadatas))
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents from the corpus and every collection; missing ids are ignored."""
        if ids is None:
            raise ValueError("give the ids to delete (deleting everything is not done implicitly)")
        self.index.delete(ids)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [_document(doc) for doc in self.index.get(list(ids))]

    # ----------------------------------------------------------------- search

    def _collection(self, instruction: str | None) -> str:
        """The instruction to search under, its collection built first if it is new (see class docs)."""
        return self.index.ensure_instruction(instruction or self.default_instruction, answers=False)

    def _query_vector(self, query: str, instruction: str) -> list[float]:
        embedding = self.embeddings
        if isinstance(embedding, InBedderEmbeddings) and embedding.instruction != instruction:
            embedding = embedding.with_instruction(instruction)
        return embedding.embed_query(query)

    def _search(self, vector: Sequence[float], k: int, instruction: str,
                filter: dict[str, Any] | None) -> list[Hit]:
        return self.index.search_by_vector(_unit(np.asarray(vector, dtype=np.float32)), instruction, k=k,
                                           filter=filter)

    def _search_combined(self, query: str, k: int, instructions: Sequence[str], weights: dict[str, float] | None,
                         filter: dict[str, Any] | None) -> list[Hit]:
        if isinstance(instructions, str):
            raise TypeError("instructions= takes a list of instructions; for one, use instruction=")
        vectors = {instruction: self._query_vector(query, instruction)
                   for instruction in map(self._collection, instructions)}
        return self.index.search_combined_by_vectors(vectors, k=k, weights=weights, filter=filter)

    def similarity_search_with_score(self, query: str, k: int = 4, filter: dict[str, Any] | None = None, *,
                                     instruction: str | None = None, instructions: Sequence[str] | None = None,
                                     weights: dict[str, float] | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """``(document, score)`` pairs, best first: the cosine similarity under ``instruction``, or
        with ``instructions=[...]`` the sum of the cosines under each (weighted by ``weights``).

        ``filter``: ``{field: value}`` (equality) or ``{field: [a, b]}`` (any of), AND-ed, and
        ``{"$answer": {instruction: [answers]}}`` for the model's stored answers (in collections
        built with answers).
        """
        if instructions is not None:
            if instruction is not None:
                raise ValueError("give instruction= (one) or instructions= (several at once), not both")
            hits = self._search_combined(query, k, instructions, weights, filter)
        elif weights is not None:
            raise ValueError("weights= weighs the instructions= of a combined search; give instructions= too")
        else:
            instruction = self._collection(instruction)
            hits = self._search(self._query_vector(query, instruction), k, instruction, filter)
        return [(_document(hit), hit.score) for hit in hits]

    def similarity_search(self, query: str, k: int = 4, filter: dict[str, Any] | None = None, *,
                          instruction: str | None = None, instructions: Sequence[str] | None = None,
                          weights: dict[str, float] | None = None, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, instruction=instruction,
                                                                    instructions=instructions, weights=weights)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None,
                                    *, instruction: str | None = None, **kwargs: Any) -> list[Document]:
        """Nearest documents to a vector from this store's model under the same ``instruction``."""
        return [_document(hit) for hit in self._search(embedding, k, self._collection(instruction), filter)]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: dict[str, Any] | None = None, *, instruction: str | None = None,
                                      **kwargs: Any) -> list[Document]:
        instruction = self._collection(instruction)
        return self.max_marginal_relevance_search_by_vector(
            self._query_vector(query, instruction), k, fetch_k, lambda_mult, filter, instruction=instruction
        )

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: dict[str, Any] | None = None, *,
                                                instruction: str | None = None, **kwargs: Any) -> list[Document]:
        """``fetch_k`` nearest documents re-ranked for diversity on their stored vectors."""
        instruction = self._collection(instruction)
        hits = self._search(embedding, fetch_k, instruction, filter)
        if not hits:
            return []
        stored = self.index.get_vectors([hit.id for hit in hits], instruction)
        picks = maximal_marginal_relevance(_unit(np.asarray(embedding, dtype=np.float32)),
                                           [stored[hit.id] for hit in hits], lambda_mult=lambda_mult, k=k)
        return [_document(hits[i]) for i in picks]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Cosine similarity in [-1, 1] -> relevance in [0, 1], order kept."""
        return lambda score: (score + 1.0) / 2.0
