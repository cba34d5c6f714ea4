"""Bringing collections in step with the corpus: encode what is missing or stale, durably.

The corpus records, per collection, the hash of the text each stored vector came from. A
sync encodes exactly the documents whose record is missing or stale, writes their vectors to
the backend, makes them durable (``flush``) and only then records them, at checkpoints. A
process killed anywhere leaves work that the next sync finds and finishes: vectors are keyed
by document id, so nothing is lost and nothing is duplicated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .corpus import Corpus, Document
from .encoder import InBedder
from .manifest import Manifest, now
from .backends.base import VectorBackend
from .backends.qdrant_common import infer_payload_schema
from .storage import MissingCollectionError, Storage

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 30.0  # how often a long build makes its vectors durable ...
CHECKPOINT_DOCS = 8192  # ... or after this many vectors, which bounds what waits in memory
PROGRESS_MIN_DOCS = 256


class Sync:
    """One index's corpus, collections and manifest, as a sync needs them."""

    def __init__(self, corpus: Corpus, storage: Storage, manifest: Manifest,
                 save_manifest: Callable[[], None]) -> None:
        self.corpus = corpus
        self.storage = storage
        self.manifest = manifest
        self.save_manifest = save_manifest

    def collection(self, instruction: str) -> VectorBackend:
        """An instruction's collection for writing; one that vanished is recreated and re-encoded."""
        entry = self.manifest.entry(instruction)
        try:
            return self.storage.collection(entry)
        except MissingCollectionError:
            if self.corpus.embedded_count(entry["name"]):
                logger.warning("the collection of %r is missing from %s; re-encoding the corpus into a new one",
                               instruction, self.storage.where)
            self.corpus.forget_collection(entry["name"])
            return self.storage.collection(entry, create=True)

    def unfinished(self) -> list[str]:
        """Instructions whose collection lacks vectors or holds vectors of deleted documents."""
        return [
            instruction for instruction, entry in self.manifest.collections.items()
            if self.corpus.pending_count(entry["name"])
            or self.collection(instruction).count() != self.corpus.embedded_count(entry["name"])
        ]

    def run(self, encoder: InBedder, instructions: Sequence[str], ids: Sequence[str] | None, *, answers: bool,
            show_progress_bar: bool | None = None, batch_size: int = 256) -> int:
        """Encode what each collection lacks (or holds stale); ``ids=None`` checks the whole corpus.

        Returns the number of documents encoded.
        """
        if ids is None:
            self.drop_orphans(instructions)
        total = len(self.corpus) if ids is None else len(ids)
        if total == 0:
            return 0
        show = total >= PROGRESS_MIN_DOCS if show_progress_bar is None else show_progress_bar
        last_checkpoint = time.monotonic()
        pending: dict[str, dict[str, str]] = {instruction: {} for instruction in instructions}
        encoded = 0
        # Streamed: staleness is checked batch by batch, so memory holds one batch and what awaits
        # the next checkpoint, never the whole corpus.
        with tqdm(total=total, desc="indexing", unit="doc", disable=not show) as bar:
            for batch in self.corpus.iter_batches(batch_size, ids=ids):
                todo, stale = self.stale(batch, instructions)
                if todo:
                    results = encoder.encode([d.text for d in todo], list(stale), return_answers=answers,
                                             show_progress_bar=False)
                    encoded += len(todo)
                for instruction, stale_ids in stale.items():
                    vectors, batch_answers = results[instruction] if answers else (results[instruction], None)
                    rows = [row for row, d in enumerate(todo) if d.id in stale_ids]
                    self.store(instruction, [todo[row] for row in rows], vectors[rows],
                               None if batch_answers is None else [batch_answers[row] for row in rows], pending)
                bar.update(len(batch))
                last_checkpoint = self.checkpoint_if_due(pending, last_checkpoint)
        self.checkpoint(pending)
        if encoded:
            self.index_payloads(instructions)
        return encoded

    def index_payloads(self, instructions: Sequence[str]) -> None:
        """Payload indexes for the metadata fields documents carry, on backends that filter natively
        (Qdrant's advice for filtered search); FAISS filters through the corpus and needs none."""
        backends = [self.collection(i) for i in instructions]
        backends = [b for b in backends if hasattr(b, "ensure_payload_indexes")]
        if backends:
            schema = infer_payload_schema(d.metadata for batch in self.corpus.iter_batches(1024) for d in batch)
            for backend in backends:
                backend.ensure_payload_indexes(schema)

    def stale(self, batch: Sequence[Document],
              instructions: Sequence[str]) -> tuple[list[Document], dict[str, set[str]]]:
        """The documents of a batch that need encoding, and per instruction that lacks any of
        them (in the given order) the ids whose vector is missing or stale."""
        batch_ids = [d.id for d in batch]
        stale = {i: set(self.corpus.stale_ids(self.manifest.entry(i)["name"], batch_ids)) for i in instructions}
        stale = {instruction: ids for instruction, ids in stale.items() if ids}
        return [d for d in batch if any(d.id in ids for ids in stale.values())], stale

    def store(self, instruction: str, docs: Sequence[Document], vectors: np.ndarray | None,
              answers: Sequence[str] | None, pending: dict[str, dict[str, str]]) -> None:
        """Upsert the vectors of ``docs`` (``None``: a worker already wrote them) and keep their
        text hashes in ``pending`` for the next checkpoint, which records them once durable."""
        if vectors is not None:
            self.collection(instruction).upsert([d.id for d in docs], vectors, [d.metadata for d in docs])
        pending[instruction].update({d.id: d.text_hash for d in docs})
        if answers is not None:
            self.corpus.set_answers(self.manifest.entry(instruction)["name"],
                                    {d.id: answer for d, answer in zip(docs, answers)})

    def drop_orphans(self, instructions: Sequence[str]) -> None:
        """Remove vectors of documents deleted from the corpus by a write that was cut short."""
        corpus_ids = set(self.corpus.ids())
        for instruction in instructions:
            backend = self.collection(instruction)
            orphans = sorted(backend.ids() - corpus_ids)
            if orphans:
                logger.info("removing %d vectors of deleted documents from %r", len(orphans), instruction)
                backend.delete(orphans)
                backend.flush()

    def checkpoint_if_due(self, pending: Mapping[str, dict[str, Any]], last: float,
                          every_docs: int = CHECKPOINT_DOCS) -> float:
        """Checkpoint once ``every_docs`` vectors wait, or ``CHECKPOINT_SECONDS`` after the last
        checkpoint (at ``last``, ``time.monotonic()``); returns when the last checkpoint was."""
        waiting = sum(len(done) for done in pending.values())
        if waiting >= every_docs or time.monotonic() - last > CHECKPOINT_SECONDS:
            self.checkpoint(pending)
            return time.monotonic()
        return last

    def checkpoint(self, pending: Mapping[str, dict[str, Any]]) -> None:
        """Make vectors durable, then record them: a crash between the two only repeats work."""
        for instruction, done in pending.items():
            if not done:
                continue
            entry = self.manifest.entry(instruction)
            backend = self.collection(instruction)
            backend.flush()
            self.corpus.mark_embedded(entry["name"], done)
            entry["count"] = backend.count()
            entry["updated"] = now()
            done.clear()
        self.save_manifest()
