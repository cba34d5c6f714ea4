"""Documents from files: JSON Lines, CSV, or plain text with one document per line.

Everything is read and checked before anything is stored, so a bad file never leaves an
index half-updated. Errors name the file and line. ``json_lines`` is the library's one JSON
Lines parser (documents, evaluation sets and training data all read through it).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .corpus import Document
from .errors import InputFileError

FORMATS = ("jsonl", "csv", "text")


def guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    return "text"


def json_lines(lines: Iterable[str], invalid: Callable[[int, str], Exception]) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line; a line that is not JSON raises
    ``invalid(line number, the parser's reason)``, so each caller names the file its own way."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise invalid(number, error.msg) from error
        yield number, value


def _records(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) pairs; plain text gives ``{"text": line}``."""
    with open(path, encoding="utf-8", newline="") as handle:
        if fmt == "csv":
            dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
            reader = csv.DictReader(handle, dialect=dialect)
            for record in reader:
                yield reader.line_num, dict(record)
            return
        if fmt == "text":
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, {"text": line.rstrip("\r\n")}
            return
        rows = json_lines(handle, lambda n, why: InputFileError(f"{path}: line {n} is not valid JSON ({why})"))
        for number, record in rows:
            if not isinstance(record, dict):
                raise InputFileError(f"{path}: line {number} is a JSON {type(record).__name__}, not an object")
            yield number, record


def read_documents(
    path: str | Path,
    *,
    format: str | None = None,
    text_field: str = "text",
    id_field: str = "id",
    metadata_fields: Sequence[str] | None = None,
) -> list[Document]:
    """Read and validate every document of a file.

    A record without ``id_field`` gets its line number as id. ``metadata_fields`` picks the
    fields kept as metadata (default: every field but the text and id, for JSONL and CSV).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    fmt = format or guess_format(path)
    if fmt not in FORMATS:
        raise InputFileError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
    documents: list[Document] = []
    seen: dict[str, int] = {}
    try:
        for number, record in _records(path, fmt):
            if text_field not in record:
                raise InputFileError(
                    f"{path}: line {number} has no {text_field!r} field (fields: {', '.join(record) or 'none'}); "
                    "choose the text field with --text-field"
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise InputFileError(f"{path}: line {number}: field {text_field!r} is not a string")
            doc_id = str(record[id_field]) if record.get(id_field) is not None else str(number)
            if doc_id in seen:
                raise InputFileError(f"{path}: line {number}: duplicate id {doc_id!r} (first on line {seen[doc_id]})")
            seen[doc_id] = number
            keys = metadata_fields if metadata_fields is not None else [k for k in record if k not in (text_field, id_field)]
            missing = [key for key in keys if key not in record]
            if metadata_fields is not None and missing:
                raise InputFileError(f"{path}: line {number} has no metadata field {missing[0]!r}")
            documents.append(Document(doc_id, text, {key: record[key] for key in keys}))
    except UnicodeDecodeError as error:
        raise InputFileError(f"{path}: not UTF-8 text ({error.reason})") from None
    if not documents:
        raise InputFileError(f"{path}: no documents found")
    return documents
