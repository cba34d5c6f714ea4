"""Small helpers every layer uses: optional imports, slicing, id checks (nothing heavy imported)."""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterator, Sequence
from types import ModuleType
from typing import Any


def import_optional(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or explain which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed; install it with: pip install \"inbedder-index[{extra}]\""
        ) from exc


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items (request and SQL parameter limits)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def validate_ids(ids: Collection[str]) -> list[str]:
    """Document ids as a list; a bare string is refused since it would be read per character."""
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a sequence of strings, not a single string")
    checked = list(ids)
    for position, doc_id in enumerate(checked):
        if not isinstance(doc_id, str):
            raise TypeError(f"id at position {position} must be a str, got {type(doc_id).__name__}")
        if not doc_id:
            raise ValueError(f"id at position {position} is empty")
    return checked


def check_int(name: str, value: object, minimum: int = 1) -> None:
    """Refuse a size or count that is not an integer >= ``minimum`` (``True`` is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
