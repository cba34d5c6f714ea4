"""File access inside an index folder that a crafted folder cannot redirect.

An index folder is untrusted input (it may come from a download or another user): a symlinked
``lock`` must not make an open truncate the file it points to, and a symlinked ``faiss/``
plus an edited collection name must not make ``drop`` delete a folder elsewhere. Every path
below the index root is built here, refusing links and anything that resolves outside it.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .errors import UnsafePathError


def inside(root: Path, *parts: str) -> Path:
    """``root / parts``, refusing a symbolic link at any level below ``root`` or an escape from it."""
    base = root.resolve()
    path = base
    for part in parts:
        if not part or part in (".", "..") or "/" in part or os.sep in part:
            raise UnsafePathError(f"{part!r} is not a plain name inside {root}")
        path = path / part
        if path.is_symlink():
            raise UnsafePathError(f"{path} is a symbolic link; an index folder may not contain links "
                                  "(remove it, or rebuild the index)")
    if path.resolve() != path or base not in path.resolve().parents:
        raise UnsafePathError(f"{path} leads outside the index folder {root}")
    return path


def open_regular(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a link and only accepts a regular file."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if path.is_symlink():
            raise UnsafePathError(f"{path} is a symbolic link; refusing to open it (remove it)") from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"{path} is not a regular file; refusing to open it")
    return fd


def remove_tree(root: Path, *parts: str) -> None:
    """Delete a folder inside ``root``; never through a link, never outside ``root``."""
    path = inside(root, *parts)
    if path.exists():
        shutil.rmtree(path)
