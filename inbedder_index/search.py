"""Search under one instruction or several at once, and count what the model answered.

Each document carries, per instruction, a vector *and* the model's short answer ("Furious",
"A refund"). This module is everything an index reads to answer a question about them:

* :func:`search_vector`: the nearest documents under one instruction;
* :func:`search_combined_vectors`: under several instructions at once. A document's score is
  the weighted sum of its cosines (equal weights by default). Candidates come from each
  collection and are scored exactly under every instruction (from the stored vectors where a
  collection did not return them); the candidate lists are widened until no document outside
  them can beat the k-th hit (the threshold test of Fagin's algorithm), so the ranking equals a
  brute-force one wherever the collections search exactly;
* :func:`facets`: the most frequent stored answers under an instruction, with counts;
* :func:`matching_ids`: the documents that pass a filter.

Filters are the metadata filters of :mod:`.backends.base` plus one reserved key,
``"$answer"``: ``{"$answer": {instruction: answer or [answers]}, "lang": "en"}`` keeps the
documents whose stored answer under each named instruction is one of those given. Answers are
compared normalised (:func:`normalise_answer`). Metadata keys cannot start with ``$`` (refused
on write, :mod:`.limits`), so the key never collides with a field. Only answers of the current
texts are stored (the corpus deletes a document's answers when its text changes), so an answer
of a text that changed and was not re-encoded yet never matches and is never counted.

A document is ranked by a combined search only when it has a vector under every instruction
asked (one whose text changed and awaits re-encoding under some instruction is left out).
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends.base import VectorBackend, validate_filter, validate_query
from .corpus import Corpus, Document
from .errors import AnswersNotKeptError, IncompleteIndexError
from .limits import MAX_K, check_k

logger = logging.getLogger(__name__)

ANSWER_KEY = "$answer"
"""The filter key that selects documents by their stored answer under an instruction."""

CANDIDATES_PER_HIT = 4
"""A combined search first asks each collection for this many candidates per hit wanted ..."""

MIN_CANDIDATES = 64
"""... and at least this many; each widening multiplies the number by 4, up to ``limits.MAX_K``."""


@dataclass(frozen=True)
class Hit:
    """One search result: ``score`` ranks it; ``scores`` and ``answers`` hold its cosine and the
    model's stored answer under each instruction searched (``answer``: under the first one)."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    answers: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """What search reads from one open index; the index builds it, so this module never sees its
    internal state. Each callable refuses an unknown instruction with an error naming it."""

    corpus: Corpus
    collection: Callable[[str], VectorBackend]
    """An instruction's collection for reading (never created by a read)."""
    collection_name: Callable[[str], str]
    """The name the corpus keeps an instruction's answers under."""
    keeps_answers: Callable[[str], bool]
    """Whether an instruction's collection was built with answers (``answers=True``)."""
    encoder: Callable[[], Any]
    """The model (an ``InBedder``), loaded on first call: only once every check has passed."""
    where: str
    """The index's location, for messages."""


# --------------------------------------------------------------------------- filters


def normalise_answer(answer: str) -> str:
    """An answer as it is compared and counted: case folded, runs of spaces as one, and no
    leading or trailing spaces or trailing punctuation ("  Furious! " and "furious" are one)."""
    text = " ".join(answer.casefold().split())
    end = len(text)
    while end and (text[end - 1].isspace() or unicodedata.category(text[end - 1]).startswith("P")):
        end -= 1
    return text[:end]


