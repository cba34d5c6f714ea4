"""LlamaIndex integration of inbedder-index: an instruction-following embed model and a vector
store whose every query names the instruction (the question asked of the corpus)."""

from .embeddings import InBedderEmbedding
from .vector_store import InBedderVectorStore, index_filter

__all__ = ["InBedderEmbedding", "InBedderVectorStore", "index_filter"]
