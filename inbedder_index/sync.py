"""Bringing collections in step with the corpus: encode what is missing or stale, durably.

The corpus records, per collection, the hash of the text each stored vector came from. A
sync encodes exactly the documents whose record is missing or stale, writes their vectors to
the backend, makes them durable (``flush``) and only then records them, at checkpoints. A
process killed anywhere leaves work that the next sync finds and finishes: vectors are keyed
by document id, so nothing is lost and nothing is duplicated.

There is one build loop (``Sync.run``); what turns stale documents into vectors is an
``EncodingStrategy``: ``LocalEncoding`` runs the model in this process, and
``inbedder_index.distributed`` hands blocks to a Ray cluster. Either way the loop stores,
checkpoints and records the vectors, so both keep the same durability contract.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from .backends.base import VectorBackend
from .backends.qdrant_common import infer_payload_schema
from .corpus import Corpus, Document
from .errors import MissingCollectionError
from .manifest import now
from .state import IndexState

if TYPE_CHECKING:
    from .encoder import InBedder

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 30.0  # how often a long build makes its vectors durable ...
CHECKPOINT_DOCS = 8192  # ... or after this many vectors, which bounds what waits in memory
PROGRESS_MIN_DOCS = 256


@dataclass(frozen=True)
class StaleBatch:
    """Documents that need encoding, and per instruction the ids among them whose vector is
    missing or stale (only instructions that lack any)."""

    documents: list[Document]
    stale: dict[str, set[str]]


@dataclass(frozen=True)
class Encoded:
    """What a strategy made of some documents under one instruction."""

    instruction: str
    documents: list[Document]
    vectors: np.ndarray | None
    """One row per document; None when the strategy wrote them itself (Ray workers to a Qdrant server)."""
    answers: list[str] | None


@dataclass(frozen=True)
class EncodedBlock:
    """One unit of a strategy's output: ``size`` documents, encoded under every instruction they lacked."""

    size: int
    results: list[Encoded]


class EncodingStrategy(Protocol):
    """How the build loop gets vectors for stale documents."""

    label: str
    """The progress bar's description."""
    checkpoint_docs: int
    """How many stored vectors may wait before the loop makes them durable and records them."""

    def encode(self, batches: Iterable[StaleBatch]) -> Iterator[EncodedBlock]:
        """The encoded blocks, in any order; the loop records each before asking for the next."""
        ...


class LocalEncoding:
    """The model in this process: each batch under all its stale instructions in one pass."""

    label = "indexing"
    checkpoint_docs = CHECKPOINT_DOCS

    def __init__(self, encoder: InBedder, answers: bool) -> None:
        self.encoder = encoder
        self.answers = answers

    def encode(self, batches: Iterable[StaleBatch]) -> Iterator[EncodedBlock]:
        for batch in batches:
            docs = batch.documents
            results = self.encoder.encode([d.text for d in docs], list(batch.stale), return_answers=self.answers,
                                          show_progress_bar=False)
            encoded = []
            for instruction, stale_ids in batch.stale.items():
                vectors, answers = results[instruction] if self.answers else (results[instruction], None)
                rows = [row for row, d in enumerate(docs) if d.id in stale_ids]
                encoded.append(Encoded(instruction, [docs[row] for row in rows], vectors[rows],
                                       None if answers is None else [answers[row] for row in rows]))
            yield EncodedBlock(len(docs), encoded)


def unique_instructions(instructions: str | Sequence[str]) -> list[str]:
    """The instructions without repeats, in order; none, or a blank one, is refused."""
    wanted = list(dict.fromkeys([instructions] if isinstance(instructions, str) else instructions))
    if not wanted:
        raise ValueError("give at least one instruction")
    for instruction in wanted:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction {instruction!r} is empty or not a string")
    return wanted


Encoding = Callable[[Sequence[str]], EncodingStrategy]
"""Gives the strategy that encodes under some instructions (loading the model when it is called)."""


