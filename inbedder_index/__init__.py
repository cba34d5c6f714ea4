"""inbedder-index: instruction-following text embeddings (InBedder) as a first-class part of vector search.

The data flow: texts -> ``prompt`` -> ``models`` (a language model) -> ``encoder`` (pooling) ->
vectors -> ``index`` (one collection per instruction in ``backends``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .cache import EmbeddingCache
from .encoder import InBedder
from .errors import InBedderError, ModelNotAvailableError
from .models import DEFAULT_MODEL, ModelSpec, list_supported_models
from .prompt import TEMPLATE, format_prompt

if TYPE_CHECKING:
    from .index import InstructionIndex

__all__ = [
    "DEFAULT_MODEL",
    "TEMPLATE",
    "EmbeddingCache",
    "InBedder",
    "InBedderError",
    "InstructionIndex",
    "ModelNotAvailableError",
    "ModelSpec",
    "format_prompt",
    "list_supported_models",
]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    # The index pulls in the storage layer; import it only when asked for.
    if name == "InstructionIndex":
        from .index import InstructionIndex

        return InstructionIndex
    raise AttributeError(f"module 'inbedder_index' has no attribute {name!r}")
