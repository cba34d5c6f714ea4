"""Building an index's collections on a Ray cluster, with the local build's durability contract.

The Ray build is an encoding strategy (``RayEncoding``) of the one build loop, ``Sync.run``:
the loop finds the documents whose vector is missing or stale under any instruction, and
stores, checkpoints and records what the strategy returns, exactly as for a local build.

The driver (this process) opens the index for writing, so it holds the writer lock for the whole
build. The strategy hands the stale documents to Ray as Arrow blocks of ids and texts
(``ray.data.from_blocks``: no remote task per block; the driver holds the stale texts until they
are in the object store). Ray Data feeds the blocks to ``map_batches`` over an actor pool of
encoders (one per GPU, or one per ``cpus_per_actor`` CPUs): each actor loads the model once and
encodes a block under every instruction in one pass (the shared prefix). Then, per location:

- FAISS (and embedded Qdrant): the actors return the vectors as Arrow tensor columns; the
  loop upserts them, and records them in the corpus only after a checkpoint made them durable
  (every ``checkpoint_docs`` vectors or 30 s).
- a Qdrant server: each actor upserts its block straight to the server through the same backend
  class as the index (same point ids and payloads, ``wait=True``) and returns only ids and
  answers; the loop records each block as soon as it is acknowledged.

So a driver killed at any point leaves vectors that are durable but unrecorded at worst, and the
next build re-encodes exactly the unrecorded documents, upserting them by id: nothing is lost
and nothing is duplicated. A worker killed mid-block is restarted by Ray and its block retried
(Ray Data's actor fault tolerance). Ray is an optional extra (``pip install
"inbedder-index[ray]"``) imported only by this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from . import errors
from ._util import check_int, import_optional
from .errors import BackendUnavailableError, InBedderError, ModelMismatchError
from .storage import Location, LocationKind
from .sync import CHECKPOINT_DOCS, Encoded, EncodedBlock, StaleBatch

if TYPE_CHECKING:
    from .corpus import Corpus, Document
    from .encoder import InBedder
    from .index import InstructionIndex
    from .manifest import CollectionEntry

logger = logging.getLogger(__name__)

RAY_EXTRA = "ray"

ModelSource = str | Callable[[], "InBedder"]
"""What each actor loads: a model name, hub id or folder (``InBedder(model, **encoder_kwargs)``),
or a picklable zero-argument callable that returns an ``InBedder``."""


@dataclass(frozen=True)
class BuildReport:
    """What a distributed build did, and where its time went."""

    encoded: int
    """Documents encoded (each under every instruction that lacked it)."""
    blocks: int
    """Blocks of documents handed to Ray."""
    actors: int
    """Size of the encoder actor pool."""
    seconds: float
    """Wall time of the whole build, connecting to Ray included."""
    connect_seconds: float
    """Time ``ray.init`` took (0 when this process was already connected)."""
    first_block_seconds: float
    """From handing the blocks to Ray to the first encoded block back: actor start and model load."""
    steady_seconds: float
    """From the block that brought every actor's first one back, to the last block back."""
    steady_documents: int
    """Documents of the blocks back in ``steady_seconds``: their ratio is the throughput once started."""
    worker_seconds: float
    """Time the actors spent encoding (and writing to a Qdrant server), summed over actors."""
    driver_seconds: float
    """Time the driver spent storing and recording blocks: the build cannot outpace
    ``encoded / driver_seconds`` documents/s, however many actors encode."""
    worker_peak_rss_bytes: int
    """Largest peak resident memory of one actor process."""

    @property
    def steady_docs_per_second(self) -> float | None:
        """Throughput once the actors run (``None`` with too few blocks to tell)."""
        return self.steady_documents / self.steady_seconds if self.steady_seconds > 0 else None


# --------------------------------------------------------------------------- the actors


