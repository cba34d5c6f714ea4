"""A model's fingerprint without loading it: remembered per source while the source's files are unchanged.

The fingerprint is a digest of all the weights (``pytorch.weights_digest``), so computing it
needs the model in memory. Once computed, it is remembered under ``<cache>/onnx/sources/`` for
the files it came from: the folders a name, folder or hub id resolves to (an adapter's and its
base's), each file's size, inode, modification and status-change times. A file rewritten in
place changes its status-change time (which, unlike the modification time, no user can set
back), so a changed model is loaded and fingerprinted again, never mistaken for the old one.

This is what lets ``InBedder(name)`` find its exported graph without importing torch: resolve
the name to folders (a few ``stat`` calls), recall the fingerprint, open the graph.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelNotAvailableError

logger = logging.getLogger(__name__)

_FORMAT = 1
_FINGERPRINT = re.compile(r"[0-9a-f]{32}")
_KINDS = ("causal", "masked")


@dataclass(frozen=True)
class Source:
    """What a model name resolves to on this machine, and the state of its files now."""

    descriptor: dict[str, Any]  # the request (model, revision, pooling) and the folders it resolves to
    signature: list[list[Any]]  # per file: [folder index, name, size, inode, mtime_ns, ctime_ns]

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.descriptor, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Known:
    """A source's fingerprint and kind, as remembered."""

    fingerprint: str
    kind: str


def _hub_folder(repo: str, revision: str | None, cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """The local snapshot of a hub model, if it was downloaded (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    found = try_to_load_from_cache(repo, "config.json", cache_dir=str(cache_dir) if cache_dir is not None else None,
                                   revision=revision)
    return Path(found).parent if isinstance(found, str) else None


def _folders(source: str, revision: str | None, cache_dir: str | os.PathLike[str] | None) -> list[Path] | None:
    """The folders a resolved source loads from: its own and, for an adapter, its base's."""
    from ..models import _resolve  # the loader's own resolution of names, so both agree

    folder = Path(source) if Path(source).is_dir() else _hub_folder(source, revision, cache_dir)
    if folder is None:
        return None
    folders = [folder.resolve()]
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        try:
            base_name = json.loads(adapter.read_text())["base_model_name_or_path"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # the loader says what is wrong with it
        base_ref = folder / str(base_name)
        base = _folders(*_resolve(str(base_ref) if base_ref.is_dir() else str(base_name), None, cache_dir),
                        cache_dir)
        if base is None:
            return None
        folders += base
    return folders


def _signature(folders: list[Path]) -> list[list[Any]]:
    rows = []
    for index, folder in enumerate(folders):
        for file in sorted(folder.iterdir()):
            if file.name.startswith(".") or not file.is_file():
                continue
            stat = file.stat()
            rows.append([index, file.name, stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns])
    return rows


def locate(model: str, *, revision: str | None, cache_dir: str | os.PathLike[str] | None, n_mask: int) -> Source | None:
    """The source ``model`` loads from, or None where that cannot be told without loading it."""
    from ..models import _resolve, resolve_name

    name = resolve_name(model)
    try:
        source, resolved_revision = _resolve(name, revision, cache_dir)
        folders = _folders(source, resolved_revision, cache_dir)
    except (ModelNotAvailableError, OSError, ValueError) as error:  # the loader reports these properly
        logger.debug("cannot tell what %s loads without loading it: %s", model, error)
        return None
    if folders is None:
        return None
    descriptor = {"model": name, "revision": resolved_revision, "n_mask": n_mask,
                  "folders": [str(folder) for folder in folders]}
    return Source(descriptor, _signature(folders))


def _memo(root: Path, source: Source) -> Path:
    return root / "onnx" / "sources" / f"{source.key}.json"


def _checksum(data: dict[str, Any]) -> str:
    body = {key: value for key, value in data.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def recall(root: Path, source: Source) -> Known | None:
    """The fingerprint remembered for ``source`` if its files are exactly as they were then."""
    try:
        data = json.loads(_memo(root, source).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("checksum") != _checksum(data):
        logger.debug("ignoring the invalid fingerprint memo %s", _memo(root, source))
        return None
    if data.get("descriptor") != source.descriptor or data.get("signature") != source.signature:
        return None  # another source, or its files changed since
    fingerprint, kind = data.get("fingerprint"), data.get("kind")
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint) or kind not in _KINDS:
        return None
    return Known(fingerprint, kind)


def remember(root: Path, source: Source, known: Known) -> None:
    """Best effort: a memo that cannot be written only means the next load fingerprints again."""
    data: dict[str, Any] = {"format": _FORMAT, "descriptor": source.descriptor, "signature": source.signature,
                            "fingerprint": known.fingerprint, "kind": known.kind}
    data["checksum"] = _checksum(data)
    path = _memo(root, source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as error:
        logger.debug("could not save %s: %s", path, error)
