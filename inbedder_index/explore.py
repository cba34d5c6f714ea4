"""The explorer's map: one instruction's collection projected to 2-D, clustered and labelled.

An analyst wants to see how a corpus falls apart under a question ("How does the customer
feel?") before reading it. The map is what ``inbedder-index cluster`` reports (its k-means and
its cluster names, from :mod:`inbedder_index.cluster`), drawn on the first two principal
components. A large collection is mapped through a fixed-seed sample of at most ``limit``
documents, so a map costs about the same at a million documents as at a thousand.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .cluster import cluster_name, kmeans, project_2d, summarise

if TYPE_CHECKING:
    from .index import InstructionIndex

logger = logging.getLogger(__name__)

MAX_POINTS = 10_000
"""The most documents one map shows (a larger ``limit`` is refused)."""

MAX_CLUSTERS = 50
"""The most clusters one map is coloured by."""

TEXT_CHARS = 200
"""Characters of each document's text a point carries (enough for a tooltip)."""


@dataclass(frozen=True)
class MapPoint:
    """One document on the map."""

    id: str
    x: float
    y: float
    cluster: int
    answer: str | None
    text: str


@dataclass(frozen=True)
class MapCluster:
    """One cluster: its number (as in the points), its name and its most frequent answers."""

    cluster: int
    label: str
    size: int
    top_answers: list[tuple[str, int]]


@dataclass(frozen=True)
class CollectionMap:
    """The map of a collection: ``total`` documents in the index, ``points`` of them drawn."""

    instruction: str
    points: list[MapPoint]
    clusters: list[MapCluster]
    sampled: bool
    total: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bounded(name: str, value: Any, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{name} must be an integer from 1 to {most}, got {value!r}")
    return value


def collection_map(index: InstructionIndex, instruction: str, *, limit: int = 2000, clusters: int = 8,
                   seed: int = 0) -> CollectionMap:
    """The 2-D map of ``instruction``'s collection: at most ``limit`` documents (a fixed-seed sample
    when the index holds more), in at most ``clusters`` k-means clusters, each named by its most
    frequent answer. Documents without a vector yet (an unfinished write) are left out."""
    limit = _bounded("limit", limit, MAX_POINTS)
    clusters = _bounded("clusters", clusters, MAX_CLUSTERS)
    ids = index.ids()
    total = len(ids)
    sampled = total > limit
    if sampled:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
        ids = [ids[i] for i in chosen]
    stored = index.get_vectors(ids, instruction)  # first: an unknown instruction fails here
    docs = [doc for doc in index.get(ids) if doc.id in stored]
    if not docs:
        return CollectionMap(instruction, [], [], sampled, total)
    vectors = np.stack([stored[doc.id] for doc in docs])
    k = min(clusters, len(docs))
    labels = kmeans(vectors, k, seed=seed) if k >= 2 else np.zeros(len(docs), dtype=int)
    answers = index.answers(instruction, [doc.id for doc in docs])
    xy = project_2d(vectors)
    points = [
        MapPoint(doc.id, float(x), float(y), int(label), answers.get(doc.id), doc.text[:TEXT_CHARS])
        for doc, (x, y), label in zip(docs, xy, labels)
    ]
    named = [MapCluster(c.label, cluster_name(c), c.size, c.top_answers)
             for c in summarise(docs, labels, answers, k, examples=0)]
    logger.debug("mapped %d of %d documents under %r in %d clusters", len(points), total, instruction, k)
    return CollectionMap(instruction, points, named, sampled, total)