class BlockEncoder:
    """A Ray Data actor: loads the model once, then encodes blocks under every instruction in one pass.

    With ``server`` (the index's Qdrant server, and each instruction's collection entry) it
    upserts the vectors itself and returns none.
    """

    def __init__(self, model: ModelSource, encoder_kwargs: Mapping[str, Any], fingerprint: str,
                 instructions: Sequence[str], answers: bool, threads: int,
                 server: tuple[Location, Sequence[CollectionEntry]] | None) -> None:
        from .encoder import InBedder
        from .threads import set_threads

        set_threads(threads)
        self.encoder = model() if callable(model) else InBedder(model, **encoder_kwargs)
        if self.encoder.fingerprint != fingerprint:
            raise ModelMismatchError(
                f"the Ray workers loaded {self.encoder.model_id!r} (fingerprint {self.encoder.fingerprint}), but the "
                f"index was built with fingerprint {fingerprint}; pass model= the index's own model"
            )
        self.instructions = list(instructions)
        self.answers = answers
        self.collections: list[Any] | None = None
        if server is not None:
            from .storage import OpenOptions, Storage

            location, entries = server
            storage = Storage(location, OpenOptions())
            self.collections = [storage.collection(entry) for entry in entries]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        ids = [str(doc_id) for doc_id in batch["id"]]
        texts = [str(text) for text in batch["text"]]
        needs = [np.asarray(batch[f"need_{k}"], dtype=bool) for k in range(len(self.instructions))]
        needing = [instruction for instruction, need in zip(self.instructions, needs) if need.any()]
        results = self.encoder.encode(texts, needing, return_answers=self.answers, show_progress_bar=False)
        out: dict[str, np.ndarray] = {"id": np.asarray(ids, dtype=object)}
        for k, (instruction, need) in enumerate(zip(self.instructions, needs)):
            vectors = np.zeros((len(ids), self.encoder.dim), dtype=np.float32)
            answers = [""] * len(ids)
            if instruction in results:
                vectors, answers = results[instruction] if self.answers else (results[instruction], answers)
            rows = np.flatnonzero(need)
            if self.collections is None:
                out[f"vector_{k}"] = vectors
            elif rows.size:
                collection = self.collections[k]
                collection.upsert([ids[r] for r in rows], vectors[rows],
                                  [json.loads(batch["metadata"][r]) for r in rows])
                collection.flush()
            out[f"need_{k}"] = need
            out[f"answer_{k}"] = np.asarray(answers, dtype=object)
        # Per-row shares, so the driver's sums are right however Ray groups rows into blocks.
        out["seconds"] = np.full(len(ids), (time.perf_counter() - start) / max(len(ids), 1))
        out["peak_rss"] = np.full(len(ids), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, dtype=np.int64)
        return out


# --------------------------------------------------------------------------- the driver


def _ray() -> Any:
    ray = import_optional("ray", RAY_EXTRA)
    import_optional("ray.data", RAY_EXTRA)
    return ray


def _connect(ray: Any, address: str | None, runtime_env: Mapping[str, Any] | None) -> bool:
    """Join the cluster at ``address`` (None: this process's, or a new local one); True if this call connected."""
    if ray.is_initialized():
        if address is not None or runtime_env is not None:
            logger.warning("Ray is already initialised in this process; address and runtime_env are ignored")
        return False
    try:
        ray.init(address=address, runtime_env=dict(runtime_env) if runtime_env else None, include_dashboard=False,
                 logging_level=logging.INFO if logger.isEnabledFor(logging.INFO) else logging.ERROR)
    except ConnectionError as error:
        raise BackendUnavailableError(
            f"cannot reach the Ray cluster at {address!r} ({error}); start one with `ray start --head` and pass "
            "its address (e.g. 'auto' on a node of the cluster, or 'ray://HEAD:10001'), or no address for a "
            "local one"
        ) from error
    return True


_WORKER_ERROR = re.compile(r"^inbedder_index\.errors\.(\w+): (.+)$", re.MULTILINE)


