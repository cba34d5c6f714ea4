"""What an evaluation task holds: records, tasks and their validation (no scoring, no files)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, Union

import numpy as np

from ..errors import EvaluationDataError

KINDS = ("correct", "implicit", "incorrect")
"""The instruction paraphrase kinds a robustness task scores, in report order."""

HELD_OUT_KINDS = ("urgency", "stance", "politeness", "audience", "outcome_resolution", "blame_responsibility")
"""Aspect kinds kept out of the project's training data, so scores on them show how a model does
on questions it was never trained to answer (the leave-aspects-out evaluation)."""


class InstructedEmbedder(Protocol):
    """Anything that embeds texts under an instruction: ``InBedder`` or a baseline."""

    def encode(self, texts: list[str], instruction: str, **kwargs: Any) -> np.ndarray: ...


_T = TypeVar("_T")


def unique(values: Iterable[_T]) -> list[_T]:
    """``values`` without repeats, in first-seen order."""
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class TripletRecord:
    anchor: str
    positive: str
    negative: str
    instruction: str
    aspect: str


@dataclass(frozen=True)
class STSRecord:
    sentence1: str
    sentence2: str
    instruction: str
    score: float


@dataclass(frozen=True)
class ClusteringRecord:
    text: str
    labels: Mapping[str, str]
    """aspect -> gold label; a record may leave an aspect out."""


@dataclass
class TripletTask:
    records: list[TripletRecord]
    name: str = "triplets"

    def __post_init__(self) -> None:
        if not self.records:
            raise EvaluationDataError(f"triplet task {self.name!r} has no records")

    @property
    def aspects(self) -> list[str]:
        return unique(record.aspect for record in self.records)

    def for_aspect(self, aspect: str) -> list[TripletRecord]:
        return [record for record in self.records if record.aspect == aspect]


@dataclass
class STSTask:
    records: list[STSRecord]
    name: str = "sts"

    def __post_init__(self) -> None:
        if not self.records:
            raise EvaluationDataError(f"STS task {self.name!r} has no records")


@dataclass
class ClusteringTask:
    records: list[ClusteringRecord]
    instructions: dict[str, str]
    """aspect -> the instruction every text is embedded under when clustering by that aspect."""
    name: str = "clustering"
    seed: int = 0

    def __post_init__(self) -> None:
        labelled = unique(aspect for record in self.records for aspect in record.labels)
        if not labelled:
            raise EvaluationDataError(f"clustering task {self.name!r} has no labelled records")
        missing = [aspect for aspect in labelled if aspect not in self.instructions]
        if missing:
            raise EvaluationDataError(
                f"clustering task {self.name!r}: no instruction for aspect(s) {missing}; "
                "give records an 'instructions' field or pass instructions={aspect: ...}"
            )
        for aspect in self.instructions:
            if len(set(self.labels(aspect))) < 2:
                raise EvaluationDataError(
                    f"clustering task {self.name!r}: aspect {aspect!r} needs at least two gold labels"
                )

    @property
    def aspects(self) -> list[str]:
        return list(self.instructions)

    def texts(self, aspect: str) -> list[str]:
        return [record.text for record in self.records if aspect in record.labels]

    def labels(self, aspect: str) -> list[str]:
        return [record.labels[aspect] for record in self.records if aspect in record.labels]


def check_alternatives(value: Any) -> dict[str, list[str]]:
    """A robustness record's ``{correct: [...], implicit: [...], incorrect: [...]}``, validated."""
    if not isinstance(value, Mapping) or set(value) != set(KINDS):
        raise ValueError(f"alternatives must have exactly the keys {list(KINDS)}, got {value!r}")
    for kind in KINDS:
        items = value[kind]
        if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip() for i in items):
            raise ValueError(f"alternatives[{kind!r}] must be a non-empty list of instructions")
    return {kind: list(value[kind]) for kind in KINDS}


@dataclass
class RobustnessTask:
    base: TripletTask | ClusteringTask
    alternatives: dict[str, dict[str, list[str]]]
    """aspect -> kind ("correct", "implicit", "incorrect") -> paraphrased instructions."""
    name: str = "robustness"

    def __post_init__(self) -> None:
        if set(self.alternatives) != set(self.base.aspects):
            raise EvaluationDataError(
                f"robustness task {self.name!r}: alternatives cover aspects {sorted(self.alternatives)}, "
                f"the task has {sorted(self.base.aspects)}"
            )
        try:
            self.alternatives = {aspect: check_alternatives(kinds) for aspect, kinds in self.alternatives.items()}
        except ValueError as exc:
            raise EvaluationDataError(f"robustness task {self.name!r}: {exc}") from exc


