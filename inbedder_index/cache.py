"""An on-disk cache of embeddings, so re-encoding unchanged texts costs nothing.

Rows are keyed by (model key, instruction, sha256 of the text). The model key is the
encoder's fingerprint plus the settings that change its vectors (``max_length``), so a
cache can be shared by several models safely. Vectors are stored unnormalised as raw
float32 bytes (never pickled). SQLite in WAL mode lets several processes read while one
writes; writes are single transactions.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model_key TEXT NOT NULL,
    instruction TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    vector BLOB NOT NULL,
    answer TEXT,
    PRIMARY KEY (model_key, instruction, text_sha256)
) WITHOUT ROWID
"""
_CHUNK = 500  # SQLite's bound-parameter limit is 999 on old builds


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Vectors (and optional short answers) of texts already encoded under an instruction."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        if self.path.is_dir() or not self.path.suffix:
            self.path = self.path / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def get(
        self, model_key: str, instruction: str, hashes: Sequence[str], *, need_answers: bool = False
    ) -> dict[str, tuple[np.ndarray, str | None]]:
        """The cached rows among ``hashes`` (rows without an answer count as missing when answers are needed)."""
        found: dict[str, tuple[np.ndarray, str | None]] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT text_sha256, vector, answer FROM embeddings "
                f"WHERE model_key = ? AND instruction = ? AND text_sha256 IN ({marks})",
                (model_key, instruction, *chunk),
            )
            for digest, blob, answer in rows:
                if need_answers and answer is None:
                    continue
                found[digest] = (np.frombuffer(blob, dtype=np.float32), answer)
        return found

    def put(
        self,
        model_key: str,
        instruction: str,
        hashes: Sequence[str],
        vectors: np.ndarray,
        answers: Sequence[str | None] | None = None,
    ) -> None:
        """Store rows; an existing row keeps its answer when the new one has none."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        answer_list: Iterable[str | None] = answers if answers is not None else [None] * len(hashes)
        rows = [
            (model_key, instruction, digest, vector.tobytes(), answer)
            for digest, vector, answer in zip(hashes, vectors, answer_list)
        ]
        with self._db:
            self._db.executemany(
                "INSERT INTO embeddings VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (model_key, instruction, text_sha256) DO UPDATE SET "
                "vector = excluded.vector, answer = COALESCE(excluded.answer, embeddings.answer)",
                rows,
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def stats(self) -> Mapping[str, int]:
        rows = self._db.execute("SELECT instruction, COUNT(*) FROM embeddings GROUP BY instruction")
        return dict(rows.fetchall())

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
