"""LoRA adapters merged into their base once, kept as a plain model folder in the model cache.

Merging needs peft and costs seconds (importing peft alone takes longer than loading the merged
weights), so the first load of an adapter saves the merged model (safetensors, never pickle)
under ``<cache>/merged/<adapter>-<key>/`` and later loads read that folder like any model.

The key is a digest of the adapter's files, the base's files (or, for a hub base, its commit)
and the dtype, so a retrained adapter or a changed base gets a new entry. A file's digest is
remembered next to the entries while its size, modification time and inode are unchanged, so
the key costs a few ``stat`` calls. The entry itself is checked on every load against the
digests recorded when it was written (sizes and full sha256): a partial or corrupt entry is
removed and rebuilt, never used. Entries are written to a staging folder and renamed into
place, so a killed merge leaves nothing that looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

_FORMAT = 1  # bumped when what an entry holds, or how its key is made, changes
_RECORD = "MERGED.json"
_DIGESTS = "digests.json"
_CHUNK = 4 * 2**20
_T = TypeVar("_T")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock so two processes never build the same cache entry at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):  # hashlib releases the GIL on chunks this large
            digest.update(chunk)
    return digest.hexdigest()


class _DigestMemo:
    """File digests remembered across processes while the file's size, mtime and inode stay the same."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.entries: dict[str, list[Any]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def digest(self, file: Path) -> str:
        stat = file.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        name = str(file.resolve())
        known = self.entries.get(name)
        if isinstance(known, list) and known[:3] == stamp:
            return str(known[3])
        digest = sha256_file(file)
        self.entries[name] = [*stamp, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        """Best effort: a lost update only means a file is hashed again next time."""
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.path)
        except OSError as error:
            logger.debug("could not save %s: %s", self.path, error)


def _folder_files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))


def _digest_of(folder: Path, files: list[Path], memo: _DigestMemo) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(folder)}\0{memo.digest(file)}\n".encode())
    return digest.hexdigest()


def _base_identity(base: str, revision: str | None, memo: _DigestMemo, cache_dir: str | os.PathLike[str] | None) -> str:
    """A local base: its files' digest. A hub base: its id and the commit the hub resolved."""
    folder = Path(base)
    if folder.is_dir():
        return "files:" + _digest_of(folder, _folder_files(folder), memo)
    from transformers.utils import cached_file

    config = Path(cached_file(base, "config.json", revision=revision,
                              cache_dir=str(cache_dir) if cache_dir is not None else None))
    return f"hub:{base}@{config.parent.name}"  # hub snapshots are folders named by commit hash


def _record_problem(entry: Path, key: str) -> tuple[str | None, dict[str, Any]]:
    """The quick checks (record, key, every file present at its recorded size): a problem, or None."""
    try:
        record = json.loads((entry / _RECORD).read_text())
    except FileNotFoundError:
        return "missing", {}
    except (OSError, ValueError) as error:
        return f"unreadable {_RECORD} ({error})", {}
    files = record.get("files")
    if record.get("key") != key or not isinstance(files, dict) or not files:
        return f"{_RECORD} does not match this adapter and base", {}
    for name, expected in files.items():
        file = entry / name
        if not file.is_file():
            return f"{name} is missing", {}
        if file.stat().st_size != expected.get("size"):
            return f"{name} has {file.stat().st_size} bytes, {expected.get('size')} were written", {}
    return None, files


def _content_problem(entry: Path, files: dict[str, Any]) -> str | None:
    """The full check: every file's sha256 against the one recorded when the entry was written."""
    for name, expected in files.items():
        if sha256_file(entry / name) != expected.get("sha256"):
            return f"{name} does not match its recorded sha256"
    return None


def _problem(entry: Path, key: str) -> str | None:
    problem, files = _record_problem(entry, key)
    return problem or _content_problem(entry, files)


def _checked_load(entry: Path, key: str, load: Callable[[Path], _T]) -> tuple[_T | None, str | None]:
    """Load the entry while its files are hashed in a thread (hashing releases the GIL, so the
    check costs next to nothing beside the load): the loaded model, or None and the problem."""
    problem, files = _record_problem(entry, key)
    if problem is not None:
        return None, problem
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-merged") as pool:
        checking = pool.submit(_content_problem, entry, files)
        try:
            loaded, error = load(entry), None
        except Exception as failure:  # a corrupt file can break the load: the check says which
            loaded, error = None, failure
        problem = checking.result()
    if problem is None and error is not None:
        raise error
    return (loaded, None) if problem is None else (None, problem)


def _write(entry: Path, key: str, about: dict[str, Any], save: Callable[[Path], None]) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".merge-", dir=entry.parent))
    try:
        save(staging)
        files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in _folder_files(staging)}
        if not any(name.endswith(".safetensors") for name in files):
            raise RuntimeError(f"merging wrote no safetensors weights into {staging}")
        (staging / _RECORD).write_text(json.dumps({**about, "key": key, "files": files}, indent=2))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(staging, entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _drop_stale(directory: Path, adapter: str, keep: Path) -> None:
    """Remove the entries of earlier versions of the same adapter folder (each is a whole model)."""
    for other in directory.iterdir():
        if other == keep or not other.is_dir() or other.name.startswith("."):
            continue
        try:
            stale = json.loads((other / _RECORD).read_text()).get("adapter") == adapter
        except (OSError, ValueError):
            continue  # not ours to judge: another version's build may be under way
        if stale:
            logger.info("removing %s, merged from an earlier version of %s", other, adapter)
            shutil.rmtree(other, ignore_errors=True)


def load_merged(
    adapter: Path,
    base: str,
    *,
    base_revision: str | None,
    dtype: str,
    root: Path,
    cache_dir: str | os.PathLike[str] | None,
    save_merged: Callable[[Path], None],
    load: Callable[[Path], _T],
) -> _T:
    """``load(folder)`` of ``adapter`` merged into ``base`` in ``dtype``, merging (once) if needed.

    ``save_merged(folder)`` must write the merged model and its tokenizer into ``folder``
    (``save_pretrained``: safetensors); ``load(folder)`` loads such a folder. ``root`` is the
    model cache.
    """
    directory = root / "merged"
    memo = _DigestMemo(directory / _DIGESTS)
    adapter_digest = _digest_of(adapter, _folder_files(adapter, "adapter_*"), memo)
    base_id = _base_identity(base, base_revision, memo, cache_dir)
    memo.save()
    identity = {"format": _FORMAT, "adapter_digest": adapter_digest, "base_id": base_id, "dtype": dtype}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    entry = directory / f"{adapter.resolve().name}-{key[:16]}"
    loaded, problem = _checked_load(entry, key, load)
    if loaded is not None:
        return loaded
    with file_lock(directory / f".{entry.name}.lock"):
        if _problem(entry, key) is not None:  # else another process (re)built it while we waited
            if problem != "missing":
                logger.warning("the merged-model cache entry %s is unusable (%s); rebuilding it", entry, problem)
            logger.info("merging adapter %s into %s once; later loads read %s", adapter, base, entry)
            record = {**identity, "adapter": str(adapter.resolve()), "base": base}
            _write(entry, key, record, save_merged)
            _drop_stale(directory, record["adapter"], keep=entry)
    return load(entry)
