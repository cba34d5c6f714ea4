"""Scores: triplet success, STS Spearman, clustering v-measure, robustness, two-aspect sets, and
the leave-aspects-out summary over a whole report.

Every task only calls ``embedder.encode(texts, instruction)`` (with ``return_answers=True`` for
answer diversity, when the embedder takes it). Texts are de-duplicated and sent once per
instruction, and ``evaluate`` shares the vectors between tasks.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .answers import AnswerStats, answer_stats
from .tasks import (
    KINDS,
    ClusteringTask,
    InstructedEmbedder,
    RobustnessTask,
    STSRecord,
    STSTask,
    Task,
    TripletRecord,
    TripletTask,
    TwoAspectTask,
    unique,
)

logger = logging.getLogger(__name__)


def harmonic_mean(values: Iterable[float]) -> float:
    values = list(values)
    if any(math.isnan(value) for value in values):
        return math.nan
    if any(value <= 0 for value in values):
        return 0.0
    return len(values) / sum(1.0 / value for value in values)


def mean(values: Iterable[float]) -> float:
    return float(np.mean(list(values)))


def _spread(values: Iterable[float]) -> float:
    values = list(values)
    return max(values) - min(values)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TripletResult:
    per_aspect: dict[str, float]
    counts: dict[str, int]

    @property
    def harmonic_mean(self) -> float:
        return harmonic_mean(self.per_aspect.values())

    def scores(self) -> dict[str, float]:
        return {**self.per_aspect, "harmonic_mean": self.harmonic_mean}


@dataclass(frozen=True)
class STSResult:
    per_instruction: dict[str, float]
    overall: float
    counts: dict[str, int]

    def scores(self) -> dict[str, float]:
        return {**self.per_instruction, "overall": self.overall}


@dataclass(frozen=True)
class ClusteringResult:
    per_aspect: dict[str, float]
    counts: dict[str, int]

    @property
    def mean(self) -> float:
        return mean(self.per_aspect.values())

    def scores(self) -> dict[str, float]:
        return {**self.per_aspect, "mean": self.mean}


@dataclass(frozen=True)
class RobustnessResult:
    per_kind: dict[str, dict[str, float]]
    """kind -> aspect -> score, averaged over that kind's paraphrases."""
    aggregate: str
    """How aspects combine: "harmonic_mean" (triplet base) or "mean" (clustering base)."""

    def score(self, kind: str) -> float:
        combine = harmonic_mean if self.aggregate == "harmonic_mean" else mean
        return combine(self.per_kind[kind].values())

    def scores(self) -> dict[str, float]:
        by_kind = {kind: self.score(kind) for kind in KINDS}
        return {
            **by_kind,
            "correct-implicit": by_kind["correct"] - by_kind["implicit"],
            "correct-incorrect": by_kind["correct"] - by_kind["incorrect"],
        }


@dataclass(frozen=True)
class AspectResult:
    """One aspect of a two-aspect set, under each wording of its question (the first is the main one)."""

    kind: str
    held_out: bool
    triplet: dict[str, float]
    """wording -> triplet success rate."""
    v_measure: dict[str, float]
    """wording -> clustering v-measure."""
    answers: AnswerStats | None
    """The model's answers under the first wording; None for embedders that do not answer."""

    def scores(self) -> dict[str, float]:
        main = next(iter(self.triplet))
        scores = {
            "triplet": self.triplet[main],
            "v_measure": self.v_measure[main],
            "triplet_spread": _spread(self.triplet.values()),
            "v_measure_spread": _spread(self.v_measure.values()),
        }
        if self.answers is not None:
            scores |= {"distinct_answers": float(self.answers.distinct), "top_answer_share": self.answers.top_share}
        return scores


@dataclass(frozen=True)
class TwoAspectResult:
    per_aspect: dict[str, AspectResult]

    def scores(self) -> dict[str, float]:
        scores = {f"{aspect}.{metric}": value for aspect, result in self.per_aspect.items()
                  for metric, value in result.scores().items()}
        return {**scores, "triplet_hm": harmonic_mean(result.scores()["triplet"] for result in self.per_aspect.values())}


TaskResult = Union[TripletResult, STSResult, ClusteringResult, RobustnessResult, TwoAspectResult]

SUMMARY_GROUPS = ("project", "fresh", "held_out")
"""The summary's columns: the project's own sets (and any other triplet/clustering task), the
two-aspect sets' aspects of kinds the training data asks about, and their held-out kinds."""


