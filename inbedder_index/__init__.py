"""inbedder-index: instruction-following text embeddings (InBedder) as a first-class part of vector search.

The data flow: texts -> ``prompt`` -> ``models`` (a language model) -> ``encoder`` (pooling) ->
vectors -> ``index`` (one collection per instruction in ``backends``).

Importing the package is cheap: the names that need torch, transformers or a vector store are
imported on first use (``inbedder_index.InBedder`` imports the encoder then), so a command pays
only for what it does.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from .errors import InBedderError, ModelNotAvailableError
from .models import DEFAULT_MODEL, ModelSpec, list_supported_models
from .prompt import TEMPLATE, format_prompt

if TYPE_CHECKING:
    from .cache import EmbeddingCache
    from .embedder import Embedder, connect
    from .encoder import InBedder
    from .index import InstructionIndex

__all__ = [
    "DEFAULT_MODEL",
    "TEMPLATE",
    "Embedder",
    "EmbeddingCache",
    "InBedder",
    "InBedderError",
    "InstructionIndex",
    "ModelNotAvailableError",
    "ModelSpec",
    "connect",
    "format_prompt",
    "list_supported_models",
]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {"EmbeddingCache": ".cache", "Embedder": ".embedder", "InBedder": ".encoder", "InstructionIndex": ".index",
         "connect": ".embedder"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inbedder_index' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value
