"""Moving a whole index to another storage: FAISS, embedded Qdrant or a Qdrant server, either way.

``backends.migrate`` moves one collection's points; an index is more: its corpus (texts,
metadata, answers), its manifest and one collection per instruction, each recorded as
up to date with the texts its vectors came from. ``migrate_index`` builds a new index folder
from an existing one without the model: the documents are copied, each instruction is
registered under the model the source recorded, and the stored vectors are copied (never
re-encoded) through the target's own build loop (``Sync.store`` and ``Sync.checkpoint``), so
the target records a vector only once it is durable. A migration killed at any point is
finished by running it again: documents are upserted by id, and only the vectors the target
lacks are copied, so nothing is duplicated.

The source is opened read-only and never changed. It must be complete (every document has an
up-to-date vector under every instruction): a stored vector of an older text would otherwise
be recorded as current. This is also how an index kept in qdrant-client's legacy local
storage (which unpickles what it reads) moves to embedded Qdrant: ``legacy_qdrant=True``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tqdm.auto import tqdm

from ._util import check_int, chunked
from .errors import IncompleteIndexError, InBedderError
from .index import InstructionIndex
from .sync import PROGRESS_MIN_DOCS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordedModel:
    """The model an index recorded (id, fingerprint, dimension, prompt length), without its weights.

    It is what the target index needs to name and check its collections; a migration copies
    vectors, so nothing ever asks it to encode.
    """

    model_id: str
    fingerprint: str
    dim: int
    max_length: int

    def encode(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise InBedderError(f"a migration copies stored vectors and never encodes; open the index with its model "
                            f"({self.model_id!r}) to encode")


@dataclass(frozen=True)
class MigrationReport:
    """What ``migrate_index`` did."""

    source: str
    target: str
    backend: str
    """The target's backend ("faiss" or "qdrant")."""
    qdrant_url: str | None
    """The target's Qdrant server, or None (FAISS or embedded Qdrant)."""
    documents: int
    """Documents of the source, all now in the target."""
    copied: dict[str, int]
    """Per instruction, the vectors this run copied (fewer when it finishes an interrupted run)."""
    pending: dict[str, int]
    """Per instruction, target documents still without an up-to-date vector (0 after a full move
    into a new folder; a target that held other documents may have some)."""


def _check_complete(path: Path, stats: dict[str, Any], legacy_qdrant: bool) -> None:
    """Refuse a source whose vectors are not all up to date (their texts changed, or a build was cut short)."""
    for collection in stats["collections"]:
        if collection["problem"] is not None:
            flag = " (with --legacy-qdrant)" if legacy_qdrant else ""
            raise IncompleteIndexError(
                f"{path} is not complete under {collection['instruction']!r}: {collection['problem']}{flag}. "
                "A migration copies stored vectors and never encodes, so finish the index first"
            )


def _copy_collection(source: InstructionIndex, target: InstructionIndex, instruction: str, answers: bool,
                     batch_size: int, bar: tqdm) -> int:
    """Copy the vectors (and answers) the target lacks under ``instruction``; the number copied."""
    target.register_instructions([instruction], answers=answers)
    sync = target.sync_state()
    name = sync.state.entry(instruction).name
    pending: dict[str, dict[str, str]] = {instruction: {}}
    last_checkpoint = time.monotonic()
    copied = 0
    for docs, vectors in source.vectors(instruction, batch_size):
        _, stale = sync.stale(docs, [instruction])
        rows = [row for row, doc in enumerate(docs) if doc.id in stale.get(instruction, ())]
        if rows:
            chosen = [docs[row] for row in rows]
            sync.store(instruction, chosen, vectors[rows], None, pending)
            found = source.answers(instruction, [doc.id for doc in chosen])
            if found:
                sync.corpus.set_answers(name, found)
            copied += len(rows)
            last_checkpoint = sync.checkpoint_if_due(pending, last_checkpoint)
        bar.update(len(docs))
    sync.checkpoint(pending)
    return copied


def migrate_index(
    source: str | Path,
    target: str | Path,
    *,
    backend: str | None = None,
    qdrant_url: str | None = None,
    qdrant_api_key: str | None = None,
    source_qdrant_api_key: str | None = None,
    legacy_qdrant: bool = False,
    hnsw: bool | None = None,
    batch_size: int = 1024,
    show_progress_bar: bool | None = None,
) -> MigrationReport:
    """Copy the index at ``source`` into the index folder ``target`` (created if absent).

    The target keeps its vectors in ``backend`` (default: the source's): "faiss", or "qdrant"
    on the server at ``qdrant_url`` (``qdrant_api_key``) or else embedded in the folder.
    ``hnsw`` (default: the source's) makes FAISS collections approximate. ``legacy_qdrant``
    opens a source kept in qdrant-client's legacy local storage, which unpickles its data:
    only for folders you trust. ``source_qdrant_api_key``: the source's Qdrant server key.
    A target that exists must have the same model; the source's documents replace its
    documents of the same ids. Run it again to finish an interrupted migration.
    """
    if Path(source).expanduser().resolve() == Path(target).expanduser().resolve():
        raise ValueError(f"source and target are the same folder ({source}); migrate into a new folder")
    check_int("batch_size", batch_size)
    with InstructionIndex.open(source, read_only=True, qdrant_api_key=source_qdrant_api_key,
                               legacy_qdrant=legacy_qdrant) as origin:
        stats = origin.stats()
        _check_complete(origin.path, stats, legacy_qdrant)
        recorded = stats["model"]
        model = None if recorded is None else RecordedModel(recorded["id"], recorded["fingerprint"], recorded["dim"],
                                                             recorded.get("max_length", 512))
        with InstructionIndex.open(target, model=model, backend=backend or stats["backend"], qdrant_url=qdrant_url,
                                   qdrant_api_key=qdrant_api_key, hnsw=origin.hnsw if hnsw is None else hnsw) as dest:
            ids = origin.ids()
            for chunk in chunked(ids, batch_size):
                dest.store_documents(origin.get(chunk))
            instructions: Sequence[str] = [c["instruction"] for c in stats["collections"]]
            total = len(ids) * len(instructions)
            show = total >= PROGRESS_MIN_DOCS if show_progress_bar is None else show_progress_bar
            with tqdm(total=total, desc="migrating", unit="vector", disable=not show) as bar:
                copied = {c["instruction"]: _copy_collection(origin, dest, c["instruction"], c.get("answers", True),
                                                             batch_size, bar)
                          for c in stats["collections"]}
            if instructions:
                dest.sync_state().index_payloads(instructions)
            after = dest.stats()
    logger.info("migrated %d documents and %d vectors from %s to %s", len(ids), sum(copied.values()), source, target)
    return MigrationReport(
        source=str(source), target=str(target), backend=after["backend"], qdrant_url=after["qdrant_url"],
        documents=len(ids), copied=copied,
        pending={c["instruction"]: c["pending"] for c in after["collections"]},
    )