@dataclass(frozen=True)
class SearchFilter:
    """A filter split into the part each store resolves: metadata fields (the vector store or
    the corpus) and normalised answers per instruction (the corpus)."""

    metadata: dict[str, Any]
    answers: dict[str, frozenset[str]]

    @classmethod
    def parse(cls, filter: Mapping[str, Any] | None) -> SearchFilter:
        """Check a filter (metadata fields and ``"$answer"``); ValueError names the first problem."""
        if filter is None:
            return cls({}, {})
        if not isinstance(filter, Mapping):
            raise ValueError(f"a filter must be a mapping of field -> value, not {type(filter).__name__}")
        reserved = [key for key in filter if isinstance(key, str) and key.startswith("$") and key != ANSWER_KEY]
        if reserved:
            raise ValueError(f"unknown filter key {reserved[0]!r}: the only key starting with '$' is {ANSWER_KEY!r} "
                             f"({{{ANSWER_KEY!r}: {{instruction: [answers]}}}}); metadata fields never start with '$'")
        metadata = {key: value for key, value in filter.items() if key != ANSWER_KEY}
        validate_filter(metadata)
        return cls(metadata, _answer_part(filter[ANSWER_KEY]) if ANSWER_KEY in filter else {})

    def __bool__(self) -> bool:
        return bool(self.metadata or self.answers)


def _answer_part(value: Any) -> dict[str, frozenset[str]]:
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"filter {ANSWER_KEY!r} must map instructions to an answer or a list of answers, "
                         f"e.g. {{{ANSWER_KEY!r}: {{'How does the customer feel?': ['angry', 'furious']}}}}; "
                         f"got {value!r}")
    answers: dict[str, frozenset[str]] = {}
    for instruction, wanted in value.items():
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"filter {ANSWER_KEY!r}: {instruction!r} is not an instruction")
        values = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        if not values or not all(isinstance(item, str) for item in values):
            raise ValueError(f"filter {ANSWER_KEY!r} under {instruction!r}: give an answer or a non-empty list of "
                             f"answers (strings), not {wanted!r}")
        answers[instruction] = frozenset(normalise_answer(item) for item in values)
    return answers


def _require_answers(source: Source, instruction: str) -> str:
    """The corpus name of an instruction's answers, or an error when it was built without them."""
    name = source.collection_name(instruction)
    if not source.keeps_answers(instruction):
        raise AnswersNotKeptError(
            f"the collection of {instruction!r} in {source.where} was built with answers=False, so it keeps no "
            f"answers to count or filter on; rebuild it with answers: index.drop_instruction({instruction!r}) then "
            f"index.add_instruction({instruction!r}) (CLI: inbedder-index drop {source.where} --instruction "
            f"{instruction!r}, then inbedder-index build without --no-answers)")
    return name


def _checked(source: Source, filter: Mapping[str, Any] | None) -> SearchFilter:
    """A filter parsed, and the instructions it names checked (known, built with answers)."""
    parsed = SearchFilter.parse(filter)
    for instruction in parsed.answers:
        _require_answers(source, instruction)
    return parsed


def _answer_ids(source: Source, answers: Mapping[str, frozenset[str]]) -> set[str] | None:
    """Ids whose stored answer under every named instruction is one of those wanted (None: no answer part)."""
    matching: set[str] | None = None
    for instruction, wanted in answers.items():
        name = _require_answers(source, instruction)
        found = {doc_id for page in source.corpus.iter_answers(name) for doc_id, answer in page
                 if normalise_answer(answer) in wanted and (matching is None or doc_id in matching)}
        matching = found
        if not matching:
            break
    return matching


def matching_ids(source: Source, filter: Mapping[str, Any] | SearchFilter | None) -> set[str] | None:
    """Ids of the documents that pass ``filter`` (metadata and answers, through the corpus), or
    None when the filter is empty (every document passes)."""
    parsed = filter if isinstance(filter, SearchFilter) else _checked(source, filter)
    ids = _answer_ids(source, parsed.answers)
    if parsed.metadata and ids != set():
        by_metadata = source.corpus.ids_matching(parsed.metadata)
        ids = by_metadata if ids is None else ids & by_metadata
    return ids


@dataclass(frozen=True)
class _Restriction:
    """A filter as one backend takes it: native metadata conditions and/or candidate ids."""

    metadata: dict[str, Any] | None
    candidates: set[str] | None

    @property
    def empty(self) -> bool:
        return self.candidates is not None and not self.candidates


