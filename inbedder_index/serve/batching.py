"""One worker thread runs the model and the indexes; concurrent embedding requests share its batches.

Requests wait in a bounded queue. The worker takes the oldest, then gathers whatever else is
queued (waiting at most ``max_wait_s`` for more when the queue is empty) up to ``max_batch``
texts, groups the gathered requests by instruction and encodes each group in one call. Many
small requests therefore run close to batched throughput, and a lone request waits a few
milliseconds at most. Index calls (search, writes) run on the same thread, in queue order, so
the model and each index are only ever used by one thread.

The queue counts texts (an index call counts as its number of texts or one): a request that
does not fit gets ``QueueFullError`` at once rather than joining an unbounded backlog.
Encoding runs off the event loop; results come back through ``concurrent.futures`` futures.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import QueueFullError, ShuttingDownError
from .metrics import Metrics

EncodeBatch = Callable[[list[str], str], tuple[np.ndarray, list[int]]]
"""``(texts, instruction) -> (vectors, prompt tokens per text)``."""


@dataclass
class _Embed:
    texts: list[str]
    instruction: str
    future: Future[tuple[np.ndarray, list[int]]] = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    units: int
    future: Future[Any] = field(default_factory=Future)


_STOP = object()


class Batcher:
    """The worker thread and its bounded queue (see the module docs)."""

    def __init__(self, encode_batch: EncodeBatch, metrics: Metrics, *, max_batch: int = 64,
                 max_wait_s: float = 0.005, max_queue: int = 4096) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch ({max_batch}) and max_queue ({max_queue}) must be at least 1 "
                             f"and max_wait_s ({max_wait_s}) not negative")
        self._encode_batch = encode_batch
        self._metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._held: Any = None  # a job taken while gathering that did not fit the batch
        self._waiting = 0  # texts (units) queued, not yet taken by the worker
        self._lock = threading.Lock()
        self._seconds_per_text = 0.05  # running estimate, for Retry-After
        self._thread = threading.Thread(target=self._run, name="inbedder-worker", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- submitting (event loop side)

    def _admit(self, job: _Embed | _Call, units: int) -> None:
        with self._lock:
            if self._waiting + units > self.max_queue:
                self._metrics.rejected.inc()
                retry = max(1.0, round(self._waiting * self._seconds_per_text, 1))
                raise QueueFullError(self._waiting, self.max_queue, retry)
            self._waiting += units
            self._metrics.queue_depth.set(self._waiting)
        self._queue.put(job)

    async def embed(self, texts: Sequence[str], instruction: str) -> tuple[np.ndarray, list[int]]:
        """Vectors of ``texts`` under ``instruction`` and each prompt's token count, batched with others."""
        job = _Embed(list(texts), instruction)
        self._admit(job, len(job.texts))
        return await asyncio.wrap_future(job.future)

    async def call(self, fn: Callable[..., Any], *args: Any, units: int = 1) -> Any:
        """``fn(*args)`` on the worker thread, in queue order with the embedding batches."""
        job = _Call(fn, args, max(1, units))
        self._admit(job, job.units)
        return await asyncio.wrap_future(job.future)

    def close(self) -> None:
        """Finish what is running, fail what waits, stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    # ----------------------------------------------------------------- the worker

    def _take(self, timeout: float | None) -> Any:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        job = self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        if job is not _STOP:
            with self._lock:
                self._waiting -= len(job.texts) if isinstance(job, _Embed) else job.units
                self._metrics.queue_depth.set(self._waiting)
        return job

    def _run(self) -> None:
        while True:
            job = self._take(None)
            if job is _STOP:
                break
            if isinstance(job, _Call):
                if job.future.set_running_or_notify_cancel():
                    _settle(job.future, job.fn, *job.args)
                continue
            self._run_batch(self._gather(job))
        self._fail_waiting()

    def _gather(self, first: _Embed) -> list[_Embed]:
        """``first`` and the embedding jobs queued behind it, up to ``max_batch`` texts."""
        batch, size = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            try:
                job = self._take(deadline - time.monotonic())
            except queue.Empty:
                break
            if job is _STOP or isinstance(job, _Call) or size + len(job.texts) > self.max_batch:
                self._held = job  # next in line: runs after this batch
                break
            batch.append(job)
            size += len(job.texts)
        return [job for job in batch if job.future.set_running_or_notify_cancel()]  # drop cancelled ones

    def _run_batch(self, batch: list[_Embed]) -> None:
        groups: dict[str, list[_Embed]] = {}
        for job in batch:
            groups.setdefault(job.instruction, []).append(job)
        for instruction, jobs in groups.items():
            texts = [text for job in jobs for text in job.texts]
            start = time.perf_counter()
            try:
                vectors, tokens = self._encode_batch(texts, instruction)
            except Exception as error:
                if len(jobs) == 1:
                    jobs[0].future.set_exception(error)
                else:  # one bad request must not fail the others: each on its own
                    for job in jobs:
                        _settle(job.future, self._encode_batch, job.texts, instruction)
                continue
            seconds = time.perf_counter() - start
            self._seconds_per_text = 0.8 * self._seconds_per_text + 0.2 * seconds / max(1, len(texts))
            self._metrics.batch_texts.observe(len(texts))
            self._metrics.batch_requests.observe(len(jobs))
            self._metrics.encode_seconds.observe(seconds)
            offset = 0
            for job in jobs:
                n = len(job.texts)
                job.future.set_result((vectors[offset : offset + n], tokens[offset : offset + n]))
                offset += n

    def _fail_waiting(self) -> None:
        while True:
            try:
                job = self._take(0)
            except queue.Empty:
                return
            if job is not _STOP and job.future.set_running_or_notify_cancel():
                job.future.set_exception(ShuttingDownError("the server is shutting down"))


def _settle(future: Future[Any], fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` into ``future`` (a running future: its result or its exception)."""
    try:
        result = fn(*args)
    except Exception as error:  # handed to the awaiting request, which reports it
        future.set_exception(error)
    else:
        future.set_result(result)