def _group_summary(aspects: Sequence[AspectResult]) -> dict[str, float]:
    triplets = [a.scores()["triplet"] for a in aspects]
    v_measures = [a.scores()["v_measure"] for a in aspects]
    summary = {
        "triplet_hm": harmonic_mean(triplets), "triplet_min": min(triplets),
        "v_measure_mean": mean(v_measures), "v_measure_min": min(v_measures),
        "triplet_spread_max": max(a.scores()["triplet_spread"] for a in aspects),
        "v_measure_spread_max": max(a.scores()["v_measure_spread"] for a in aspects),
    }
    shares = [a.answers.top_share for a in aspects if a.answers is not None]
    return summary | ({"top_answer_share_max": max(shares)} if shares else {})


@dataclass(frozen=True)
class EvaluationReport:
    results: dict[str, TaskResult] = field(default_factory=dict)

    def scores(self) -> dict[str, dict[str, float]]:
        """task name -> metric -> value (JSON-serialisable)."""
        return {name: result.scores() for name, result in self.results.items()}

    def summary(self) -> dict[str, float]:
        """``"group.metric" -> value`` for the groups of ``SUMMARY_GROUPS`` that the report has.

        ``held_out.triplet_hm`` is the leave-aspects-out score: the harmonic mean of triplet success
        over the aspects whose kind no training data asks about.
        """
        results = self.results.values()
        triplets = [v for r in results if isinstance(r, TripletResult) for v in r.per_aspect.values()]
        v_measures = [v for r in results if isinstance(r, ClusteringResult) for v in r.per_aspect.values()]
        groups: dict[str, dict[str, float]] = {"project": {}}
        if triplets:
            groups["project"] |= {"triplet_hm": harmonic_mean(triplets), "triplet_min": min(triplets)}
        if v_measures:
            groups["project"] |= {"v_measure_mean": mean(v_measures), "v_measure_min": min(v_measures)}
        aspects = [a for r in results if isinstance(r, TwoAspectResult) for a in r.per_aspect.values()]
        for group, held_out in (("fresh", False), ("held_out", True)):
            members = [a for a in aspects if a.held_out == held_out]
            if members:
                groups[group] = _group_summary(members)
        return {f"{group}.{metric}": value for group, metrics in groups.items() for metric, value in metrics.items()}


# --------------------------------------------------------------------------- embedding


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _answers_supported(embedder: InstructedEmbedder) -> bool:
    try:
        return "return_answers" in inspect.signature(embedder.encode).parameters
    except (TypeError, ValueError):
        return False


class _UnitVectors:
    """(instruction, text) -> unit vector (and answer), filled with one ``encode`` call per request.

    Re-normalising here makes cosine a dot product whatever the embedder returns, and the memo lets
    tasks that share texts and instructions (a robustness task and its base) reuse vectors.
    """

    def __init__(self, embedder: InstructedEmbedder, encode_kwargs: Mapping[str, Any]) -> None:
        self._embedder = embedder
        self._kwargs = dict(encode_kwargs)
        self._store: dict[tuple[str, str], np.ndarray] = {}
        self._answers: dict[tuple[str, str], str] = {}
        self.answers_supported = _answers_supported(embedder)
        encoder = sys.modules.get("inbedder_index.encoder")  # not imported: the embedder cannot be an InBedder
        self._shares_input = encoder is not None and isinstance(embedder, encoder.InBedder)
        self._ignores_instruction = bool(getattr(embedder, "ignores_instruction", False))  # one vector per text

    def _key(self, instruction: str, text: str) -> tuple[str, str]:
        return ("" if self._ignores_instruction else instruction, text)

    def _put(self, texts: list[str], instruction: str, vectors: Any, answers: Sequence[str] | None) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(
                f"{type(self._embedder).__name__}.encode returned shape {vectors.shape} "
                f"for {len(texts)} texts; expected (n_texts, dim)"
            )
        for text, vector in zip(texts, unit_rows(vectors)):
            self._store[self._key(instruction, text)] = vector
        if answers is not None:
            self._answers.update((self._key(instruction, text), answer) for text, answer in zip(texts, answers))

    def _encode(self, texts: list[str], instruction: str, answers: bool) -> None:
        result = self._embedder.encode(texts, instruction, **self._kwargs, **({"return_answers": True} if answers else {}))
        self._put(texts, instruction, *(result if answers else (result, None)))

    def prefetch(self, texts: Sequence[str], instructions: Sequence[str]) -> None:
        """Vectors and answers under several instructions in one call, for an InBedder: a causal
        model then runs each text's input once for all of them (other embedders: a no-op)."""
        if not self._shares_input:
            return
        missing = unique(t for t in texts if any(self._key(i, t) not in self._answers for i in instructions))
        if missing:
            results = self._embedder.encode(missing, list(instructions), **self._kwargs, return_answers=True)
            for instruction, (vectors, answers) in results.items():
                self._put(missing, instruction, vectors, answers)

    def get(self, texts: Sequence[str], instruction: str) -> np.ndarray:
        """Rows aligned with ``texts``; only texts not seen under ``instruction`` are encoded."""
        missing = unique(text for text in texts if self._key(instruction, text) not in self._store)
        if missing:
            self._encode(missing, instruction, answers=False)
        return np.stack([self._store[self._key(instruction, text)] for text in texts])

    def answers(self, texts: Sequence[str], instruction: str) -> list[str] | None:
        """The embedder's answers (None if it gives none); call before ``get`` to encode only once."""
        if not self.answers_supported:
            return None
        missing = unique(text for text in texts if self._key(instruction, text) not in self._answers)
        if missing:
            self._encode(missing, instruction, answers=True)
        return [self._answers[self._key(instruction, text)] for text in texts]