def _restriction(source: Source, parsed: SearchFilter, native: bool) -> _Restriction:
    """Backends that filter payloads natively get the metadata part as is; for the others the
    corpus resolves it. Answers are always resolved by the corpus, into candidate ids."""
    if native:
        return _Restriction(parsed.metadata or None, _answer_ids(source, parsed.answers))
    return _Restriction(None, matching_ids(source, parsed))


# --------------------------------------------------------------------------- searching


def _searchable(source: Source, instruction: str) -> VectorBackend:
    backend = source.collection(instruction)
    if backend.count() == 0 and len(source.corpus):
        raise IncompleteIndexError(
            f"the collection of {instruction!r} holds no vectors, though the index has {len(source.corpus)} "
            f"documents; finish it with: inbedder-index build {source.where} --instruction {instruction!r}")
    return backend


def search_text(source: Source, query: str, instruction: str, *, k: int = 10,
                filter: Mapping[str, Any] | None = None) -> list[Hit]:
    """The ``k`` documents nearest to ``query`` when both are embedded under ``instruction``."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, not {type(query).__name__}")
    check_k(k)
    parsed = _checked(source, filter)
    backend = _searchable(source, instruction)  # an unknown, missing or empty collection fails before the model loads
    vector = source.encoder().encode([query], instruction)[0]
    return _nearest(source, backend, instruction, vector, k, parsed)


def search_vector(source: Source, vector: Sequence[float] | np.ndarray, instruction: str, *, k: int = 10,
                  filter: Mapping[str, Any] | None = None) -> list[Hit]:
    """Like :func:`search_text` for a vector you already have."""
    check_k(k)
    parsed = _checked(source, filter)
    return _nearest(source, _searchable(source, instruction), instruction, vector, k, parsed)


def _nearest(source: Source, backend: VectorBackend, instruction: str, vector: Sequence[float] | np.ndarray, k: int,
             parsed: SearchFilter) -> list[Hit]:
    restriction = _restriction(source, parsed, backend.filters_payload)
    if restriction.empty:
        return []
    found = backend.search(np.asarray(vector, dtype=np.float32), k, filter=restriction.metadata,
                           candidate_ids=restriction.candidates)
    scores = [(doc_id, float(score), {instruction: float(score)}) for doc_id, score in found]
    return _hits(source, [instruction], scores, k)


def _weights(instructions: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    """Each instruction's weight (1.0 unless ``weights`` says otherwise), checked."""
    if weights is None:
        return dict.fromkeys(instructions, 1.0)
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights must map instructions to numbers, not {type(weights).__name__}")
    unknown = [instruction for instruction in weights if instruction not in instructions]
    if unknown:
        raise ValueError(f"weights name {unknown[0]!r}, which has no query; weigh only the instructions queried "
                         f"({', '.join(map(repr, instructions))})")
    chosen: dict[str, float] = {}
    for instruction in instructions:
        weight = weights.get(instruction, 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"the weight of {instruction!r} must be a finite number >= 0, got {weight!r}")
        chosen[instruction] = float(weight)
    if not any(chosen.values()):
        raise ValueError("every weight is 0, so nothing would rank the documents; give at least one a positive weight")
    return chosen


def _check_queries(queries: Any, kind: str) -> list[str]:
    if not isinstance(queries, Mapping) or not queries:
        raise ValueError(f"give the {kind} as a non-empty mapping of instruction -> {kind[:-1]}, "
                         f"e.g. {{'How does the customer feel?': 'angry'}}")
    instructions = list(queries)
    for instruction in instructions:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"{instruction!r} is not an instruction (a non-empty string)")
    return instructions


