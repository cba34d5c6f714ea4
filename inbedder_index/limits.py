"""Bounds on what the library accepts, so that no input can make later reads or writes fail.

A document's metadata is stored in the corpus (JSON in SQLite) and in every Qdrant payload,
and comes back in every search hit: whatever is accepted once must serialise, filter and
return forever after. So metadata is checked completely before anything is written:

- :data:`MAX_METADATA_DEPTH` (32) levels of nested objects and lists (the metadata object
  itself is level 1): deeper payloads exceed the recursion limits of the Qdrant engine and of
  the JSON encoders that return hits;
- :data:`MAX_METADATA_BYTES` (64 KiB) of compact UTF-8 JSON per document: metadata is for
  filtering and display, not for storing documents;
- keys are strings (JSON would turn other keys into strings, so they would not read back), and
  top-level keys do not start with ``$`` (filters reserve such keys, e.g. ``"$answer"``);
  values are ``None``, bools, strings, finite floats, integers in the signed 64-bit range
  (what Qdrant stores) and lists/tuples/dicts of them; strings are valid Unicode (no lone
  surrogates, which JSON escapes can carry but no store can hold).

``k`` of a search is at most :data:`MAX_K` (10,000) everywhere (library, backends, HTTP API),
so it never overflows an engine's integer type. The HTTP service bounds the characters of
each text and of each request with :func:`check_text_sizes` (its settings hold the numbers),
and accepts only API keys that HTTP headers can carry (:func:`check_api_key`).
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import LimitExceededError

MAX_METADATA_DEPTH = 32
"""Levels of nested objects and lists in one document's metadata (the metadata itself is 1)."""

MAX_METADATA_BYTES = 64 * 2**10
"""Compact UTF-8 JSON bytes of one document's metadata."""

MAX_K = 10_000
"""The most hits one search returns."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def check_k(k: Any) -> int:
    """``k`` as a search's number of hits: an int in ``1..MAX_K``."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    return k


def check_api_key(key: str) -> str:
    """An API key that HTTP can carry as ``Authorization: Bearer KEY``: visible ASCII, no spaces.

    Header values are bytes; httpx (so ``RemoteInBedder``) refuses to send other characters,
    and servers decode them as Latin-1, so such a key could never be matched.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("the API key is empty; give a key of visible ASCII characters, or none")
    bad = next((position for position, char in enumerate(key) if not "!" <= char <= "~"), None)
    if bad is not None:
        kind = "a non-ASCII" if ord(key[bad]) > 127 else "a space or control"
        raise ValueError(f"the API key has {kind} character at position {bad}: "
                         "an HTTP header carries only visible ASCII characters (letters, digits, punctuation, "
                         "no spaces); choose another key, e.g. python -c 'import secrets; print(secrets.token_urlsafe())'")
    return key


def _unicode(where: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where} is not valid Unicode ({exc.reason} at position {exc.start}); "
                         "send text without lone surrogates") from None


def _path(keys: list[Any]) -> str:
    return "metadata" + "".join(f"[{reprlib.repr(key)}]" for key in keys)


def check_metadata(where: str, metadata: dict[str, Any]) -> None:
    """Refuse metadata that could not be stored, filtered and returned on every backend;
    ``where`` names the document in the error (e.g. ``"document 3 (id 'x')"``).

    The walk is iterative and holds one iterator per level, so metadata nested far deeper
    than the limit is refused with a clear error rather than a ``RecursionError``.
    """
    stack: list[tuple[Iterator[tuple[Any, Any]], bool]] = [(iter(metadata.items()), True)]
    keys: list[Any] = []  # the path to the container being walked
    while stack:
        items, in_dict = stack[-1]
        try:
            key, value = next(items)
        except StopIteration:
            stack.pop()
            if keys:
                keys.pop()
            continue
        if in_dict:
            if not isinstance(key, str):
                raise TypeError(f"{where}: metadata keys must be str, got {reprlib.repr(key)} in {_path(keys)}")
            _unicode(f"{where}: a metadata key in {_path(keys)}", key)
            if not keys and key.startswith("$"):
                raise ValueError(f"{where}: metadata key {key!r} starts with '$', which filters reserve for their "
                                 "own keys (e.g. '$answer', see inbedder_index.search); rename the field")
        if isinstance(value, (dict, list, tuple)):
            if len(stack) + 1 > MAX_METADATA_DEPTH:
                raise LimitExceededError(
                    f"{where}: metadata is nested deeper than {MAX_METADATA_DEPTH} levels, the limit "
                    f"(MAX_METADATA_DEPTH); flatten it. Too deep at {_path([*keys, key])}")
            stack.append((iter(value.items()), True) if isinstance(value, dict) else (enumerate(value), False))
            keys.append(key)
        elif isinstance(value, str):
            _unicode(f"{where}: {_path([*keys, key])}", value)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"{where}: {_path([*keys, key])} is an integer outside the signed 64-bit range "
                                 "that stored metadata can hold; store it as a string")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"{where}: metadata is not JSON: {_path([*keys, key])} = {value} "
                                 "(JSON has no NaN or infinity)")
        else:
            raise TypeError(f"{where}: metadata is not JSON-serialisable: {_path([*keys, key])} holds a "
                            f"{type(value).__name__}; metadata values are None, bool, int, float, str, "
                            "or lists and objects of them")
    size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise LimitExceededError(f"{where}: metadata is {size} bytes of JSON; the limit is {MAX_METADATA_BYTES} "
                                 "(MAX_METADATA_BYTES): keep large content in the text or elsewhere")


def check_text_sizes(texts: Iterable[tuple[str, str]], *, per_text: int, per_request: int) -> None:
    """Refuse ``(label, text)`` pairs of one request holding more than ``per_text`` characters in
    one text or ``per_request`` in all, before any is tokenised: the work one request can cause
    stays bounded, so it cannot hold up everyone else's."""
    total = 0
    for label, text in texts:
        if len(text) > per_text:
            raise LimitExceededError(f"{label} has {len(text)} characters; this server accepts up to {per_text} "
                                     "per text (the model reads only its first max_length tokens: shorten or split it)")
        total += len(text)
        if total > per_request:
            raise LimitExceededError(f"this request holds more than {per_request} characters of text; this server "
                                     f"accepts up to {per_request} per request (send fewer texts per request)")
