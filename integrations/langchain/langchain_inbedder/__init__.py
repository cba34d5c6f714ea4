"""LangChain integration of inbedder-index: instruction-following embeddings and a vector store
whose every search names the instruction (the question asked of the corpus)."""

from .embeddings import InBedderEmbeddings
from .vectorstores import InBedderVectorStore

__all__ = ["InBedderEmbeddings", "InBedderVectorStore"]