def search_combined(source: Source, queries: Mapping[str, str], *, k: int = 10,
                    weights: Mapping[str, float] | None = None, filter: Mapping[str, Any] | None = None) -> list[Hit]:
    """The ``k`` documents with the highest weighted sum of cosines, ``queries[i]`` embedded
    under each instruction ``i``; everything is checked before the model loads."""
    instructions = _check_queries(queries, "queries")
    for instruction, query in queries.items():
        if not isinstance(query, str):
            raise TypeError(f"the query under {instruction!r} must be a string, not {type(query).__name__}")
    check_k(k)
    weight = _weights(instructions, weights)
    parsed = _checked(source, filter)
    backends = {instruction: _searchable(source, instruction) for instruction in instructions}
    by_text: dict[str, list[str]] = {}
    for instruction, query in queries.items():  # one encode call per distinct text
        by_text.setdefault(query, []).append(instruction)
    vectors: dict[str, np.ndarray] = {}
    for query, under in by_text.items():
        encoded = source.encoder().encode([query], under)
        vectors.update({instruction: encoded[instruction][0] for instruction in under})
    return _combined(source, backends, vectors, weight, k, parsed)


def search_combined_vectors(source: Source, vectors: Mapping[str, Sequence[float] | np.ndarray], *, k: int = 10,
                            weights: Mapping[str, float] | None = None,
                            filter: Mapping[str, Any] | None = None) -> list[Hit]:
    """Like :func:`search_combined` for query vectors you already have (normalised here, so
    each score is a cosine)."""
    instructions = _check_queries(vectors, "vectors")
    check_k(k)
    weight = _weights(instructions, weights)
    parsed = _checked(source, filter)
    backends = {instruction: _searchable(source, instruction) for instruction in instructions}
    return _combined(source, backends, vectors, weight, k, parsed)


def _combined(source: Source, backends: Mapping[str, VectorBackend], vectors: Mapping[str, Any],
              weight: Mapping[str, float], k: int, parsed: SearchFilter) -> list[Hit]:
    queries = {instruction: _unit_query(vectors[instruction], backend, instruction)
               for instruction, backend in backends.items()}
    restriction = _restriction(source, parsed, all(b.filters_payload for b in backends.values()))
    if restriction.empty:
        return []
    return _hits(source, list(backends), _rank(backends, queries, weight, restriction, k), k)


def _unit_query(vector: Any, backend: VectorBackend, instruction: str) -> np.ndarray:
    try:
        query = validate_query(vector, 1, backend.dim)[0][0]
    except ValueError as error:
        raise ValueError(f"the query vector under {instruction!r}: {error}") from None
    norm = float(np.linalg.norm(query))
    if norm == 0.0:
        raise ValueError(f"the query vector under {instruction!r} is all zeros; it has no direction to search")
    return query / norm


def _rank(backends: Mapping[str, VectorBackend], queries: Mapping[str, np.ndarray], weight: Mapping[str, float],
          restriction: _Restriction, k: int) -> _Ranked:
    """Candidates widened until the k-th best combined score beats anything unseen, scored exactly."""
    searched = [instruction for instruction in queries if weight[instruction] > 0]
    depth = min(max(k * CANDIDATES_PER_HIT, MIN_CANDIDATES), MAX_K)
    while True:
        lists = {instruction: backends[instruction].search(queries[instruction], depth,
                                                             filter=restriction.metadata,
                                                             candidate_ids=restriction.candidates)
                 for instruction in searched}
        ranked = _rescore(backends, queries, weight, lists)
        if any(len(found) < depth for found in lists.values()):
            return ranked  # a collection gave every document that passes: nothing is unseen
        # A document in no list scores at most each list's last score under its instruction.
        bound = sum(weight[instruction] * found[-1][1] for instruction, found in lists.items())
        proven = len(ranked) >= k and ranked.totals[k - 1] >= bound
        if proven or depth == MAX_K:
            if not proven:
                logger.info("combined search: %d candidates per instruction cannot prove the top %d exact; "
                            "returning the best of them", depth, k)
            return ranked
        depth = min(depth * 4, MAX_K)


