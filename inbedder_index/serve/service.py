"""What a server holds: one loaded model, the open indexes, the worker that runs both, the metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder import InBedder
from ..index import InstructionIndex
from ..limits import check_api_key
from ..models import DEFAULT_MODEL
from .batching import Batcher
from .metrics import Metrics


@dataclass(frozen=True)
class Settings:
    """What a server allows; the CLI's ``serve`` flags."""

    api_key: str | None = None
    default_instruction: str | None = None
    read_only: bool = False
    ui: bool = True  # the explorer page at /ui/
    max_batch: int = 64  # texts per encode call
    max_wait_ms: float = 5.0  # how long a lone request waits for company
    max_queue: int = 4096  # texts waiting for the model; more gets 503
    max_inputs: int = 2048  # texts (or documents) per request; more gets 413
    max_request_bytes: int = 8 * 2**20  # request body; more gets 413
    max_input_chars: int = 32_768  # characters of one text (input, query, document); more gets 413
    max_request_chars: int = 2**20  # characters of all the texts of one request; more gets 413

    def __post_init__(self) -> None:
        if self.max_inputs > self.max_queue:
            raise ValueError(f"max_inputs ({self.max_inputs}) exceeds max_queue ({self.max_queue}): "
                             "such a request could never be queued")
        for name in ("max_input_chars", "max_request_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.api_key is not None:
            check_api_key(self.api_key)


def index_names(paths: Sequence[str]) -> dict[str, str]:
    """``PATH`` or ``NAME=PATH`` arguments -> ``{name: path}``; a name is the folder's name by default."""
    named: dict[str, str] = {}
    for item in paths:
        name, sep, path = item.partition("=")
        if not sep or "/" in name:
            name, path = Path(item).expanduser().resolve().name, item
        if name in named:
            raise ValueError(f"two indexes are named {name!r} ({named[name]} and {path}); "
                             f"name them apart as NAME=PATH, e.g. {name}-2={path}")
        named[name] = path
    return named


class Service:
    """One model and the indexes it serves, used only from the batcher's worker thread."""

    def __init__(self, encoder: InBedder, indexes: Mapping[str, InstructionIndex] | None = None,
                 settings: Settings | None = None) -> None:
        self.encoder = encoder
        self.indexes = dict(indexes or {})
        self.settings = settings or Settings()
        self.metrics = Metrics()
        self.batcher = Batcher(self._encode_batch, self.metrics, max_batch=self.settings.max_batch,
                               max_wait_s=self.settings.max_wait_ms / 1000, max_queue=self.settings.max_queue)

    @classmethod
    def open(cls, paths: Sequence[str] = (), *, model: str | None = None, settings: Settings | None = None,
             **encoder_kwargs: Any) -> Service:
        """Open the index folders (``PATH`` or ``NAME=PATH``) and load one model for all of them.

        ``model`` defaults to the first index's model (or the default model when no index is
        given); every other index must have been built with the same one. Indexes are opened
        read-only with ``settings.read_only``, else each holds its writer lock.
        """
        settings = settings or Settings()
        indexes: dict[str, InstructionIndex] = {}
        encoder: InBedder | None = None
        try:
            for name, path in index_names(paths).items():
                if not Path(path).expanduser().is_dir():
                    raise FileNotFoundError(f"no index folder at {path}; build one with: inbedder-index build {path} ...")
                index = InstructionIndex.open(path, model=encoder or model, read_only=settings.read_only,
                                              **({} if encoder else encoder_kwargs))
                indexes[name] = index
                encoder = encoder or index.encoder
            encoder = encoder or InBedder(model or DEFAULT_MODEL, **encoder_kwargs)
        except BaseException:
            for index in indexes.values():
                index.close()
            raise
        return cls(encoder, indexes, settings)

    def _encode_batch(self, texts: list[str], instruction: str) -> tuple[np.ndarray, list[int]]:
        """Vectors and each prompt's token count (the tokens the model reads, template included)."""
        vectors = self.encoder.encode(texts, instruction, show_progress_bar=False)
        tokens = [len(prompt) for prompt in self.encoder.prompts.build_many(texts, instruction)]
        return vectors, tokens

    def close(self) -> None:
        """Stop the worker, then release the indexes (their writer locks)."""
        self.batcher.close()
        for index in self.indexes.values():
            index.close()
