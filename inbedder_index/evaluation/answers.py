"""How varied are the answers to a question? For a model's answers over an evaluation set, and for
the answers a training file teaches per aspect kind: one answer covering most texts is the
collapse that makes an instruction useless (every vector ends up in the same place)."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

NO_ASPECT = "(no aspect)"
"""The data report's row for records without an ``aspect`` field (e.g. C3)."""


@dataclass(frozen=True)
class AnswerStats:
    count: int
    distinct: int
    top_answer: str
    top_share: float
    """Share of answers equal to the most common one (after normalisation)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def answer_stats(answers: Sequence[str]) -> AnswerStats:
    """Distinct answers and the most common one's share; answers are compared lowercased,
    without punctuation or a leading article (``train.normalise_answer``), so "A refund." and
    "refund" count as one."""
    from ..train import normalise_answer

    if not answers:
        raise ValueError("answer_stats needs at least one answer")
    counts = Counter(normalise_answer(answer, group_emotions=False) for answer in answers)
    top, n = counts.most_common(1)[0]
    return AnswerStats(len(answers), len(counts), top, n / len(answers))


def data_report(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> dict[str, AnswerStats]:
    """Answer distribution per aspect kind over QA training files (``train.load_qa_records``).

    Sorted by top share, worst first: a kind whose top share is high teaches the model to give
    one answer whatever the passage says.
    """
    from ..train import load_qa_records

    by_aspect: dict[str, list[str]] = defaultdict(list)
    for record in load_qa_records(paths):
        by_aspect[record.aspect or NO_ASPECT].append(record.output)
    stats = {aspect: answer_stats(answers) for aspect, answers in by_aspect.items()}
    return dict(sorted(stats.items(), key=lambda item: (-item[1].top_share, item[0])))
