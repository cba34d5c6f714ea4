"""The index manifest: what an index folder holds and how it was built, checked on every open.

It lives as JSON in the corpus's ``meta`` table, so it changes in the same SQLite transactions
as the documents. It records the backend and, for a Qdrant server, its URL (never the API key),
the model's fingerprint, one entry per instruction's collection, and a random ``index_id`` that
is part of every collection name: two indexes whose folders share a name never share a
collection on one server, and an index never touches a collection that is not its own.

An index folder is untrusted input: everything read here is validated, and a manifest that
is malformed or lacks a key is an error that names the corpus file. Once read, it is typed
(``Manifest``, ``ModelRecord``, one ``CollectionEntry`` per instruction); keys this version
does not know are kept and written back, so the JSON stays readable by any version.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

from .backends.base import validate_collection_name
from .errors import ManifestError, ModelMismatchError, UnknownInstructionError

MANIFEST_KEY = "manifest"
VERSION = 2  # 2: index_id, qdrant_url, qdrant_storage; version 1 is upgraded on the first write
BACKENDS = ("faiss", "qdrant")
QDRANT_EDGE = "edge"  # Qdrant's engine embedded (qdrant-edge), the folder "qdrant-edge/"
QDRANT_LEGACY = "local"  # qdrant-client's local mode (pickles in SQLite), the folder "qdrant/"

_ENTRY_KEYS = {"instruction": str, "name": str, "fingerprint": str, "dim": int, "count": int}
_ENTRY_FLAGS = {"hnsw": False, "answers": True}  # optional in the JSON, with these defaults


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def collection_name(prefix: str, index_id: str, fingerprint: str, instruction: str) -> str:
    """Unique to this index (its id), the model (fingerprint) and the instruction."""
    digest = hashlib.sha256(f"{fingerprint}\0{instruction}".encode()).hexdigest()[:16]
    return f"{prefix}_{index_id}_{digest}"


def name_prefix(path: Path) -> str:
    """A readable prefix from the folder name (the id, not this, makes names unique)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.name).strip("-") or "index"
    return f"ib_{stem[:40]}"


def _fail(source: Path, problem: str) -> ManifestError:
    return ManifestError(f"{source}: the index manifest {problem}; restore the index from a backup or rebuild it")


def _extra(data: dict[str, Any], known: Any) -> dict[str, Any]:
    """The keys of ``data`` this version does not know, kept so a save never drops them."""
    return {key: value for key, value in data.items() if key not in known}


@dataclass
class ModelRecord:
    """The model an index was built with: every collection holds its vectors."""

    id: str
    fingerprint: str
    dim: int
    max_length: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Any, source: Path) -> ModelRecord:
        if not (isinstance(data, dict) and isinstance(data.get("fingerprint"), str) and isinstance(data.get("id"), str)
                and isinstance(data.get("dim"), int)):
            raise _fail(source, "has a malformed 'model' entry")
        return cls(data["id"], data["fingerprint"], data["dim"], data.get("max_length"),
                   _extra(data, ("id", "fingerprint", "dim", "max_length")))

    def to_json(self) -> dict[str, Any]:
        data = {**self.extra, "id": self.id, "fingerprint": self.fingerprint, "dim": self.dim}
        if self.max_length is not None:
            data["max_length"] = self.max_length
        return data


@dataclass
class CollectionEntry:
    """One instruction's collection: its unique name, the model and settings it was built with,
    and how many vectors it held at the last checkpoint."""

    instruction: str
    name: str
    fingerprint: str
    dim: int
    count: int = 0
    hnsw: bool = False
    answers: bool = True
    created: str | None = None
    updated: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, instruction: str, data: Any, source: Path) -> CollectionEntry:
        """A stored entry, validated (the collection name too: it becomes a folder or a server name)."""
        if not isinstance(data, dict):
            raise _fail(source, f"has a malformed entry for instruction {instruction!r}")
        for key, kind in _ENTRY_KEYS.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise _fail(source, f"entry for instruction {instruction!r} lacks a valid {key!r}")
        for key, default in _ENTRY_FLAGS.items():
            if not isinstance(data.get(key, default), bool):
                raise _fail(source, f"entry for instruction {instruction!r} has a {key!r} that is not true or false")
        try:
            validate_collection_name(data["name"])
        except ValueError as exc:
            raise _fail(source, f"entry for instruction {instruction!r} has an unsafe collection name ({exc})") from exc
        known = (*_ENTRY_KEYS, *_ENTRY_FLAGS, "created", "updated")
        return cls(data["instruction"], data["name"], data["fingerprint"], data["dim"], data["count"],
                   data.get("hnsw", False), data.get("answers", True), data.get("created"), data.get("updated"),
                   _extra(data, known))

    def to_json(self) -> dict[str, Any]:
        data = {**self.extra, "instruction": self.instruction, "name": self.name, "fingerprint": self.fingerprint,
                "dim": self.dim, "hnsw": self.hnsw, "count": self.count, "answers": self.answers}
        data.update({key: value for key, value in (("created", self.created), ("updated", self.updated))
                     if value is not None})
        return data