# --------------------------------------------------------------------------- scoring


def _triplet_success_rate(
    vectors: _UnitVectors, records: Sequence[TripletRecord], instruction: str | None = None
) -> float:
    """Share of records where cos(anchor, positive) > cos(anchor, negative); ties count as failures.

    ``instruction`` replaces every record's own instruction (robustness paraphrases).
    """
    groups: dict[str, list[TripletRecord]] = {}
    for record in records:
        groups.setdefault(instruction or record.instruction, []).append(record)
    hits = 0
    for group_instruction, group in groups.items():
        n = len(group)
        texts = [r.anchor for r in group] + [r.positive for r in group] + [r.negative for r in group]
        matrix = vectors.get(texts, group_instruction)
        anchor, positive, negative = matrix[:n], matrix[n : 2 * n], matrix[2 * n :]
        hits += int(np.sum(np.sum(anchor * positive, axis=1) > np.sum(anchor * negative, axis=1)))
    return hits / len(records)


def _v_measure(vectors: _UnitVectors, task: ClusteringTask, aspect: str, instruction: str) -> float:
    from sklearn.cluster import KMeans
    from sklearn.metrics import v_measure_score
    from threadpoolctl import threadpool_limits

    labels = task.labels(aspect)
    embeddings = vectors.get(task.texts(aspect), instruction)
    kmeans = KMeans(n_clusters=len(set(labels)), n_init=10, random_state=task.seed)
    with threadpool_limits(1):  # a few dozen points: threads cost more than they save (10x on 2 busy cores)
        return float(v_measure_score(labels, kmeans.fit_predict(embeddings)))


def _spearman(predicted: np.ndarray, gold: np.ndarray, what: str) -> float:
    from scipy.stats import spearmanr

    if len(gold) < 2 or np.ptp(gold) == 0 or np.ptp(predicted) == 0:
        logger.warning("Spearman correlation undefined for %s (fewer than two distinct values)", what)
        return math.nan
    return float(spearmanr(predicted, gold).statistic)


def _triplets(vectors: _UnitVectors, task: TripletTask) -> TripletResult:
    per_aspect = {aspect: _triplet_success_rate(vectors, task.for_aspect(aspect)) for aspect in task.aspects}
    counts = {aspect: len(task.for_aspect(aspect)) for aspect in task.aspects}
    return TripletResult(per_aspect, counts)


def _sts(vectors: _UnitVectors, task: STSTask) -> STSResult:
    groups: dict[str, list[STSRecord]] = {}
    for record in task.records:
        groups.setdefault(record.instruction, []).append(record)
    per_instruction: dict[str, float] = {}
    cosines: list[np.ndarray] = []
    golds: list[np.ndarray] = []
    for instruction, group in groups.items():
        n = len(group)
        matrix = vectors.get([r.sentence1 for r in group] + [r.sentence2 for r in group], instruction)
        cosine = np.sum(matrix[:n] * matrix[n:], axis=1)
        gold = np.array([r.score for r in group], dtype=np.float64)
        per_instruction[instruction] = _spearman(cosine, gold, f"{task.name!r} / {instruction!r}")
        cosines.append(cosine)
        golds.append(gold)
    overall = _spearman(np.concatenate(cosines), np.concatenate(golds), f"{task.name!r} overall")
    return STSResult(per_instruction, overall, {instruction: len(group) for instruction, group in groups.items()})


def _clustering(vectors: _UnitVectors, task: ClusteringTask) -> ClusteringResult:
    per_aspect = {aspect: _v_measure(vectors, task, aspect, task.instructions[aspect]) for aspect in task.aspects}
    return ClusteringResult(per_aspect, {aspect: len(task.texts(aspect)) for aspect in task.aspects})


