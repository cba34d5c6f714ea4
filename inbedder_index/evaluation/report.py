"""Evaluation reports for people and programs: text tables, a bar chart, a JSON-ready payload."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .answers import AnswerStats
from .metrics import SUMMARY_GROUPS, EvaluationReport
from .tasks import unique

Scores = Mapping[str, Mapping[str, float]]
"""task -> metric -> value, one model's."""

_NOT_PLOTTED = ("distinct_answers", "_spread", "top_answer_share")
"""Per-aspect details left out of the chart (the summary plots their worst case)."""


def _as_reports(report: EvaluationReport | Mapping[str, EvaluationReport]) -> dict[str, EvaluationReport]:
    return {"score": report} if isinstance(report, EvaluationReport) else dict(report)


def _rows(tables: Mapping[str, Scores]) -> list[tuple[str, str]]:
    """(task, metric) pairs in first-seen order over all models."""
    return unique((task, metric) for scores in tables.values() for task, metrics in scores.items() for metric in metrics)


def _value(scores: Scores, task: str, metric: str) -> float:
    return scores.get(task, {}).get(metric, math.nan)


def _table(header: Sequence[str], body: Sequence[Sequence[str]], left: int = 2) -> str:
    """Aligned columns; the first ``left`` are text (left-aligned), the rest numbers."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths))]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths]), *map(line, body)])


def format_report(report: EvaluationReport | Mapping[str, EvaluationReport]) -> str:
    """A plain-text table: one row per task metric, one column per report (model)."""
    tables = {name: r.scores() for name, r in _as_reports(report).items()}
    body = [[task, metric, *(f"{_value(s, task, metric):.3f}" for s in tables.values())]
            for task, metric in _rows(tables)]
    return _table(["task", "metric", *tables], body)


def format_summary(report: EvaluationReport | Mapping[str, EvaluationReport]) -> str:
    """Per model, each summary measure on the project's sets, on trained kinds in fresh sets and on
    held-out kinds, side by side ("-" where a group has no such measure)."""
    body = []
    for name, r in _as_reports(report).items():
        summary = r.summary()
        measures = unique(key.partition(".")[2] for key in summary)
        body += [[name, measure, *(f"{summary[f'{g}.{measure}']:.3f}" if f"{g}.{measure}" in summary else "-"
                                   for g in SUMMARY_GROUPS)] for measure in measures]
    return _table(["model", "measure", *SUMMARY_GROUPS], body)


def format_evaluation(reports: Mapping[str, EvaluationReport]) -> str:
    """What ``inbedder-index eval`` prints: the summary, then every task metric."""
    return f"{format_summary(reports)}\n\n{format_report(reports)}"


def report_payload(reports: Mapping[str, EvaluationReport]) -> dict[str, dict[str, dict[str, float]]]:
    """model -> {"summary": {...}, task: {metric: value}}, ready for ``json.dumps``."""
    return {name: {"summary": r.summary(), **r.scores()} for name, r in reports.items()}


def format_data_report(report: Mapping[str, AnswerStats]) -> str:
    """The answer distribution per aspect kind of training files (``answers.data_report``)."""
    body = [[aspect, textwrap.shorten(s.top_answer, 30, placeholder="..."), str(s.count), str(s.distinct),
             f"{s.top_share:.3f}"] for aspect, s in report.items()]
    return _table(["aspect", "top answer", "records", "distinct", "top share"], body)


def data_report_payload(report: Mapping[str, AnswerStats]) -> dict[str, dict[str, Any]]:
    return {aspect: stats.to_dict() for aspect, stats in report.items()}


def plot_report(reports: EvaluationReport | Mapping[str, EvaluationReport], path: str | Path) -> Path:
    """A horizontal grouped bar chart PNG: the summary, then each task metric; one bar per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    reports = _as_reports(reports)
    tables = {name: {"summary": r.summary(), **r.scores()} for name, r in reports.items()}
    rows = [(task, metric) for task, metric in _rows(tables)
            if task == "summary" or not any(part in metric for part in _NOT_PLOTTED)]
    y = np.arange(len(rows))
    height = 0.8 / len(reports)
    figure = Figure(figsize=(9.0, max(4.0, 0.12 * len(rows) * len(reports) + 1.5)))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for i, (model, scores) in enumerate(tables.items()):
        values = [_value(scores, task, metric) for task, metric in rows]
        axes.barh(y + (i - (len(reports) - 1) / 2) * height, values, height, label=model)
    labels = [textwrap.shorten(f"{task} / {metric}", width=60, placeholder="...") for task, metric in rows]
    axes.set_yticks(y, labels, fontsize=7)
    axes.invert_yaxis()
    axes.axvline(0.0, color="black", linewidth=0.6)
    axes.set_xlabel("score")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path
