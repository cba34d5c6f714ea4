"""``InBedderVectorStore``: a LlamaIndex vector store over an ``InstructionIndex``.

The instruction is chosen per query: ``index.as_retriever(vector_store_kwargs={"instruction": ...})``
reaches ``query(query, instruction=...)``; without it the store's own ``instruction`` is used.
``vector_store_kwargs={"instructions": [...], "weights": {...}}`` asks several at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from pydantic import PrivateAttr, field_validator

from inbedder_index import InstructionIndex
from inbedder_index.corpus import Document
from inbedder_index.search import Hit

from .embeddings import InBedderEmbedding


# The index filters by equality or any-of; these LlamaIndex operators mean exactly that there
# (a list-valued metadata field matches when any of its elements matches).
_SINGLE = (FilterOperator.EQ, FilterOperator.CONTAINS)
_ANY_OF = (FilterOperator.IN, FilterOperator.ANY)


def index_filter(filters: MetadataFilters | None, doc_ids: Sequence[str] | None = None) -> dict[str, Any] | None:
    """LlamaIndex filters (+ a ``doc_ids`` restriction) in the index's ``{field: value | [any of]}`` form."""
    flat: dict[str, Any] = {}
    items: list[MetadataFilter | MetadataFilters] = list(filters.filters) if filters else []
    if len(items) > 1 and filters is not None and filters.condition not in (None, FilterCondition.AND):
        raise ValueError(f"condition {filters.condition.value!r} is not supported: filters are AND-ed")
    if doc_ids:
        items.append(MetadataFilter(key="ref_doc_id", value=list(doc_ids), operator=FilterOperator.IN))
    for item in items:
        if isinstance(item, MetadataFilters):
            raise ValueError("nested MetadataFilters are not supported: give one AND-ed list")
        if item.operator not in _SINGLE + _ANY_OF:
            raise ValueError(f"filter operator {item.operator.value!r} on {item.key!r} is not supported; use "
                             + ", ".join(repr(op.value) for op in _SINGLE + _ANY_OF))
        if item.key in flat:
            raise ValueError(f"two filters on {item.key!r}: give one, with a list of values for any-of")
        flat[item.key] = list(item.value) if item.operator in _ANY_OF else item.value
    return flat or None


