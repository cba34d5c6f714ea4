"""An on-disk cache of embeddings, so re-encoding unchanged texts costs nothing.

Rows are keyed by (model key, instruction, sha256 of the text). The model key is the
encoder's fingerprint plus the settings that change its vectors (``max_length``), so a
cache can be shared by several models safely. Vectors are stored unnormalised as raw
float32 bytes (never pickled). SQLite in WAL mode lets several processes read while one
writes; writes are single transactions.

A row is checked when it is read (its length for the model's dimension, float32, finite; the
answer text or nothing): a file written by another program or damaged on disk must not hand
the encoder a vector it never computed. A bad row is a miss (logged with the file and row, and
counted in ``bad_rows``), so the encoder computes it again and overwrites it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import EmbeddingCacheError

logger = logging.getLogger(__name__)

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
        try:
            with self._readable():
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(_SCHEMA)
                self._db.commit()
        except EmbeddingCacheError:
            self._db.close()
            raise
        self.bad_rows = 0  # rows read back that failed their check (each was treated as a miss)

    def get(
        self, model_key: str, instruction: str, hashes: Sequence[str], *, dim: int, need_answers: bool = False
    ) -> dict[str, tuple[np.ndarray, str | None]]:
        """The cached rows among ``hashes`` whose vector has ``dim`` values (rows without an answer
        count as missing when answers are needed; bad rows count as missing, see the module)."""
        found: dict[str, tuple[np.ndarray, str | None]] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            with self._readable():
                rows = self._db.execute(
                    f"SELECT text_sha256, vector, answer FROM embeddings "
                    f"WHERE model_key = ? AND instruction = ? AND text_sha256 IN ({marks})",
                    (model_key, instruction, *chunk),
                ).fetchall()
            for digest, blob, answer in rows:
                vector = self._checked(digest, blob, answer, dim, model_key, instruction)
                if vector is None or (need_answers and answer is None):
                    continue
                found[digest] = (vector, answer)
        return found

    @contextlib.contextmanager
    def _readable(self) -> Iterator[None]:
        """SQLite's own errors (not a database, a damaged page) named with the file and what to do."""
        try:
            yield
        except sqlite3.OperationalError as error:  # locked past the timeout, no permission, disk full
            raise EmbeddingCacheError(f"the embedding cache {self.path} cannot be used ({error})") from error
        except sqlite3.DatabaseError as error:  # not a database, or a damaged page
            raise EmbeddingCacheError(
                f"the embedding cache {self.path} is damaged or not an embedding cache ({error}); it holds only "
                "vectors that can be computed again: delete it (with its -wal and -shm files) or give another "
                "path") from error

    def _checked(self, digest: str, blob: object, answer: object, dim: int, model_key: str,
                 instruction: str) -> np.ndarray | None:
        """The row's vector, or None (logged and counted) when the row is not one this cache wrote."""
        if not isinstance(blob, bytes):
            problem = f"its vector is a {type(blob).__name__}, not float32 bytes"
        elif len(blob) != dim * 4:
            problem = f"its vector has {len(blob)} bytes; {dim} float32 values take {dim * 4}"
        elif answer is not None and not isinstance(answer, str):
            problem = f"its answer is a {type(answer).__name__}, not text"
        else:
            vector = np.frombuffer(blob, dtype=np.float32)
            if np.isfinite(vector).all():
                return vector
            problem = "its vector holds NaN or infinite values"
        self.bad_rows += 1
        logger.warning("ignoring row (model %s, instruction %r, text sha256 %s) of the embedding cache %s: %s; "
                       "it is encoded again and overwritten", model_key, instruction, digest, self.path, problem)
        return None

    def put(
        self,
        model_key: str,
        instruction: str,
        hashes: Sequence[str],
        vectors: np.ndarray,
        answers: Sequence[str | None] | None = None,
    ) -> None:
        """Store rows; an existing row keeps its answer (if it is text) when the new one has none."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        answer_list: Sequence[str | None] = answers if answers is not None else [None] * len(hashes)
        if vectors.ndim != 2 or len(vectors) != len(hashes) or len(answer_list) != len(hashes):
            raise ValueError(f"{len(hashes)} text hashes need as many vectors and answers; got vectors of shape "
                             f"{vectors.shape} and {len(answer_list)} answers (nothing was written to {self.path})")
        rows = [
            (model_key, instruction, digest, vector.tobytes(), answer)
            for digest, vector, answer in zip(hashes, vectors, answer_list)
        ]
        with self._readable(), self._db:
            self._db.executemany(
                "INSERT INTO embeddings VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (model_key, instruction, text_sha256) DO UPDATE SET "
                "vector = excluded.vector, answer = COALESCE(excluded.answer, "
                "CASE typeof(embeddings.answer) WHEN 'text' THEN embeddings.answer END)",  # a bad answer goes
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
