"""The documents of an index, stored once in SQLite whatever the number of instructions.

Every collection (one per instruction) holds vectors of the same documents, so texts and
metadata live here, once, in ``corpus.sqlite``: WAL mode, a busy timeout, metadata as JSON
text, nothing pickled.  It also keeps, per (collection, document), what the vector stores
cannot: the encoder's short answer, and the hash of the text the stored vector was computed
from (so an interrupted or outdated collection knows exactly what to re-encode), plus a small
key-value ``meta`` table for the index manifest.

Every write is one transaction and validates its whole input first, so bad input writes
nothing.  :meth:`Corpus.transaction` lets a caller group several writes (e.g. documents and
the manifest) atomically; nested calls become savepoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ._util import chunked, validate_ids
from .backends.base import validate_filter
from .errors import CorpusError
from .limits import check_metadata

logger = logging.getLogger(__name__)

CORPUS_FILENAME = "corpus.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
_SQL_CHUNK = 500  # ids per IN (...) clause, well below SQLite's variable limit

_SCHEMA = (
    """CREATE TABLE documents (
        seq INTEGER PRIMARY KEY,  -- insertion order, kept when a document is replaced
        id TEXT NOT NULL UNIQUE,
        text TEXT NOT NULL,
        text_hash TEXT NOT NULL,
        metadata TEXT NOT NULL CHECK (json_valid(metadata))
    )""",
    """CREATE TABLE answers (
        collection TEXT NOT NULL,
        doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        answer TEXT NOT NULL,
        PRIMARY KEY (collection, doc_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX answers_by_doc ON answers(doc_id)",
    """CREATE TABLE embedded (
        collection TEXT NOT NULL,
        doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        text_hash TEXT NOT NULL,  -- hash of the text the stored vector was computed from
        PRIMARY KEY (collection, doc_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX embedded_by_doc ON embedded(doc_id)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)


@dataclass(frozen=True)
class Document:
    """A document of the corpus; ``metadata`` must be JSON-serialisable."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text_hash(self) -> str:
        """sha256 of the text: a changed hash means the document must be re-encoded."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


DocumentLike = Document | Mapping[str, Any] | tuple[str, str]
"""What the index's writes accept for a document."""


def as_document(item: DocumentLike, position: int) -> Document:
    """A ``Document`` from a Document, a ``{"id", "text", "metadata"}`` mapping or an ``(id, text)`` pair."""
    if isinstance(item, Document):
        return item
    if isinstance(item, Mapping):
        missing = [key for key in ("id", "text") if key not in item]
        if missing:
            raise ValueError(f"document {position} has no {' or '.join(missing)!r} field")
        return Document(item["id"], item["text"], dict(item.get("metadata") or {}))
    if isinstance(item, tuple) and len(item) == 2:
        return Document(item[0], item[1])
    raise TypeError(f"document {position} is a {type(item).__name__}; give a Document, a mapping or an (id, text) pair")


def as_documents(docs: Iterable[DocumentLike]) -> list[Document]:
    """``as_document`` for each of a list; a single document (or string) is refused, not iterated."""
    if isinstance(docs, (str, bytes, Mapping, Document)):
        raise TypeError(f"give a list of documents, not a single {type(docs).__name__}")
    return [as_document(item, position) for position, item in enumerate(docs)]


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def _describe(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(map(repr, ids[:limit]))
    return shown if len(ids) <= limit else f"{shown} and {len(ids) - limit} more"


def _row(position: int, doc: Any) -> tuple[str, str, str, str]:
    """A document as ``(id, text, text_hash, metadata JSON)``, or an error naming its position."""
    if not isinstance(doc, Document):
        raise TypeError(f"document {position}: expected a Document, got {type(doc).__name__}")
    if not isinstance(doc.id, str):
        raise TypeError(f"document {position}: id must be a str, got {type(doc.id).__name__}")
    if not doc.id:
        raise ValueError(f"document {position}: id is empty")
    where = f"document {position} (id {doc.id!r})"
    if not isinstance(doc.text, str):
        raise TypeError(f"{where}: text must be a str, got {type(doc.text).__name__}")
    if not isinstance(doc.metadata, dict):
        raise TypeError(f"{where}: metadata must be a dict, got {type(doc.metadata).__name__}")
    check_metadata(where, doc.metadata)  # storable, filterable and returnable on every backend
    try:
        metadata = json.dumps(doc.metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: metadata is not JSON-serialisable: {exc}") from exc
    try:
        doc.id.encode("utf-8")
        text_hash = doc.text_hash
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where}: id or text is not valid Unicode: {exc}") from exc
    return doc.id, doc.text, text_hash, metadata


def _rows(docs: Sequence[Document]) -> list[tuple[str, str, str, str]]:
    if isinstance(docs, Document):
        raise TypeError("pass a sequence of Documents, not a single Document")
    rows = [_row(position, doc) for position, doc in enumerate(docs)]
    duplicates = [doc_id for doc_id, n in Counter(row[0] for row in rows).items() if n > 1]
    if duplicates:
        raise ValueError(f"duplicate ids in one call: {_describe(duplicates)}")
    return rows


def _check_str(label: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{label} must be a str, got {type(value).__name__}")


class Corpus:
    """Documents, per-collection answers and manifest metadata of one index, in SQLite."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        self._savepoints = 0
        with self._sql_errors():
            self._conn = self._connect()
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if not read_only:
                    self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA foreign_keys = ON")
                self._migrate()
            except BaseException:
                self._conn.close()
                raise

    def _connect(self) -> sqlite3.Connection:
        """Autocommit connection (transactions are explicit, see transaction()).

        Read-only opens never create or change a file: ``mode=ro``, or ``immutable=1`` on a
        read-only file system, where no writer can exist and SQLite could not create the WAL
        index file it otherwise needs.
        """
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if not self.path.is_file():
            raise CorpusError(f"{self.path} does not exist; there is no index here to read")
        mode = "immutable=1" if _read_only_fs(self.path.parent) else "mode=ro"
        uri = f"{self.path.resolve().as_uri()}?{mode}"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)

    @contextmanager
    def _sql_errors(self) -> Iterator[None]:
        """SQLite's failures as one CorpusError that names the file and what to do."""
        try:
            yield
        except sqlite3.Error as exc:
            message = str(exc)
            if "full" in message:
                advice = "the disk is full; free space and run the command again (the failed write was rolled back)"
            elif "readonly" in message or "unable to open" in message:
                advice = ("it cannot be opened for this operation: check that the folder and file exist and "
                          "are readable (and writable, to change the index) by this user")
            elif "not a database" in message or "malformed" in message:
                advice = "it is not a readable inbedder corpus (truncated or overwritten?); restore it from a backup"
            elif "closed" in message:
                advice = "the index was closed; open it again"
            else:
                advice = "SQLite refused the operation"
            raise CorpusError(f"{self.path}: {advice} (SQLite: {message})") from exc

    @contextmanager
    def _guard(self) -> Iterator[None]:
        with self._lock, self._sql_errors():
            yield

    def _migrate(self) -> None:
        if self.read_only:
            with self._guard():
                (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            if version != SCHEMA_VERSION:
                raise CorpusError(f"{self.path} has corpus schema version {version}; this library reads "
                                  f"version {SCHEMA_VERSION}")
            return
        with self.transaction():
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            if version == 0:
                # One statement at a time: executescript() would commit the open transaction.
                for statement in _SCHEMA:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                logger.debug("created corpus schema v%d in %s", SCHEMA_VERSION, self.path)
            elif version != SCHEMA_VERSION:
                raise CorpusError(
                    f"{self.path} has corpus schema version {version}; this library reads version "
                    f"{SCHEMA_VERSION}"
                )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._guard():
            self._conn.close()

    def __enter__(self) -> Corpus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block atomically (``BEGIN IMMEDIATE``); nested blocks are savepoints.

        An exception rolls back the block and propagates.  Other threads using this corpus
        wait until the outermost block ends.
        """
        if self.read_only:
            raise CorpusError(f"{self.path} is open read-only; open the index without read_only=True to change it")
        with self._guard():
            conn = self._conn
            if conn.in_transaction:
                self._savepoints += 1
                savepoint = f"sp{self._savepoints}"
                conn.execute(f"SAVEPOINT {savepoint}")
                try:
                    yield
                except BaseException:
                    conn.execute(f"ROLLBACK TO {savepoint}")
                    conn.execute(f"RELEASE {savepoint}")
                    raise
                conn.execute(f"RELEASE {savepoint}")
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ documents

    def upsert(self, docs: Sequence[Document]) -> list[str]:
        """Insert or replace documents; return the ids whose text is new or changed.

        Only those need (re-)encoding: a metadata-only change is saved but not returned.  The
        stored answers of a document whose text changed are deleted, since they describe the
        old text.
        """
        rows = _rows(docs)
        with self.transaction():
            stored = self._hashes([row[0] for row in rows])
            changed = [doc_id for doc_id, _, text_hash, _ in rows if stored.get(doc_id) != text_hash]
            self._conn.executemany(
                "INSERT INTO documents (id, text, text_hash, metadata) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET text = excluded.text, "
                "text_hash = excluded.text_hash, metadata = excluded.metadata",
                rows,
            )
            self._delete_where("answers", "doc_id", [doc_id for doc_id in changed if doc_id in stored])
        return changed

    def add(self, docs: Sequence[Document]) -> list[str]:
        """Insert new documents and return their ids; raise CorpusError if any id exists."""
        rows = _rows(docs)
        with self.transaction():
            self.refuse_existing([row[0] for row in rows])
            self._conn.executemany(
                "INSERT INTO documents (id, text, text_hash, metadata) VALUES (?, ?, ?, ?)", rows
            )
        return [row[0] for row in rows]

    def refuse_existing(self, ids: Sequence[str]) -> None:
        """Raise CorpusError naming the ids that are already stored (``add`` takes new ids only)."""
        existing = list(self._hashes(ids))
        if existing:
            raise CorpusError(f"documents already exist: {_describe(existing)}")

    def delete(self, ids: Collection[str]) -> list[str]:
        """Delete documents (with their answers and embedded records); return the ids that existed."""
        wanted = list(dict.fromkeys(validate_ids(ids)))
        with self.transaction():
            existing = self._hashes(wanted)
            self._delete_where("documents", "id", list(existing))
        return [doc_id for doc_id in wanted if doc_id in existing]

    def get(self, ids: Sequence[str]) -> list[Document]:
        """Documents in the given order; missing ids are skipped."""
        wanted = validate_ids(ids)
        found: dict[str, Document] = {}
        with self._guard():
            for chunk in chunked(list(dict.fromkeys(wanted)), _SQL_CHUNK):
                rows = self._conn.execute(
                    f"SELECT id, text, metadata FROM documents WHERE id IN ({_placeholders(len(chunk))})",
                    chunk,
                )
                found.update((row[0], self._document(row)) for row in rows)
        return [found[doc_id] for doc_id in wanted if doc_id in found]

    def __contains__(self, doc_id: object) -> bool:
        if not isinstance(doc_id, str):
            return False
        with self._guard():
            return self._conn.execute("SELECT 1 FROM documents WHERE id = ?", (doc_id,)).fetchone() is not None

    def __len__(self) -> int:
        with self._guard():
            return self._conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]

    def ids(self) -> list[str]:
        """Every document id, in insertion order."""
        with self._guard():
            return [row[0] for row in self._conn.execute("SELECT id FROM documents ORDER BY seq")]

    def iter_batches(self, batch_size: int, ids: Collection[str] | None = None) -> Iterator[list[Document]]:
        """Stream documents (all, or those of ``ids`` that exist) in insertion order.

        Pages are read one at a time (keyset pagination), no read transaction stays open
        between batches, and writes made meanwhile are seen by later pages.  Arguments are
        checked here, not at the first ``next()``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if ids is None:
            return self._iter_all(batch_size)
        return self._iter_seqs(batch_size, self._seqs(list(dict.fromkeys(validate_ids(ids)))))

    def _seqs(self, ids: Sequence[str]) -> list[int]:
        """Insertion positions of the ids that exist, in order."""
        seqs: list[int] = []
        with self._guard():
            for chunk in chunked(ids, _SQL_CHUNK):
                rows = self._conn.execute(
                    f"SELECT seq FROM documents WHERE id IN ({_placeholders(len(chunk))})", chunk
                )
                seqs.extend(row[0] for row in rows)
        return sorted(seqs)

    def _iter_seqs(self, batch_size: int, seqs: list[int]) -> Iterator[list[Document]]:
        for page in chunked(seqs, batch_size):
            batch: list[Document] = []
            with self._guard():
                for chunk in chunked(page, _SQL_CHUNK):
                    rows = self._conn.execute(
                        "SELECT id, text, metadata FROM documents "
                        f"WHERE seq IN ({_placeholders(len(chunk))}) ORDER BY seq",
                        chunk,
                    )
                    batch.extend(self._document(row) for row in rows)
            if batch:  # documents deleted since the call are skipped
                yield batch

    def _iter_all(self, batch_size: int) -> Iterator[list[Document]]:
        last_seq = -1
        while True:
            with self._guard():
                rows = self._conn.execute(
                    "SELECT seq, id, text, metadata FROM documents WHERE seq > ? ORDER BY seq LIMIT ?",
                    (last_seq, batch_size),
                ).fetchall()
            if not rows:
                return
            last_seq = rows[-1][0]
            yield [self._document(row[1:]) for row in rows]

    def ids_matching(self, filter: Mapping[str, Any] | None) -> set[str]:
        """Ids of the documents whose metadata satisfies a filter.

        SQL twin of :func:`~inbedder_index.backends.base.filter_matches`: ``json_each`` yields
        a scalar once or each element of a list, and ``json_type`` keeps bools, numbers and
        strings apart.
        """
        clauses: list[str] = []
        params: list[Any] = []
        for name, values in validate_filter(filter).items():
            path = f'$."{name}"'
            alternatives: list[str] = []
            params.extend((path, path))
            for value in values:
                if isinstance(value, bool):
                    alternatives.append("e.type = ?")
                    params.append("true" if value else "false")
                elif isinstance(value, (int, float)):
                    alternatives.append("(e.type IN ('integer', 'real') AND e.value = ?)")
                    params.append(value)
                else:
                    alternatives.append("(e.type = 'text' AND e.value = ?)")
                    params.append(value)
            clauses.append(
                "EXISTS (SELECT 1 FROM json_each(d.metadata, ?) AS e "
                f"WHERE json_type(d.metadata, ?) != 'object' AND ({' OR '.join(alternatives)}))"
            )
        where = " AND ".join(clauses) or "1"
        with self._guard():
            return {row[0] for row in self._conn.execute(f"SELECT id FROM documents AS d WHERE {where}", params)}

    # ------------------------------------------------------------------ answers

    def set_answers(self, collection: str, answers: Mapping[str, str]) -> None:
        """Store the encoder's answers of one collection; every doc id must exist."""
        _check_str("collection", collection)
        for doc_id, answer in answers.items():
            _check_str("answer document id", doc_id)
            _check_str(f"answer for {doc_id!r}", answer)
        with self.transaction():
            existing = self._hashes(list(answers))
            missing = [doc_id for doc_id in answers if doc_id not in existing]
            if missing:
                raise CorpusError(f"answers for documents not in the corpus: {_describe(missing)}")
            self._conn.executemany(
                "INSERT INTO answers (collection, doc_id, answer) VALUES (?, ?, ?) "
                "ON CONFLICT (collection, doc_id) DO UPDATE SET answer = excluded.answer",
                [(collection, doc_id, answer) for doc_id, answer in answers.items()],
            )

    def get_answers(self, collection: str, ids: Collection[str]) -> dict[str, str]:
        """Stored answers of ``collection`` for the ids that have one."""
        _check_str("collection", collection)
        wanted = list(dict.fromkeys(validate_ids(ids)))
        found: dict[str, str] = {}
        with self._guard():
            for chunk in chunked(wanted, _SQL_CHUNK):
                rows = self._conn.execute(
                    "SELECT doc_id, answer FROM answers "
                    f"WHERE collection = ? AND doc_id IN ({_placeholders(len(chunk))})",
                    [collection, *chunk],
                )
                found.update(rows)
        return found

    def iter_answers(self, collection: str, batch_size: int = 10_000) -> Iterator[list[tuple[str, str]]]:
        """Every stored answer of ``collection`` as pages of ``(doc id, answer)``, in id order.

        Only answers of current texts are stored (``upsert`` deletes those of a changed text), and
        no read transaction stays open between pages.
        """
        _check_str("collection", collection)
        last = ""  # ids are never empty
        while True:
            with self._guard():
                rows = self._conn.execute(
                    "SELECT doc_id, answer FROM answers WHERE collection = ? AND doc_id > ? ORDER BY doc_id LIMIT ?",
                    (collection, last, batch_size),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield rows

    def drop_answers(self, collection: str) -> None:
        """Forget every answer of a collection (when the collection is dropped or rebuilt)."""
        _check_str("collection", collection)
        with self.transaction():
            self._conn.execute("DELETE FROM answers WHERE collection = ?", (collection,))

    # ------------------------------------------------------------------ per-collection state

    def mark_embedded(self, collection: str, hashes: Mapping[str, str]) -> None:
        """Record that ``collection`` durably holds vectors of these texts (doc id -> text hash).

        Call it only after the backend flushed the vectors.  Ids deleted from the corpus
        meanwhile are skipped: their vectors are orphans for the index to remove.
        """
        _check_str("collection", collection)
        for doc_id, text_hash in hashes.items():
            _check_str("embedded document id", doc_id)
            _check_str(f"text hash of {doc_id!r}", text_hash)
        with self.transaction():
            existing = self._hashes(list(hashes))
            self._conn.executemany(
                "INSERT INTO embedded (collection, doc_id, text_hash) VALUES (?, ?, ?) "
                "ON CONFLICT (collection, doc_id) DO UPDATE SET text_hash = excluded.text_hash",
                [(collection, doc_id, text_hash) for doc_id, text_hash in hashes.items() if doc_id in existing],
            )

    def stale_ids(self, collection: str, ids: Collection[str] | None = None) -> list[str]:
        """Ids (insertion order) whose vector in ``collection`` is missing or from another text.

        ``ids`` narrows the check to those documents; unknown ids are skipped.
        """
        _check_str("collection", collection)
        query = (
            "SELECT d.seq, d.id FROM documents AS d "
            "LEFT JOIN embedded AS e ON e.collection = ? AND e.doc_id = d.id "
            "WHERE (e.text_hash IS NULL OR e.text_hash != d.text_hash)"
        )
        with self._guard():
            if ids is None:
                rows = self._conn.execute(query, (collection,)).fetchall()
            else:
                rows = []
                for chunk in chunked(list(dict.fromkeys(validate_ids(ids))), _SQL_CHUNK):
                    rows += self._conn.execute(
                        f"{query} AND d.id IN ({_placeholders(len(chunk))})", [collection, *chunk]
                    ).fetchall()
        return [doc_id for _, doc_id in sorted(rows)]

    def pending_count(self, collection: str) -> int:
        """How many documents lack an up-to-date vector in ``collection`` (0: it is complete)."""
        _check_str("collection", collection)
        with self._guard():
            return self._conn.execute(
                "SELECT COUNT(*) FROM documents AS d LEFT JOIN embedded AS e "
                "ON e.collection = ? AND e.doc_id = d.id WHERE e.text_hash IS NULL OR e.text_hash != d.text_hash",
                (collection,),
            ).fetchone()[0]

    def embedded_count(self, collection: str) -> int:
        """How many vectors the corpus has recorded as durable in ``collection``."""
        _check_str("collection", collection)
        with self._guard():
            return self._conn.execute("SELECT COUNT(*) FROM embedded WHERE collection = ?",
                                      (collection,)).fetchone()[0]

    def forget_collection(self, collection: str) -> None:
        """Drop everything the corpus keeps about a collection (embedded hashes and answers)."""
        _check_str("collection", collection)
        with self.transaction():
            self._conn.execute("DELETE FROM embedded WHERE collection = ?", (collection,))
            self._conn.execute("DELETE FROM answers WHERE collection = ?", (collection,))

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        _check_str("meta key", key)
        with self._guard():
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        _check_str("meta key", key)
        _check_str("meta value", value)
        with self.transaction():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _document(row: Sequence[Any]) -> Document:
        doc_id, text, metadata = row
        return Document(id=doc_id, text=text, metadata=json.loads(metadata))

    def _hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """Stored text hashes of the ids that exist."""
        found: dict[str, str] = {}
        with self._guard():
            for chunk in chunked(ids, _SQL_CHUNK):
                rows = self._conn.execute(
                    f"SELECT id, text_hash FROM documents WHERE id IN ({_placeholders(len(chunk))})", chunk
                )
                found.update(rows)
        return found

    def _delete_where(self, table: str, column: str, values: Sequence[str]) -> None:
        for chunk in chunked(values, _SQL_CHUNK):
            self._conn.execute(f"DELETE FROM {table} WHERE {column} IN ({_placeholders(len(chunk))})", chunk)