def pair_triplets(
    pool: Sequence[ClusteringRecord], instructions: Mapping[str, str], *, per_anchor: int = 3
) -> list[TripletRecord]:
    """Triplets over texts labelled on two aspects (the keys of ``instructions``, in order).

    For each anchor, a first-aspect triplet takes a positive with the anchor's first label but
    another second label, and a negative with the anchor's second label but another first label.
    Each second-aspect triplet is the mirror of one (positive and negative swapped), so an
    embedder that ignores the instruction scores success(first) + success(second) <= 1: at most
    0.5 harmonic mean, by construction. Candidates are picked by rotation over ``pool`` (no RNG).
    """
    first, second = instructions
    one: list[TripletRecord] = []
    two: list[TripletRecord] = []
    for i, anchor in enumerate(pool):
        same, other = anchor.labels[first], anchor.labels[second]
        positives = [r.text for r in pool if r.labels[first] == same and r.labels[second] != other]
        negatives = [r.text for r in pool if r.labels[first] != same and r.labels[second] == other]
        if min(len(positives), len(negatives)) < per_anchor:
            raise EvaluationDataError(
                f"text {anchor.text[:60]!r}: fewer than {per_anchor} texts share its {first} but not its "
                f"{second} (or the reverse); every pair of labels needs several texts"
            )
        for j in range(per_anchor):
            positive = positives[(i * per_anchor + j) % len(positives)]
            negative = negatives[(i * per_anchor + j) % len(negatives)]
            one.append(TripletRecord(anchor.text, positive, negative, instructions[first], first))
            two.append(TripletRecord(anchor.text, negative, positive, instructions[second], second))
    return one + two


@dataclass(frozen=True)
class AspectQuestion:
    """One aspect of a two-aspect set: its kind (``aspect-kinds``) and 3+ wordings of its question;
    the first wording is the one triplets and clustering use, the rest measure paraphrase spread."""

    kind: str
    wordings: tuple[str, ...]

    @property
    def held_out(self) -> bool:
        return self.kind in HELD_OUT_KINDS


@dataclass
class TwoAspectTask:
    """Texts labelled on two aspects that vary independently, each asked in several wordings.

    It yields mirrored triplets per aspect (``triplets``), k-means clustering per aspect
    (``clustering``), per-wording scores (paraphrase spread) and, for embedders that answer,
    the spread of the model's answers.
    """

    records: list[ClusteringRecord]
    questions: dict[str, AspectQuestion]
    name: str = "two-aspect"
    per_anchor: int = 3
    seed: int = 0
    triplets: TripletTask = field(init=False)
    clustering: ClusteringTask = field(init=False)

    def __post_init__(self) -> None:
        where = f"two-aspect task {self.name!r}"
        if len(self.questions) != 2:
            raise EvaluationDataError(f"{where}: needs exactly two aspects in 'questions', got {sorted(self.questions)}")
        for aspect, question in self.questions.items():
            wordings = [w.strip().lower() for w in question.wordings]
            if len(wordings) < 3 or len(set(wordings)) != len(wordings) or not all(wordings):
                raise EvaluationDataError(f"{where}: aspect {aspect!r} needs 3 or more distinct non-blank wordings")
            if not question.kind.strip():
                raise EvaluationDataError(f"{where}: aspect {aspect!r} has no kind")
        for number, record in enumerate(self.records, 1):
            if set(record.labels) != set(self.questions):
                raise EvaluationDataError(
                    f"{where}: record {number} ({record.text[:40]!r}) is labelled on {sorted(record.labels)}, "
                    f"expected exactly {sorted(self.questions)}"
                )
        texts = [record.text for record in self.records]
        if len(set(texts)) != len(texts):
            raise EvaluationDataError(f"{where}: a text appears twice")
        instructions = {aspect: question.wordings[0] for aspect, question in self.questions.items()}
        self.clustering = ClusteringTask(self.records, instructions, self.name, self.seed)
        self.triplets = TripletTask(pair_triplets(self.records, instructions, per_anchor=self.per_anchor), self.name)

    @property
    def aspects(self) -> list[str]:
        return list(self.questions)


Task = Union[TripletTask, STSTask, ClusteringTask, RobustnessTask, TwoAspectTask]