_MANIFEST_KEYS = ("version", "index_id", "backend", "qdrant_url", "qdrant_storage", "hnsw", "model", "collections",
                  "dropping", "created")


@dataclass
class Manifest:
    """The validated manifest of one index, typed; ``dumps`` is what is stored."""

    source: Path
    """The corpus file that stores it (named in every error)."""
    version: int
    index_id: str | None
    backend: str
    qdrant_url: str | None
    qdrant_storage: str | None
    """Where embedded Qdrant keeps its points: ``QDRANT_EDGE`` or ``QDRANT_LEGACY`` (None otherwise)."""
    hnsw: bool
    model: ModelRecord | None
    collections: dict[str, CollectionEntry]
    dropping: list[str]
    """Collections out of the manifest whose data an interrupted drop left behind."""
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    # ----------------------------------------------------------------- reading

    @classmethod
    def parse(cls, text: str | None, source: Path) -> Manifest | None:
        """The stored manifest, validated; ``None`` for a corpus that has none yet."""
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"{source}: the index manifest is not valid JSON ({exc}); "
                                "restore the index from a backup or rebuild it") from exc
        return cls._from_json(data, source)

    @classmethod
    def _from_json(cls, data: Any, source: Path) -> Manifest:
        if not isinstance(data, dict):
            raise _fail(source, "is not a JSON object")
        version = data.get("version")
        if version not in (1, VERSION):
            raise ManifestError(f"{source} has manifest version {version!r}; this library reads "
                                f"versions 1 and {VERSION}")
        for key in ("backend", "collections"):
            if key not in data:
                raise _fail(source, f"has no {key!r} entry")
        if data["backend"] not in BACKENDS:
            raise _fail(source, f"names an unknown backend {data['backend']!r}")
        if not isinstance(data["collections"], dict):
            raise _fail(source, "has a 'collections' entry that is not an object")
        model = None if data.get("model") is None else ModelRecord.from_json(data["model"], source)
        url = data.get("qdrant_url")
        if url is not None and not isinstance(url, str):
            raise _fail(source, "has a 'qdrant_url' that is not a string")
        index_id = data.get("index_id")
        valid_id = isinstance(index_id, str) and re.fullmatch(r"[0-9a-f]{12}", index_id) is not None
        if not (valid_id or version == 1 and index_id is None):  # version 1 was written before index ids
            raise _fail(source, "has no valid 'index_id'")
        storage = data.get("qdrant_storage", QDRANT_LEGACY if version == 1 and data["backend"] == "qdrant" else None)
        collections = {instruction: CollectionEntry.from_json(instruction, entry, source)
                       for instruction, entry in data["collections"].items()}
        dropping = data.get("dropping", [])
        if not (isinstance(dropping, list) and all(isinstance(name, str) for name in dropping)):
            raise _fail(source, "has a malformed 'dropping' list")
        for name in dropping:
            validate_collection_name(name)
        return cls(source, version, index_id, data["backend"], url, storage, bool(data.get("hnsw")), model,
                   collections, list(dropping), data.get("created"), _extra(data, _MANIFEST_KEYS))

    @classmethod
    def new(cls, backend: str, qdrant_url: str | None, hnsw: bool, source: Path) -> Manifest:
        storage = (None if qdrant_url else QDRANT_EDGE) if backend == "qdrant" else None
        return cls(source, VERSION, uuid.uuid4().hex[:12], backend, qdrant_url, storage, hnsw, None, {}, [], now())

    def upgrade(self, qdrant_url: str | None) -> bool:
        """Bring a version-1 manifest to this version (a new index id, and for Qdrant the server
        it is opened with, which version 1 did not record); True if it changed."""
        if self.version == VERSION:
            return False
        self.version = VERSION
        self.index_id = uuid.uuid4().hex[:12]
        if self.backend == "qdrant":
            self.qdrant_url = qdrant_url
        return True

    def dumps(self) -> str:
        data = {
            **self.extra, "version": self.version, "index_id": self.index_id, "backend": self.backend,
            "qdrant_url": self.qdrant_url, "qdrant_storage": self.qdrant_storage, "hnsw": self.hnsw,
            "model": None if self.model is None else self.model.to_json(),
            "collections": {instruction: entry.to_json() for instruction, entry in self.collections.items()},
            "dropping": self.dropping,
        }
        if self.created is not None:
            data["created"] = self.created
        return json.dumps(data, sort_keys=True)

    # ----------------------------------------------------------------- checks

    def check_backend(self, path: Path, backend: str | None, qdrant_url: str | None) -> None:
        """Refuse options that disagree with what the index was built with."""
        recorded = self.backend
        if backend and backend != recorded:
            raise ManifestError(f"{path} was built with backend {recorded!r}, not {backend!r}")
        if qdrant_url and recorded != "qdrant":
            raise ManifestError(f"{path} was built with backend {recorded!r}; qdrant_url does not apply to it")
        stored_url = self.qdrant_url
        if recorded != "qdrant" or self.version == 1 and stored_url is None:
            return  # version-1 indexes did not record their server
        if (stored_url or None) != (qdrant_url or None):
            where = f"the Qdrant server {stored_url}" if stored_url else "embedded Qdrant storage in the folder"
            given = f"qdrant_url={qdrant_url!r}" if qdrant_url else "no qdrant_url"
            raise ManifestError(f"{path} keeps its vectors in {where}, but it was opened with {given}; "
                                f"open it with {'qdrant_url=' + repr(stored_url) if stored_url else 'no qdrant_url'}")

    def check_model(self, path: Path, model_id: str, fingerprint: str,
                    earlier: Callable[[], Sequence[str]] | None = None) -> bool:
        """Refuse another model; True when the index recorded this one under an earlier fingerprint
        scheme (``earlier`` gives the model's fingerprints under those), so the caller re-records it."""
        recorded = self.model
        if recorded is None or recorded.fingerprint == fingerprint:
            return False
        if earlier is not None and recorded.fingerprint in earlier():
            return True
        raise ModelMismatchError(
            f"{path} was built with model {recorded.id!r} (fingerprint {recorded.fingerprint}), "
            f"but it was opened with {model_id!r} (fingerprint {fingerprint}); "
            f"open it with model={recorded.id!r}, or build a new index for the new model"
        )

    def renew_fingerprint(self, fingerprint: str) -> None:
        """The same model under the current fingerprint scheme: the model and its collections say so
        (collections keep their names, so nothing stored moves)."""
        assert self.model is not None
        old, self.model.fingerprint = self.model.fingerprint, fingerprint
        for entry in self.collections.values():
            if entry.fingerprint == old:
                entry.fingerprint = fingerprint

    # ----------------------------------------------------------------- entries

    def instructions(self) -> list[str]:
        return list(self.collections)

    def entry(self, instruction: str) -> CollectionEntry:
        entry = self.collections.get(instruction)
        if entry is None:
            known = "; ".join(repr(i) for i in self.instructions()) or "none yet"
            raise UnknownInstructionError(
                f"no collection for instruction {instruction!r}; known instructions: {known}. "
                "Add it with add_instruction() (CLI: inbedder-index build --instruction ...)"
            )
        return entry

    def add_entry(self, path: Path, instruction: str, fingerprint: str, dim: int, hnsw: bool,
                  answers: bool) -> CollectionEntry:
        name = collection_name(name_prefix(path), self.index_id or "legacy", fingerprint, instruction)
        entry = CollectionEntry(instruction, name, fingerprint, dim, 0, hnsw, answers, now(), now())
        self.collections[instruction] = entry
        return entry
