"""Evaluation tasks from files: local JSONL/JSON/CSV in the shapes ``load_task`` documents, and the
InBedder paper's Hugging Face datasets; ``save_task`` writes the shapes back."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatasetNotAvailableError, EvaluationDataError
from ..readers import json_lines
from .tasks import (
    AspectQuestion,
    ClusteringRecord,
    ClusteringTask,
    RobustnessTask,
    STSRecord,
    STSTask,
    Task,
    TripletRecord,
    TripletTask,
    TwoAspectTask,
    check_alternatives,
    unique,
)

logger = logging.getLogger(__name__)

TASK_KINDS = ("triplet", "sts", "clustering", "robustness", "two_aspect")
_DATA_SUFFIXES = (".jsonl", ".json", ".csv")

# --------------------------------------------------------------------------- reading files


def _jsonl_rows(path: Path, lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    for number, row in json_lines(lines, lambda n, why: EvaluationDataError(f"{path}:{n}: invalid JSON ({why})")):
        yield f"{path}:{number}", row


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


def read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
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
    questions: dict[str, AspectQuestion] = field(default_factory=dict)


def _questions(value: Any) -> dict[str, AspectQuestion]:
    questions = {}
    for aspect, spec in _mapping(value, "questions").items():
        spec = _mapping(spec, f"questions.{aspect}")
        wordings, kind = spec.get("wordings"), spec.get("kind")
        if not isinstance(wordings, list) or not all(isinstance(w, str) and w.strip() for w in wordings):
            raise ValueError(f"field 'questions.{aspect}.wordings' must be a list of non-blank questions")
        if not isinstance(kind, str) or not kind.strip():
            raise ValueError(f"field 'questions.{aspect}.kind' must name the aspect's kind, e.g. 'urgency'")
        questions[str(aspect)] = AspectQuestion(kind, tuple(wordings))
    return questions


def _infer_kind(row: Mapping[str, Any]) -> str:
    if "sentence1" in row:
        return "sts"
    if "questions" in row:
        return "two_aspect"
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
            _merge(parsed.alternatives, {record.aspect: check_alternatives(row["alternatives"])}, "alternatives")
        return record
    clustering = _clustering_record(row, aspect)
    _merge(parsed.instructions, _string_map(row.get("instructions", {}), "instructions"), "instructions")
    for key, kinds in _mapping(row.get("alternatives", {}), "alternatives").items():
        _merge(parsed.alternatives, {str(key): check_alternatives(kinds)}, "alternatives")
    if "questions" in row:
        _merge(parsed.questions, _questions(row["questions"]), "questions")
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
    if kind == "two_aspect":
        if not parsed.questions:
            raise EvaluationDataError(f"two-aspect task {name!r}: no record carries 'questions'")
        return TwoAspectTask(records, parsed.questions, name)
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
    contents = [(read_rows(path), aspect) for path, aspect in files]
    if kind is None:
        where, first = contents[0][0][0]
        try:
            kind = _infer_kind(first)
        except ValueError as exc:
            raise EvaluationDataError(f"{where}: {exc}") from exc
    if kind not in TASK_KINDS:
        raise EvaluationDataError(f"unknown task kind {kind!r}; use one of {TASK_KINDS}")
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
    a folder holding its files). ``task``: "triplet", "sts", "clustering", "robustness" or
    "two_aspect"; inferred from the first record when omitted.

    Record shapes (JSON; in CSV, nested fields are dotted columns such as ``labels.topic``):
    triplet ``{anchor, positive, negative, instruction, aspect}``; STS ``{sentence1, sentence2,
    instruction, score}``; clustering ``{text, labels: {aspect: label}, instructions: {aspect:
    instruction}}``; robustness: triplet or clustering records that also carry ``alternatives``
    (``{correct: [...], implicit: [...], incorrect: [...]}`` for a triplet record's aspect,
    ``{aspect: {...}}`` for a clustering record; JSON only); two-aspect: clustering records
    labelled on the same two aspects, the first carrying ``questions: {aspect: {kind, wordings:
    [3+ questions]}}`` (JSON only). Rows in the hub layout (triplets
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
    if isinstance(task, TwoAspectTask):
        rows = [{"text": record.text, "labels": dict(record.labels)} for record in task.records]
        questions = {aspect: {"kind": q.kind, "wordings": list(q.wordings)} for aspect, q in task.questions.items()}
        return [{**rows[0], "questions": questions}, *rows[1:]]
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
        columns = unique(key for row in flat for key in row)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(flat)
    else:
        raise EvaluationDataError(f"{path}: save_task writes .jsonl or .csv, not {suffix!r}")
    return path

