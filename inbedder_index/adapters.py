"""LoRA adapters merged into their base once, kept as a plain model folder in the model cache.

Merging needs peft and costs seconds (importing peft alone takes longer than loading the merged
weights), so the first load of an adapter saves the merged model (safetensors, never pickle)
under ``<cache>/merged/<adapter>-<key>/`` and later loads read that folder like any model.

The key is a digest of the adapter's files, the base's files (or, for a hub base, its commit)
and the dtype, so a retrained adapter or a changed base gets a new entry. A file's digest is
remembered next to the entries while its size, modification time, change time (ctime, which
``os.utime`` cannot put back), inode and device are unchanged, so the key costs a few ``stat``
calls; a file changed in the last two seconds is hashed every time, since a second change
within one timestamp tick would leave all of those the same. The entry itself is checked on
every load against the record written with it (its key, and every file's name, size and full
sha256; no other file, no link): an entry that does not validate in any way, including a
malformed record, is removed and rebuilt, never used. Entries are written to a staging folder
and renamed into place, so a killed merge leaves nothing that looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import ModelNotAvailableError

logger = logging.getLogger(__name__)

_FORMAT = 1  # bumped when what an entry holds, or how its key is made, changes
_RECORD = "MERGED.json"
_DIGESTS = "digests.json"
_CHUNK = 4 * 2**20
_SETTLE_NS = 2 * 10**9  # a file changed more recently than this is not remembered (see the module)
_SHA256 = re.compile(r"[0-9a-f]{64}")
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


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _DigestMemo:
    """File digests remembered across processes while the file's size, mtime, ctime, inode and
    device stay the same; entries of any other shape are dropped (the file is hashed again)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            loaded: Any = json.loads(path.read_text())
        except FileNotFoundError:
            loaded = {}
        except (OSError, ValueError):
            loaded = None  # unreadable: replaced at the next save
        self.entries: dict[str, list[Any]] = {
            name: entry for name, entry in loaded.items()
            if isinstance(entry, list) and len(entry) == 6 and all(map(_is_count, entry[:5])) and _is_sha256(entry[5])
        } if isinstance(loaded, dict) else {}
        self.changed = not isinstance(loaded, dict) or len(self.entries) != len(loaded)

    def digest(self, file: Path) -> str:
        stat = file.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
        name = str(file.resolve())
        known = self.entries.get(name)
        if known is not None and known[:5] == stamp:
            return str(known[5])
        digest = sha256_file(file)
        if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) > _SETTLE_NS:
            self.entries[name] = [*stamp, digest]
            self.changed = True
        elif self.entries.pop(name, None) is not None:
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


@dataclass(frozen=True)
class _Written:
    """A file of an entry as it was when the entry was written."""

    size: int
    sha256: str


def _recorded_files(record: Any) -> dict[str, _Written] | None:
    """The record's ``files`` (plain names -> size and sha256), or None if they are not that."""
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not files:
        return None
    written = {}
    for name, about in files.items():
        if not isinstance(about, dict) or Path(name).name != name or name.startswith(".") or name == _RECORD \
                or not _is_count(about.get("size")) or not _is_sha256(about.get("sha256")):
            return None
        written[name] = _Written(about["size"], about["sha256"])
    return written


def _record_problem(entry: Path, key: str) -> tuple[str | None, dict[str, _Written]]:
    """The quick checks (a folder, its record, the key, exactly the recorded files at their
    recorded sizes): a problem, or None and the recorded files."""
    if entry.is_symlink() or (entry.exists() and not entry.is_dir()):
        return "it is a link or a file, not a folder of its own", {}
    try:
        record = json.loads((entry / _RECORD).read_text())
    except FileNotFoundError:
        return "missing", {}
    except (OSError, ValueError) as error:
        return f"unreadable {_RECORD} ({error})", {}
    if not isinstance(record, dict) or record.get("key") != key:
        return f"{_RECORD} does not match this adapter and base", {}
    files = _recorded_files(record)
    if files is None:
        return f"{_RECORD} does not list the entry's files with their sizes and sha256", {}
    unexpected = sorted(p.name for p in entry.iterdir() if (p.is_symlink() or p.is_file())
                        and p.name not in (*files, _RECORD) and not p.name.startswith("."))
    if unexpected:
        return f"it holds files that were never written to it ({', '.join(unexpected)})", {}
    for name, expected in files.items():
        file = entry / name
        if file.is_symlink() or not file.is_file():
            return f"{name} is missing" + (" (a link is there)" if file.is_symlink() else ""), {}
        if file.stat().st_size != expected.size:
            return f"{name} has {file.stat().st_size} bytes, {expected.size} were written", {}
    return None, files


def _content_problem(entry: Path, files: dict[str, _Written]) -> str | None:
    """The full check: every file's sha256 against the one recorded when the entry was written."""
    for name, expected in files.items():
        if sha256_file(entry / name) != expected.sha256:
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
        try:
            _remove(entry)
            os.replace(staging, entry)
        except OSError as error:  # not the hub's problem: say which folder is in the way
            raise ModelNotAvailableError(f"the merged-model cache entry {entry} cannot be replaced ({error}); "
                                         "remove it and load the model again") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _remove(path: Path) -> None:
    """Whatever is at ``path``: a link or a file (never what a link points to), or a folder."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _drop_stale(directory: Path, adapter: str, keep: Path) -> None:
    """Remove the entries of earlier versions of the same adapter folder (each is a whole model)."""
    for other in directory.iterdir():
        if other == keep or other.is_symlink() or not other.is_dir() or other.name.startswith("."):
            continue
        try:
            record = json.loads((other / _RECORD).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge: another version's build may be under way
        stale = isinstance(record, dict) and record.get("adapter") == adapter
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
