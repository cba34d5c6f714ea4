"""A real ``inbedder-index serve`` app on 127.0.0.1 (a free port, a background thread) over a tiny model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from inbedder_index import InBedder, InstructionIndex
from inbedder_index.serve import Service, Settings, background
from tiny_models import make_model


def tiny_server_encoder() -> InBedder:
    """The server's own copy of ``corpora.tiny_encoder()`` (same weights, same fingerprint, another object)."""
    model, tokenizer = make_model("llama")
    return InBedder.from_model(model, tokenizer, model_id="tiny-llama", max_length=96)


@contextlib.contextmanager
def running(encoder: InBedder | None = None, indexes: Mapping[str, InstructionIndex] | None = None,
            settings: Settings | None = None) -> Iterator[tuple[str, Service]]:
    """``(base URL, service)`` while the block runs; the server stops and the indexes close after it."""
    service = Service(encoder or tiny_server_encoder(), indexes, settings)
    try:
        with background(service) as url:
            yield url, service
    finally:
        service.close()
