"""A real ``inbedder-index serve`` app on 127.0.0.1 (a free port, a background thread) over a tiny model."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
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


def start_cli_server(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """``inbedder-index serve ARGS --port 0`` in a child process, and its URL once it listens."""
    process = subprocess.Popen([sys.executable, "-m", "inbedder_index.cli", "serve", *args, "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    line = process.stderr.readline()
    match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
    if not match:
        process.kill()
        raise AssertionError(line + process.stderr.read())
    return process, match.group(1)


def stop(process: subprocess.Popen, how: int = signal.SIGINT) -> tuple[int, str]:
    """Sends ``how`` and waits: the exit code and what the server wrote to stderr."""
    process.send_signal(how)
    _, err = process.communicate(timeout=30)
    return process.returncode, err