def _robustness(vectors: _UnitVectors, task: RobustnessTask) -> RobustnessResult:
    base = task.base

    def score(aspect: str, instruction: str) -> float:
        if isinstance(base, TripletTask):
            return _triplet_success_rate(vectors, base.for_aspect(aspect), instruction)
        return _v_measure(vectors, base, aspect, instruction)

    per_kind = {
        kind: {
            aspect: mean(score(aspect, instruction) for instruction in kinds[kind])
            for aspect, kinds in task.alternatives.items()
        }
        for kind in KINDS
    }
    return RobustnessResult(per_kind, "harmonic_mean" if isinstance(base, TripletTask) else "mean")


def _two_aspect(vectors: _UnitVectors, task: TwoAspectTask) -> TwoAspectResult:
    per_aspect: dict[str, AspectResult] = {}
    texts = [record.text for record in task.records]
    vectors.prefetch(texts, [wording for question in task.questions.values() for wording in question.wordings])
    for aspect, question in task.questions.items():
        answers = vectors.answers(texts, question.wordings[0])
        stats = answer_stats(answers) if answers is not None else None
        if stats is not None:
            logger.info("%s / %s: %d distinct answers; %r for %.0f%% of texts", task.name, aspect,
                        stats.distinct, stats.top_answer, 100 * stats.top_share)
        records = task.triplets.for_aspect(aspect)
        per_aspect[aspect] = AspectResult(
            question.kind,
            question.held_out,
            {wording: _triplet_success_rate(vectors, records, wording) for wording in question.wordings},
            {wording: _v_measure(vectors, task.clustering, aspect, wording) for wording in question.wordings},
            stats,
        )
    return TwoAspectResult(per_aspect)


_EVALUATORS: dict[type, Any] = {
    TripletTask: _triplets,
    STSTask: _sts,
    ClusteringTask: _clustering,
    RobustnessTask: _robustness,
    TwoAspectTask: _two_aspect,
}


def evaluate_triplets(embedder: InstructedEmbedder, task: TripletTask, **encode_kwargs: Any) -> TripletResult:
    """Success rate per aspect; each aspect's texts are embedded under their records' instructions."""
    return _triplets(_UnitVectors(embedder, encode_kwargs), task)


def evaluate_sts(embedder: InstructedEmbedder, task: STSTask, **encode_kwargs: Any) -> STSResult:
    """Spearman(cosine, gold) per instruction and over all records together."""
    return _sts(_UnitVectors(embedder, encode_kwargs), task)


def evaluate_clustering(embedder: InstructedEmbedder, task: ClusteringTask, **encode_kwargs: Any) -> ClusteringResult:
    """V-measure per aspect of k-means on the texts embedded under that aspect's instruction."""
    return _clustering(_UnitVectors(embedder, encode_kwargs), task)


def evaluate_robustness(embedder: InstructedEmbedder, task: RobustnessTask, **encode_kwargs: Any) -> RobustnessResult:
    """The base task's per-aspect score under each paraphrase kind (mean over paraphrases)."""
    return _robustness(_UnitVectors(embedder, encode_kwargs), task)


def evaluate_two_aspect(embedder: InstructedEmbedder, task: TwoAspectTask, **encode_kwargs: Any) -> TwoAspectResult:
    """Triplet success and v-measure per aspect under every wording, and the answers' spread."""
    return _two_aspect(_UnitVectors(embedder, encode_kwargs), task)


def evaluate(
    embedder: InstructedEmbedder,
    tasks: Mapping[str, Task] | Iterable[Task] | None = None,
    **encode_kwargs: Any,
) -> EvaluationReport:
    """Run every task (default: the bundled project sets) with one shared vector memo.

    ``encode_kwargs`` (e.g. ``batch_size``, ``show_progress_bar``) go to every ``encode`` call.
    """
    if tasks is None:
        from .suites import builtin_eval_sets

        tasks = builtin_eval_sets()
    pairs = tasks.items() if isinstance(tasks, Mapping) else ((task.name, task) for task in tasks)
    named: dict[str, Task] = {}
    for key, task in pairs:
        if key in named:
            raise ValueError(f"two tasks are named {key!r}")
        named[key] = task
    vectors = _UnitVectors(embedder, encode_kwargs)
    results: dict[str, TaskResult] = {}
    for key, task in named.items():
        evaluator = _EVALUATORS.get(type(task))
        if evaluator is None:
            raise TypeError(f"not an evaluation task: {type(task).__name__}")
        results[key] = evaluator(vectors, task)
        logger.info("%s: %s", key, {metric: round(value, 4) for metric, value in results[key].scores().items()})
    return EvaluationReport(results)