class _Ranked(Sequence[tuple[str, float, dict[str, float]]]):
    """Candidates best first as arrays; an item, ``(doc id, combined score, {instruction: cosine})``,
    is built only when it is read (most candidates never become hits)."""

    def __init__(self, ids: Sequence[str], totals: np.ndarray, scores: np.ndarray, instructions: Sequence[str]) -> None:
        self.ids, self.totals, self.scores, self.instructions = ids, totals, scores, list(instructions)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, position: Any) -> Any:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        return (self.ids[position], float(self.totals[position]),
                dict(zip(self.instructions, self.scores[position].tolist())))


def _rescore(backends: Mapping[str, VectorBackend], queries: Mapping[str, np.ndarray], weight: Mapping[str, float],
             lists: Mapping[str, Sequence[tuple[str, float]]]) -> _Ranked:
    """Every candidate with a vector under each instruction, best combined score first (ties by id).

    A collection's own score of a document it returned is the inner product with its stored
    vector; under the instructions whose list lacks it, that product is computed here from the
    stored vector.
    """
    ids = sorted({doc_id for found in lists.values() for doc_id, _ in found})
    columns: list[dict[str, float]] = []
    for instruction, backend in backends.items():
        scores = dict(lists.get(instruction, ()))
        missing = [doc_id for doc_id in ids if doc_id not in scores]
        stored = backend.get_vectors(missing) if missing else {}
        present = [doc_id for doc_id in missing if doc_id in stored]
        if present:
            computed = np.stack([stored[doc_id] for doc_id in present]).astype(np.float32) @ queries[instruction]
            scores.update(zip(present, computed.tolist()))
        ids = [doc_id for doc_id in ids if doc_id in scores]
        columns.append(scores)
    matrix = np.array([[column[doc_id] for column in columns] for doc_id in ids], dtype=np.float64)
    matrix = matrix.reshape(len(ids), len(columns))
    totals = matrix @ np.array([weight[instruction] for instruction in backends])
    order = np.argsort(-totals, kind="stable")  # equal scores stay in id order
    return _Ranked([ids[i] for i in order], totals[order], matrix[order], list(backends))


def _hits(source: Source, instructions: Sequence[str], found: Sequence[tuple[str, float, dict[str, float]]],
          k: int) -> list[Hit]:
    """The first ``k`` of ``found`` that are in the corpus, with their documents and answers.

    Vectors of documents deleted by an interrupted write (removed by the next write) are skipped,
    and the next ones take their place.
    """
    hits: list[Hit] = []
    for start in range(0, len(found), k):
        chunk = found[start : start + k]
        ids = [doc_id for doc_id, _, _ in chunk]
        docs: dict[str, Document] = {d.id: d for d in source.corpus.get(ids)}
        answers = {instruction: source.corpus.get_answers(source.collection_name(instruction), ids)
                   for instruction in instructions}
        for doc_id, score, scores in chunk:
            if doc_id in docs and len(hits) < k:
                under = {instruction: answers[instruction].get(doc_id) for instruction in instructions}
                hits.append(Hit(doc_id, float(score), docs[doc_id].text, dict(docs[doc_id].metadata),
                                under[instructions[0]], dict(scores), under))
        if len(hits) == k:
            break
    return hits


# --------------------------------------------------------------------------- facets


def facets(source: Source, instruction: str, *, k: int = 20,
           filter: Mapping[str, Any] | None = None) -> list[tuple[str, int]]:
    """The ``k`` most frequent normalised answers under ``instruction`` among the documents that
    pass ``filter``, with their counts (most frequent first, ties alphabetically)."""
    check_k(k)
    parsed = _checked(source, filter)
    name = _require_answers(source, instruction)
    allowed = matching_ids(source, parsed)
    counts: Counter[str] = Counter()
    for page in source.corpus.iter_answers(name):
        counts.update(normalise_answer(answer) for doc_id, answer in page if allowed is None or doc_id in allowed)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]