@contextmanager
def _worker_errors(ray: Any) -> Iterator[None]:
    """An error this library raised on a worker (a model that does not load or does not match) as
    itself, in one line; Ray wraps it in a remote traceback that keeps only its text."""
    try:
        yield
    except ray.exceptions.RayError as error:
        found = _WORKER_ERROR.findall(str(error))
        if not found:
            raise
        name, message = found[-1]
        kind = getattr(errors, name, None)
        if not (isinstance(kind, type) and issubclass(kind, InBedderError)):
            kind = InBedderError
        raise kind(f"on a Ray worker: {message}") from error


@contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """Ray Data's progress bars and execution banners off (the build shows its own bar), restored after."""
    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in ("enable_progress_bars", "print_on_execution_start")}
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    verbose = logger.isEnabledFor(logging.INFO)
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    if not verbose:
        data_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        data_logger.setLevel(level)


def _pool_size(ray: Any, num_actors: int | None, cpus_per_actor: float,
               gpus_per_actor: float | None) -> tuple[int, float]:
    """Actors and GPUs per actor: by default one actor per GPU, else one per ``cpus_per_actor`` CPUs."""
    if not cpus_per_actor > 0 or gpus_per_actor is not None and not gpus_per_actor >= 0:
        raise ValueError(f"cpus_per_actor must be > 0 and gpus_per_actor >= 0, got {cpus_per_actor!r} and "
                         f"{gpus_per_actor!r}")
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus else 0.0
    if num_actors is None:
        num_actors = int(gpus // gpus_per_actor) if gpus_per_actor else int(resources.get("CPU", 1) // cpus_per_actor)
        num_actors = max(num_actors, 1)
    check_int("num_actors", num_actors)
    for kind, each, have in (("CPU", cpus_per_actor, resources.get("CPU", 0)), ("GPU", gpus_per_actor, gpus)):
        if num_actors * each > have:
            logger.warning("%d actors x %g %s need more than the cluster's %g: the build waits for an autoscaler "
                           "to add nodes, or hangs; lower num_actors", num_actors, each, kind, have)
    return num_actors, gpus_per_actor


class RayEncoding:
    """The build loop's encoding strategy on a Ray cluster: the stale documents go to Ray as Arrow
    blocks, an actor pool of ``BlockEncoder`` encodes them, and each block is handed back to the
    loop (which stores and records it) as it arrives. It keeps what the ``BuildReport`` tells."""

    label = "indexing (ray)"

    def __init__(self, ray: Any, corpus: Corpus, instructions: Sequence[str], wants_answers: Mapping[str, bool],
                 constructor: dict[str, Any], actors: int, cpus_per_actor: float, gpus: float, batch_size: int,
                 checkpoint_docs: int) -> None:
        self.ray, self.corpus, self.instructions = ray, corpus, list(instructions)
        self.wants_answers, self.constructor, self.batch_size = wants_answers, constructor, batch_size
        self.actors, self.cpus_per_actor, self.gpus = actors, cpus_per_actor, gpus
        self.vectors_returned = constructor["server"] is None
        # A Qdrant server holds each block once its worker returns: record it at once.
        self.checkpoint_docs = checkpoint_docs if self.vectors_returned else 1
        self.blocks = 0
        self.submitted = 0.0
        self.arrivals: list[tuple[float, int]] = []  # (when recorded, documents) of each block back
        self.worker_seconds = self.driver_seconds = 0.0
        self.peak_rss = 0

    def _table(self, batch: StaleBatch) -> Any:
        """A block: ids, texts (metadata for workers that write) and, per instruction, which rows it lacks."""
        import pyarrow as pa

        todo = batch.documents
        columns: dict[str, Any] = {"id": [d.id for d in todo], "text": [d.text for d in todo]}
        if not self.vectors_returned:
            columns["metadata"] = [json.dumps(d.metadata) for d in todo]
        for k, instruction in enumerate(self.instructions):
            ids = batch.stale.get(instruction, set())
            columns[f"need_{k}"] = [d.id in ids for d in todo]
        return pa.table(columns)

    def encode(self, batches: Iterable[StaleBatch]) -> Iterator[EncodedBlock]:
        ray = self.ray
        tables = [self._table(batch) for batch in batches]  # Ray Data takes every block at once
        self.blocks = len(tables)
        if not tables:
            return
        self.actors = min(self.actors, self.blocks)  # an actor without a block would only load the model
        logger.info("encoding %d documents in %d blocks on %d Ray actors (%g CPU, %g GPU each)",
                    sum(t.num_rows for t in tables), self.blocks, self.actors, self.cpus_per_actor, self.gpus)
        with _quiet_ray_data(ray), _worker_errors(ray):
            # from_blocks puts the tables into the object store from here, with no remote task per block
            dataset = ray.data.from_blocks(tables).map_batches(
                BlockEncoder, batch_size=self.batch_size, batch_format="numpy", fn_constructor_kwargs=self.constructor,
                compute=ray.data.ActorPoolStrategy(size=self.actors), num_cpus=self.cpus_per_actor,
                num_gpus=self.gpus or None,
            )
            del tables  # the object store holds them now
            self.submitted = time.perf_counter()
            for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                back = time.perf_counter()
                self.worker_seconds += float(np.sum(out["seconds"]))
                self.peak_rss = max(self.peak_rss, int(np.max(out["peak_rss"])))
                block = self._block(out)
                yield block  # the loop stores and records it before asking for the next
                self.arrivals.append((time.perf_counter(), block.size))
                self.driver_seconds += self.arrivals[-1][0] - back

    def _block(self, out: Mapping[str, np.ndarray]) -> EncodedBlock:
        """One block back from the actors, as the loop stores it (vectors None when a worker wrote them)."""
        ids = [str(doc_id) for doc_id in out["id"]]
        documents: dict[str, Document] = {d.id: d for d in self.corpus.get(ids)}
        results = []
        for k, instruction in enumerate(self.instructions):
            rows = [r for r in np.flatnonzero(out[f"need_{k}"]) if ids[r] in documents]
            if rows:
                results.append(Encoded(
                    instruction, [documents[ids[r]] for r in rows],
                    np.asarray(out[f"vector_{k}"])[rows] if self.vectors_returned else None,
                    [str(out[f"answer_{k}"][r]) for r in rows] if self.wants_answers[instruction] else None))
        return EncodedBlock(len(ids), results)

    def report(self, encoded: int, started: float, connect_seconds: float) -> BuildReport:
        arrivals = self.arrivals
        if not arrivals:
            return BuildReport(encoded, self.blocks, 0, time.perf_counter() - started, connect_seconds,
                               0.0, 0.0, 0, 0.0, 0.0, 0)
        warm = min(self.actors, len(arrivals)) - 1
        return BuildReport(encoded, self.blocks, self.actors, time.perf_counter() - started, connect_seconds,
                           arrivals[0][0] - self.submitted, arrivals[-1][0] - arrivals[warm][0],
                           sum(docs for _, docs in arrivals[warm + 1:]), self.worker_seconds, self.driver_seconds,
                           self.peak_rss)


def build(
    index: str | os.PathLike[str] | InstructionIndex,
    instructions: Sequence[str],
    *,
    address: str | None = None,
    num_actors: int | None = None,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float | None = None,
    batch_size: int = 256,
    model: ModelSource | None = None,
    encoder_kwargs: Mapping[str, Any] | None = None,
    answers: bool = True,
    qdrant_url: str | None = None,
    qdrant_api_key: str | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    checkpoint_docs: int = CHECKPOINT_DOCS,
    show_progress_bar: bool | None = None,
) -> BuildReport:
    """Encode the corpus under ``instructions`` on a Ray cluster; every collection of the index is
    brought in step (the new instructions' and the existing ones').

    ``index``: an open ``InstructionIndex`` (left open), or the folder of one (opened here, with
    ``qdrant_url`` / ``qdrant_api_key`` for a server index, and closed at the end).
    ``address``: the Ray cluster (``"auto"``, ``"ray://HEAD:10001"``, ...); None uses this
    process's Ray, or starts a local one (shut down at the end). ``runtime_env`` is passed to
    ``ray.init`` (e.g. ``{"pip": ["inbedder-index[qdrant]"]}`` for workers without the package).
    ``num_actors`` defaults to one per GPU (``gpus_per_actor`` 1 when the cluster has GPUs),
    else one per ``cpus_per_actor`` CPUs, each then using that many threads. ``batch_size``
    documents make a block, Ray's unit of work. ``model`` is what the actors load (default: the
    index's recorded model id, with its ``max_length``, plus ``encoder_kwargs``); they refuse a
    model whose fingerprint differs from the index's. ``checkpoint_docs``: for FAISS, how many
    vectors may wait for a durable write (a Qdrant server records every block at once).
    Calling it again after a crash encodes exactly what is still unrecorded.
    """
    from .index import InstructionIndex

    check_int("batch_size", batch_size)
    check_int("checkpoint_docs", checkpoint_docs)
    ray = _ray()
    started = time.perf_counter()
    own_index = not isinstance(index, InstructionIndex)
    if own_index:
        index = InstructionIndex.open(index, model=model if isinstance(model, str) else None, qdrant_url=qdrant_url,
                                      qdrant_api_key=qdrant_api_key, device="cpu")  # the driver only checks
    try:
        wanted = index.register_instructions([*index.instructions(), *instructions], answers=answers)
        connect_start = time.perf_counter()
        own_ray = _connect(ray, address, runtime_env)
        connect_seconds = time.perf_counter() - connect_start if own_ray else 0.0
        try:
            return _run(ray, index, wanted, started, connect_seconds, num_actors=num_actors,
                        cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, batch_size=batch_size,
                        model=model, encoder_kwargs=encoder_kwargs, qdrant_api_key=qdrant_api_key,
                        checkpoint_docs=checkpoint_docs, show_progress_bar=show_progress_bar)
        finally:
            if own_ray:
                ray.shutdown()
    finally:
        if own_index:
            index.close()


def _run(ray: Any, index: InstructionIndex, instructions: list[str], started: float, connect_seconds: float, *,
         num_actors: int | None, cpus_per_actor: float, gpus_per_actor: float | None, batch_size: int,
         model: ModelSource | None, encoder_kwargs: Mapping[str, Any] | None, qdrant_api_key: str | None,
         checkpoint_docs: int, show_progress_bar: bool | None) -> BuildReport:
    sync = index.sync_state()
    state = sync.state
    recorded = state.manifest.model
    entries = [state.entry(instruction) for instruction in instructions]
    wants_answers = {entry.instruction: entry.answers for entry in entries}
    location = state.location
    if qdrant_api_key is not None:
        location = replace(location, api_key=qdrant_api_key)
    server = (location, entries) if location.kind is LocationKind.QDRANT_SERVER else None
    actors, gpus = _pool_size(ray, num_actors, cpus_per_actor, gpus_per_actor)
    kwargs = {"max_length": recorded.max_length or 512, **(encoder_kwargs or {})}
    constructor = {
        "model": model if model is not None else recorded.id, "encoder_kwargs": kwargs,
        "fingerprint": recorded.fingerprint, "instructions": instructions,
        "answers": any(wants_answers.values()), "threads": max(1, int(cpus_per_actor)), "server": server,
    }
    strategy = RayEncoding(ray, state.corpus, instructions, wants_answers, constructor, actors, cpus_per_actor, gpus,
                           batch_size, checkpoint_docs)
    encoded = sync.run(strategy, instructions, None, show_progress_bar=show_progress_bar, batch_size=batch_size)
    return strategy.report(encoded, started, connect_seconds)
