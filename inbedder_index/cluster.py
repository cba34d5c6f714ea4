"""Personalised clustering: k-means over one instruction's vectors, each cluster summarised.

The paper's use case: the same corpus clusters by whatever the instruction asks about
(feelings, topic, place, ...). A cluster is described by the model's most frequent answers to
the instruction and by the words that are most over-represented in it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._util import import_optional

if TYPE_CHECKING:
    from .corpus import Document
    from .index import InstructionIndex

_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_STOPWORDS = frozenset(
    "the and for that this with was were are but not you your have has had his her its our their they them "
    "she him who what when where which while from into onto about after before over under again very just "
    "all any some can could would should will shall may might must than then there here out off too also "
    "been being did does doing done how why one two get got only more most such own same other each few "
    "yes it's i'm don't can't won't didn't isn't".split()
)


@dataclass
class Cluster:
    label: int
    size: int
    top_answers: list[tuple[str, int]]
    top_words: list[str]
    examples: list[str]
    ids: list[str] = field(repr=False)


@dataclass
class ClusterReport:
    instruction: str
    k: int
    seed: int
    clusters: list[Cluster]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def top_words(texts: list[str], background: Counter[str], total: int, n: int = 6) -> list[str]:
    """Words frequent in ``texts`` and rarer elsewhere (frequency x log inverse document share)."""
    counts = Counter(w for text in texts for w in set(_words(text)))
    scored = {w: c * np.log((1 + total) / (1 + background[w])) + c for w, c in counts.items()}
    return [w for w, _ in sorted(scored.items(), key=lambda item: (-item[1], item[0]))[:n]]


def kmeans(vectors: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """Each row's cluster (0..k-1): k-means with a fixed seed, so a report is reproducible."""
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    if len(vectors) < k:
        raise ValueError(f"cannot make {k} clusters from {len(vectors)} documents; lower k")
    sklearn_cluster = import_optional("sklearn.cluster", "eval")
    return sklearn_cluster.KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)


def summarise(docs: Sequence[Document], labels: np.ndarray, answers: Mapping[str, str], k: int, *,
              examples: int = 3) -> list[Cluster]:
    """Each cluster's size, most frequent answers, over-represented words and examples, largest first."""
    background = Counter(w for d in docs for w in set(_words(d.text)))
    clusters = []
    for label in range(k):
        members = [d for d, assigned in zip(docs, labels) if assigned == label]
        answer_counts = Counter(answers[d.id] for d in members if answers.get(d.id))
        clusters.append(Cluster(
            label=label,
            size=len(members),
            top_answers=answer_counts.most_common(3),
            top_words=top_words([d.text for d in members], background, len(docs)),
            examples=[d.text[:160] for d in members[:examples]],
            ids=[d.id for d in members],
        ))
    clusters.sort(key=lambda c: -c.size)
    return clusters


def cluster_name(cluster: Cluster) -> str:
    """A short name for a cluster: its most frequent answer, else its two most telling words."""
    return cluster.top_answers[0][0] if cluster.top_answers else ", ".join(cluster.top_words[:2])


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """``(n, 2)`` coordinates: the vectors on their first two principal components (PCA by SVD)."""
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    points = centred @ components[:2].T
    return np.pad(points, ((0, 0), (0, 2 - points.shape[1])))  # fewer than 2 components: zeros


def cluster_index(index: InstructionIndex, instruction: str, k: int, *, seed: int = 0, examples: int = 3) -> tuple[
    ClusterReport, np.ndarray, np.ndarray
]:
    """K-means (fixed seed) over ``instruction``'s vectors. Returns the report, the vectors and their labels."""
    docs, chunks = [], []
    for batch, vectors in index.vectors(instruction):
        docs.extend(batch)
        chunks.append(vectors)
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    labels = kmeans(vectors, k, seed=seed)
    clusters = summarise(docs, labels, index.answers(instruction, [d.id for d in docs]), k, examples=examples)
    return ClusterReport(instruction, k, seed, clusters), vectors, labels


def plot_clusters(vectors: np.ndarray, labels: np.ndarray, report: ClusterReport, path: str | Path) -> Path:
    """A 2-D PCA scatter of the vectors coloured by cluster, saved as PNG."""
    import_optional("matplotlib", "eval")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = project_2d(vectors)
    figure, axes = plt.subplots(figsize=(7, 5.5))
    names = {c.label: cluster_name(c) for c in report.clusters}
    for label in sorted(set(labels.tolist())):
        chosen = labels == label
        axes.scatter(points[chosen, 0], points[chosen, 1], s=18, label=f"{label}: {names[label]}"[:40])
    axes.set_title(f"k-means (k={report.k}) under: {report.instruction}"[:90], fontsize=10)
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2")
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
