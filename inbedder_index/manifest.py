"""The index manifest: what an index folder holds and how it was built, checked on every open.

It lives as JSON in the corpus's ``meta`` table, so it changes in the same SQLite transactions
as the documents. It records the backend and, for a Qdrant server, its URL (never the API key),
the model's fingerprint, one entry per instruction's collection, and a random ``index_id`` that
is part of every collection name: two indexes whose folders share a name never share a
collection on one server, and an index never touches a collection that is not its own.

An index folder is untrusted input: everything read here is validated, and a manifest that
is malformed or lacks a key is an error that names the corpus file.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .backends.base import validate_collection_name
from .errors import ManifestError, ModelMismatchError, UnknownInstructionError

MANIFEST_KEY = "manifest"
VERSION = 2  # 2: index_id, qdrant_url, qdrant_storage; version 1 is upgraded on the first write
BACKENDS = ("faiss", "qdrant")
QDRANT_EDGE = "edge"  # Qdrant's engine embedded (qdrant-edge), the folder "qdrant-edge/"
QDRANT_LEGACY = "local"  # qdrant-client's local mode (pickles in SQLite), the folder "qdrant/"

_ENTRY_KEYS = {"instruction": str, "name": str, "fingerprint": str, "dim": int, "count": int}


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


class Manifest:
    """The validated manifest of one index; ``data`` is what is stored."""

    def __init__(self, data: dict[str, Any], source: Path) -> None:
        self.data = data
        self.source = source

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
        manifest = cls(data, source)
        manifest._validate()
        return manifest

    def _fail(self, problem: str) -> ManifestError:
        return ManifestError(f"{self.source}: the index manifest {problem}; restore the index from a backup "
                             "or rebuild it")

    def _validate(self) -> None:
        data = self.data
        if not isinstance(data, dict):
            raise self._fail("is not a JSON object")
        version = data.get("version")
        if version not in (1, VERSION):
            raise ManifestError(f"{self.source} has manifest version {version!r}; this library reads "
                                f"versions 1 and {VERSION}")
        for key in ("backend", "collections"):
            if key not in data:
                raise self._fail(f"has no {key!r} entry")
        if data["backend"] not in BACKENDS:
            raise self._fail(f"names an unknown backend {data['backend']!r}")
        if not isinstance(data["collections"], dict):
            raise self._fail("has a 'collections' entry that is not an object")
        model = data.get("model")
        if model is not None and not (isinstance(model, dict) and isinstance(model.get("fingerprint"), str)
                                      and isinstance(model.get("id"), str)
                                      and isinstance(model.get("dim"), int)):
            raise self._fail("has a malformed 'model' entry")
        url = data.get("qdrant_url")
        if url is not None and not isinstance(url, str):
            raise self._fail("has a 'qdrant_url' that is not a string")
        if version == 1:  # written before index ids: keep the recorded collection names
            data.setdefault("index_id", None)
            data.setdefault("qdrant_url", None)
            data.setdefault("qdrant_storage", QDRANT_LEGACY if data["backend"] == "qdrant" else None)
        elif not (isinstance(data.get("index_id"), str) and re.fullmatch(r"[0-9a-f]{12}", data["index_id"])):
            raise self._fail("has no valid 'index_id'")
        for instruction, entry in data["collections"].items():
            if not isinstance(entry, dict):
                raise self._fail(f"has a malformed entry for instruction {instruction!r}")
            for key, kind in _ENTRY_KEYS.items():
                if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                    raise self._fail(f"entry for instruction {instruction!r} lacks a valid {key!r}")
            try:
                validate_collection_name(entry["name"])
            except ValueError as exc:
                raise self._fail(f"entry for instruction {instruction!r} has an unsafe collection name ({exc})") from exc
        dropping = data.setdefault("dropping", [])
        if not (isinstance(dropping, list) and all(isinstance(name, str) for name in dropping)):
            raise self._fail("has a malformed 'dropping' list")
        for name in dropping:
            validate_collection_name(name)

    @classmethod
    def new(cls, backend: str, qdrant_url: str | None, hnsw: bool, source: Path) -> Manifest:
        return cls({
            "version": VERSION,
            "index_id": uuid.uuid4().hex[:12],
            "backend": backend,
            "qdrant_url": qdrant_url,
            "qdrant_storage": (None if qdrant_url else QDRANT_EDGE) if backend == "qdrant" else None,
            "hnsw": hnsw,
            "model": None,
            "collections": {},
            "dropping": [],
            "created": now(),
        }, source)

    def upgrade(self) -> bool:
        """Bring a version-1 manifest to this version (a new index id); True if it changed."""
        if self.data["version"] == VERSION:
            return False
        self.data["version"] = VERSION
        self.data["index_id"] = uuid.uuid4().hex[:12]
        return True

    # ----------------------------------------------------------------- checks

    def check_backend(self, path: Path, backend: str | None, qdrant_url: str | None) -> None:
        """Refuse options that disagree with what the index was built with."""
        recorded = self.data["backend"]
        if backend and backend != recorded:
            raise ManifestError(f"{path} was built with backend {recorded!r}, not {backend!r}")
        if qdrant_url and recorded != "qdrant":
            raise ManifestError(f"{path} was built with backend {recorded!r}; qdrant_url does not apply to it")
        stored_url = self.data.get("qdrant_url")
        if recorded != "qdrant" or self.data["version"] == 1 and stored_url is None:
            return  # version-1 indexes did not record their server
        if (stored_url or None) != (qdrant_url or None):
            where = f"the Qdrant server {stored_url}" if stored_url else "embedded Qdrant storage in the folder"
            given = f"qdrant_url={qdrant_url!r}" if qdrant_url else "no qdrant_url"
            raise ManifestError(f"{path} keeps its vectors in {where}, but it was opened with {given}; "
                                f"open it with {'qdrant_url=' + repr(stored_url) if stored_url else 'no qdrant_url'}")

    def check_model(self, path: Path, model_id: str, fingerprint: str) -> None:
        recorded = self.data.get("model")
        if recorded is not None and recorded["fingerprint"] != fingerprint:
            raise ModelMismatchError(
                f"{path} was built with model {recorded['id']!r} (fingerprint {recorded['fingerprint']}), "
                f"but it was opened with {model_id!r} (fingerprint {fingerprint}); "
                f"open it with model={recorded['id']!r}, or build a new index for the new model"
            )

    # ----------------------------------------------------------------- access

    @property
    def backend(self) -> str:
        return self.data["backend"]

    @property
    def index_id(self) -> str | None:
        return self.data.get("index_id")

    @property
    def collections(self) -> dict[str, dict[str, Any]]:
        return self.data["collections"]

    @property
    def dropping(self) -> list[str]:
        return self.data["dropping"]

    def instructions(self) -> list[str]:
        return list(self.collections)

    def entry(self, instruction: str) -> dict[str, Any]:
        entry = self.collections.get(instruction)
        if entry is None:
            known = "; ".join(repr(i) for i in self.instructions()) or "none yet"
            raise UnknownInstructionError(
                f"no collection for instruction {instruction!r}; known instructions: {known}. "
                "Add it with add_instruction() (CLI: inbedder-index build --instruction ...)"
            )
        return entry

    def add_entry(self, path: Path, instruction: str, fingerprint: str, dim: int, hnsw: bool,
                  answers: bool) -> dict[str, Any]:
        entry = {
            "instruction": instruction,
            "name": collection_name(name_prefix(path), self.index_id or "legacy", fingerprint, instruction),
            "fingerprint": fingerprint,
            "dim": dim,
            "hnsw": hnsw,
            "count": 0,
            "answers": answers,
            "created": now(),
            "updated": now(),
        }
        self.collections[instruction] = entry
        return entry

    def dumps(self) -> str:
        return json.dumps(self.data, sort_keys=True)
