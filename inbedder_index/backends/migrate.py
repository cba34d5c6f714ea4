"""Move a collection between backends: laptop (embedded Qdrant, FAISS) to server and back.

Points are streamed in batches with their document ids (hence the same uuid5 point ids on
every Qdrant) and their metadata payloads; the target stamps its own ``index_id``. Upserts
are idempotent, so an interrupted migration is finished by running it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .._util import chunked
from .base import VectorBackend
from .qdrant_common import READ_BATCH, QdrantLayoutBackend

logger = logging.getLogger(__name__)

MetadataLookup = Callable[[Sequence[str]], Mapping[str, Mapping[str, Any]]]
"""``doc ids -> {doc id: metadata}``: where metadata comes from when the source stores none (FAISS)."""


def iter_points(
    source: VectorBackend, batch_size: int = READ_BATCH, metadata: MetadataLookup | None = None
) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
    """Every point of ``source`` as ``(doc ids, vectors, metadata)`` batches.

    Qdrant sources carry their metadata; for others (FAISS keeps none) it comes from
    ``metadata`` (e.g. the index's corpus), or is empty.
    """
    if isinstance(source, QdrantLayoutBackend) and metadata is None:
        yield from source.iter_points(batch_size)
        return
    for batch in chunked(sorted(source.ids()), batch_size):
        vectors = source.get_vectors(batch)
        present = [doc_id for doc_id in batch if doc_id in vectors]  # deleted meanwhile: skipped
        found = metadata(present) if metadata is not None else {}
        yield (present, np.stack([vectors[d] for d in present]) if present else np.empty((0, source.dim), np.float32),
               [dict(found.get(doc_id, {})) for doc_id in present])


def migrate(
    source: VectorBackend,
    target: VectorBackend,
    *,
    batch_size: int = READ_BATCH,
    metadata: MetadataLookup | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Copy every point of ``source`` into ``target`` (same ids, vectors and metadata); the count copied.

    ``target`` keeps points it already had; ids present in both are replaced by the source's.
    ``progress`` is called with the running count after each batch. The target is flushed
    at the end, and its count checked against what it must at least hold.
    """
    if source.dim != target.dim:
        raise ValueError(
            f"cannot migrate {source.name!r} (dimension {source.dim}) into {target.name!r} (dimension {target.dim})"
        )
    copied = 0
    for doc_ids, vectors, payloads in iter_points(source, batch_size, metadata):
        target.upsert(doc_ids, vectors, payloads)
        copied += len(doc_ids)
        if progress is not None:
            progress(copied)
    target.flush()
    if target.count() < copied:
        raise RuntimeError(f"{target.name!r} holds {target.count()} points after {copied} were copied into it")
    logger.info("migrated %d points from %r to %r", copied, source.name, target.name)
    return copied