class InBedderVectorStore(BasePydanticVectorStore):
    """Nodes in an ``InstructionIndex`` (FAISS or Qdrant), searchable under any instruction.

    The store embeds by itself: documents with the index's model under every instruction it has
    (the text LlamaIndex would embed, ``node.get_content(MetadataMode.EMBED)``), queries as
    ``query_str`` under the query's instruction. So the retriever computes no query embedding,
    and the embeddings ``VectorStoreIndex`` computes on insertion are not used: pass
    ``embed_model=store.embed_model`` to avoid loading a second model. A query under an
    instruction without a collection builds it on first use (one pass over the corpus); an index
    opened ``read_only=True`` raises ``UnknownInstructionError`` listing the ones it has.
    """

    stores_text: bool = True
    is_embedding_query: bool = False
    instruction: str
    _index: InstructionIndex = PrivateAttr()

    def __init__(self, index: InstructionIndex, instruction: str, **kwargs: Any) -> None:
        super().__init__(instruction=instruction, **kwargs)
        self._index = index

    @field_validator("instruction")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("instruction is blank; give a question, e.g. 'How does the customer feel?'")
        return value

    @classmethod
    def open(cls, path: str | os.PathLike[str], instruction: str, **index_options: Any) -> InBedderVectorStore:
        """Open (or create) the index at ``path``; ``index_options`` go to ``InstructionIndex.open``
        (``model`` — e.g. ``embed_model.encoder`` to share a loaded model —, ``backend``, ``qdrant_url``, ...)."""
        index = InstructionIndex.open(path, **index_options)
        try:
            return cls(index, instruction)
        except BaseException:
            index.close()
            raise

    @classmethod
    def class_name(cls) -> str:
        return "InBedderVectorStore"

    @property
    def client(self) -> InstructionIndex:
        return self._index

    @property
    def embed_model(self) -> InBedderEmbedding:
        """An embed model on the index's (already loaded) model, bound to ``instruction``."""
        return InBedderEmbedding(encoder=self._index.encoder, instruction=self.instruction)

    def close(self) -> None:
        """Release the index (its writer lock, Qdrant's embedded storage)."""
        self._index.close()

    def _collection(self, instruction: str | None) -> str:
        return self._index.ensure_instruction(instruction or self.instruction, answers=False)

    def _ids(self, node_ids: list[str] | None, filter: dict[str, Any] | None) -> list[str]:
        """``node_ids`` (default: all) that match ``filter`` (index format)."""
        if node_ids is None:
            return self._index.ids(filter)
        if filter is None:
            return list(node_ids)
        matching = set(self._index.ids(filter))
        return [doc_id for doc_id in node_ids if doc_id in matching]

    # ----------------------------------------------------------------- writes

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Insert or replace nodes (id = node id) in every collection; returns the node ids."""
        self._collection(self.instruction)
        self._index.upsert(
            Document(node.node_id, node.get_content(metadata_mode=MetadataMode.EMBED),
                     node_to_metadata_dict(node, remove_text=False, flat_metadata=False))
            for node in nodes
        )
        return [node.node_id for node in nodes]

    async def async_add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **add_kwargs)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        self._index.delete(self._ids(None, {"ref_doc_id": ref_doc_id}))

    def delete_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None,
                     **delete_kwargs: Any) -> None:
        if node_ids is None and filters is None:
            raise ValueError("give node_ids or filters (clear() deletes everything)")
        self._index.delete(self._ids(node_ids, index_filter(filters)))

    def clear(self) -> None:
        self._index.delete(self._ids(None, None))

    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        return [metadata_dict_to_node(doc.metadata) for doc in self._index.get(self._ids(node_ids, index_filter(filters)))]

    # ----------------------------------------------------------------- search

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The nearest nodes under ``kwargs["instruction"]`` (default: the store's instruction).

        ``query_str`` is embedded under that instruction; a ``query_embedding`` is used only when
        there is no ``query_str`` (it must come from the index's model under the same instruction).
        ``filters`` (==, in, any, contains; AND) and ``doc_ids`` restrict the search.
        ``kwargs["instructions"]`` (a list, with optional ``kwargs["weights"]``) searches
        ``query_str`` under each at once: similarities are the weighted sums of the cosines
        (``InstructionIndex.search_combined``).
        """
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise ValueError(f"query mode {query.mode.value!r} is not supported; use 'default'")
        if query.node_ids:
            raise ValueError("restricting a query to node_ids is not supported; use filters or doc_ids")
        filter = index_filter(query.filters, query.doc_ids)
        if kwargs.get("instructions") is not None:
            hits = self._query_combined(query, kwargs["instructions"], kwargs.get("weights"), kwargs.get("instruction"),
                                        filter)
        elif kwargs.get("weights") is not None:
            raise ValueError("weights weigh the instructions of a combined query; give instructions too")
        elif query.query_str is not None:
            hits = self._index.search(query.query_str, self._collection(kwargs.get("instruction")),
                                      k=query.similarity_top_k, filter=filter)
        elif query.query_embedding is not None:
            hits = self._index.search_by_vector(query.query_embedding, self._collection(kwargs.get("instruction")),
                                                k=query.similarity_top_k, filter=filter)
        else:
            raise ValueError("the query has neither query_str nor query_embedding")
        return VectorStoreQueryResult(nodes=[metadata_dict_to_node(hit.metadata) for hit in hits],
                                      similarities=[hit.score for hit in hits], ids=[hit.id for hit in hits])

    def _query_combined(self, query: VectorStoreQuery, instructions: Sequence[str], weights: dict[str, float] | None,
                        instruction: str | None, filter: dict[str, Any] | None) -> list[Hit]:
        if instruction is not None:
            raise ValueError("give instruction (one) or instructions (several at once), not both")
        if isinstance(instructions, str):
            raise TypeError("instructions takes a list of instructions; for one, use instruction")
        if query.query_str is None:
            raise ValueError("a query under several instructions needs query_str: one query_embedding is a vector "
                             "under one instruction")
        queries = {self._collection(item): query.query_str for item in instructions}
        return self._index.search_combined(queries, k=query.similarity_top_k, weights=weights, filter=filter)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)