class Sync:
    """One index's corpus, collections and manifest (its ``IndexState``), as every write needs them."""

    def __init__(self, state: IndexState) -> None:
        self.state = state

    @property
    def corpus(self) -> Corpus:
        return self.state.corpus

    def collection(self, instruction: str) -> VectorBackend:
        """An instruction's collection for writing; one that vanished is recreated and re-encoded."""
        entry = self.state.entry(instruction)
        try:
            return self.state.storage.collection(entry)
        except MissingCollectionError:
            if self.corpus.embedded_count(entry.name):
                logger.warning("the collection of %r is missing from %s; re-encoding the corpus into a new one",
                               instruction, self.state.location.describe())
            self.corpus.forget_collection(entry.name)
            return self.state.storage.collection(entry, create=True)

    def register(self, instructions: Sequence[str], encoder: InBedder, answers: bool) -> None:
        """Add empty collections for the instructions the index lacks: all of them, or none."""
        prompts = getattr(encoder, "prompts", None)  # adapters over other embedders have no prompt rule
        for instruction in instructions:
            if prompts is not None:
                prompts.input_budget(instruction)  # too long for max_length: refused before it is registered
        manifest = self.state.manifest
        new = [instruction for instruction in instructions if instruction not in manifest.collections]
        for instruction in new:
            manifest.add_entry(self.state.path, instruction, encoder.fingerprint, encoder.dim, self.state.hnsw,
                               answers)
        try:
            for instruction in new:
                self.collection(instruction)
        except BaseException:
            for instruction in new:
                del manifest.collections[instruction]
            raise
        self.state.save()

    def unfinished(self) -> list[str]:
        """Instructions whose collection lacks vectors or holds vectors of deleted documents."""
        return [
            instruction for instruction, entry in self.state.manifest.collections.items()
            if self.corpus.pending_count(entry.name)
            or self.collection(instruction).count() != self.corpus.embedded_count(entry.name)
        ]

    def finish_interrupted(self, encoding: Encoding) -> None:
        """Finish what an interrupted write left: vectors missing, stale, or of deleted documents."""
        unfinished = self.unfinished()
        if unfinished:
            logger.warning("%s: finishing an interrupted write (%s)", self.state.path,
                           ", ".join(repr(i) for i in unfinished))
            self.run(encoding(unfinished), unfinished, None)

    def answers_wanted(self, instructions: Sequence[str]) -> bool:
        """Whether any of the instructions keeps the model's answers."""
        return any(self.state.entry(instruction).answers for instruction in instructions)

    # ----------------------------------------------------------------- the build loop

    def run(self, strategy: EncodingStrategy, instructions: Sequence[str], ids: Sequence[str] | None, *,
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
        with tqdm(total=total, desc=strategy.label, unit="doc", disable=not show) as bar:
            for block in strategy.encode(self._stale_batches(instructions, ids, batch_size, bar)):
                for result in block.results:
                    self.store(result.instruction, result.documents, result.vectors, result.answers, pending)
                encoded += block.size
                bar.update(block.size)
                last_checkpoint = self.checkpoint_if_due(pending, last_checkpoint, strategy.checkpoint_docs)
        self.checkpoint(pending)
        if encoded:
            self.index_payloads(instructions)
        return encoded

    def _stale_batches(self, instructions: Sequence[str], ids: Sequence[str] | None, batch_size: int,
                       bar: tqdm) -> Iterator[StaleBatch]:
        """The corpus in batches, streamed: staleness is checked batch by batch, so memory holds one
        batch and what awaits the next checkpoint, never the whole corpus. Documents with nothing
        to do move the bar at once; the others when their block is stored."""
        for batch in self.corpus.iter_batches(batch_size, ids=ids):
            todo, stale = self.stale(batch, instructions)
            bar.update(len(batch) - len(todo))
            if todo:
                yield StaleBatch(todo, stale)

    def index_payloads(self, instructions: Sequence[str]) -> None:
        """Payload indexes for the metadata fields documents carry, on backends that filter natively
        (Qdrant's advice for filtered search); FAISS filters through the corpus and needs none.

        It runs after the write is stored and recorded, and indexes only speed filters up (a
        filter works without one), so a failure here is logged, never raised: a write that
        stored its documents never reports failure, and no document can wedge later writes.
        """
        backends = [self.collection(i) for i in instructions]
        backends = [b for b in backends if hasattr(b, "ensure_payload_indexes")]
        if backends:
            schema = infer_payload_schema(d.metadata for batch in self.corpus.iter_batches(1024) for d in batch)
            for backend in backends:
                try:
                    backend.ensure_payload_indexes(schema)
                except Exception as error:  # noqa: BLE001 - the engine raises plain Exceptions; see above
                    logger.warning("payload indexes of %r not updated (%s); filtered search still works, "
                                   "only slower on large collections", backend.name, error)

    def stale(self, batch: Sequence[Document],
              instructions: Sequence[str]) -> tuple[list[Document], dict[str, set[str]]]:
        """The documents of a batch that need encoding, and per instruction that lacks any of
        them (in the given order) the ids whose vector is missing or stale."""
        batch_ids = [d.id for d in batch]
        stale = {i: set(self.corpus.stale_ids(self.state.entry(i).name, batch_ids)) for i in instructions}
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
            self.corpus.set_answers(self.state.entry(instruction).name,
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
            entry = self.state.entry(instruction)
            backend = self.collection(instruction)
            backend.flush()
            self.corpus.mark_embedded(entry.name, done)
            entry.count = backend.count()
            entry.updated = now()
            done.clear()
        self.state.save()

    # ----------------------------------------------------------------- document writes

    def _prepare(self, documents: Sequence[Document], encoding: Encoding) -> EncodingStrategy | None:
        """What encoding ``documents`` needs, opened before any write: the strategy (so a model that
        cannot load fails before the corpus changes) and each collection (a corrupt one fails now)."""
        instructions = self.state.instructions()
        if not (instructions and documents):
            return None
        strategy = encoding(instructions)
        for instruction in instructions:
            self.collection(instruction)
        return strategy

    def add(self, documents: Sequence[Document], encoding: Encoding) -> list[str]:
        """Store and encode the documents not stored yet; returns their ids. One stored with the same
        content is skipped (so rerunning an interrupted add completes it); one with other content is refused."""
        stored = {d.id: d for d in self.corpus.get([d.id for d in documents])}
        self.corpus.refuse_existing([d.id for d in documents if d.id in stored and d != stored[d.id]])
        new = [d for d in documents if d.id not in stored]
        strategy = self._prepare(new, encoding)
        self.corpus.add(new)
        if strategy is not None:
            self.run(strategy, self.state.instructions(), [d.id for d in new])
        return [d.id for d in new]

    def upsert(self, documents: Sequence[Document], encoding: Encoding, *, encode: bool = True) -> list[str]:
        """Insert or replace documents, metadata-only changes going to the stored payloads at once;
        with ``encode``, new or changed texts are encoded. Returns the ids whose text is new or changed."""
        strategy = self._prepare(documents, encoding)
        changed = self.corpus.upsert(documents)
        encoded = set(changed)  # re-encoded documents get fresh payloads with their vectors
        self.refresh_payloads([d for d in documents if d.id not in encoded])
        if encode and strategy is not None and changed:
            self.run(strategy, self.state.instructions(), changed)
        return changed

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Delete documents from the corpus, then from every collection; returns the ids that existed."""
        backends = {instruction: self.collection(instruction) for instruction in self.state.instructions()}
        existed = self.corpus.delete(ids)
        for instruction, backend in backends.items():
            backend.delete(existed)
            backend.flush()
            self.state.entry(instruction).count = backend.count()
        if existed:
            self.state.save()
        return existed

    def refresh_payloads(self, documents: Sequence[Document]) -> None:
        """Rewrite the stored metadata of documents whose text (so vector) did not change."""
        if not documents:
            return
        for instruction in self.state.instructions():
            backend = self.collection(instruction)
            if not backend.filters_payload:  # metadata is filtered through the corpus: nothing to refresh
                continue
            vectors = backend.get_vectors([d.id for d in documents])
            present = [d for d in documents if d.id in vectors]
            if present:
                backend.upsert([d.id for d in present], np.stack([vectors[d.id] for d in present]),
                               [d.metadata for d in present])
