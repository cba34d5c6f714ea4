"""``RemoteInBedder``: an ``InBedder`` whose model runs in an ``inbedder-index serve`` server.

It speaks the server's ``/v1/embeddings`` (base64 float32, so vectors arrive bit for bit as the
server computed them) and reports the server's model id, dimension, fingerprint and
``max_length`` from ``/v1/models``: an index built through it records the same model as one
built in-process, and either can reopen it. Needs ``httpx`` (the ``serve`` extra).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .backends.base import import_optional
from .encoder import InBedder, _check_instructions, _check_texts
from .errors import InBedderError, ModelNotAvailableError

logger = logging.getLogger(__name__)

_RETRIES = 5  # 503 (queue full) is retried this often, after the server's Retry-After


def server_root(base_url: str) -> str:
    """``http://host:port``, ``http://host:port/`` and ``http://host:port/v1`` (OpenAI's style) alike."""
    root = base_url.strip().rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def remote_api_key(base_url: str | None, api_key: str | None, model_kwargs: Mapping[str, Any]) -> str | None:
    """The integrations' check of their remote settings: the key to send (given, else
    ``$INBEDDER_INDEX_API_KEY``, the server's own variable), or None for a local model."""
    if base_url is None:
        if api_key is not None:
            raise ValueError("api_key is for a server: give base_url too")
        return None
    if model_kwargs:
        raise ValueError("model_kwargs configure a local model; with base_url the server's model is used")
    return api_key or os.environ.get("INBEDDER_INDEX_API_KEY") or None


class RemoteInBedder(InBedder):
    """``encode(texts, instruction)`` over HTTP; the same vectors as the server's model in-process."""

    def __init__(self, base_url: str, *, api_key: str | None = None, model: str | None = None,
                 batch_size: int = 256, timeout: float = 120.0) -> None:  # nothing to load: the model is remote
        httpx = import_optional("httpx", "serve")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.base_url = server_root(base_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._transport_error = httpx.TransportError
        self._requested = model
        self._card: dict[str, Any] | None = None
        self.batch_size = batch_size
        self.embedding_cache = None

    def __repr__(self) -> str:
        return f"RemoteInBedder(base_url={self.base_url!r}, model={self._requested!r})"

    def close(self) -> None:
        self._http.close()

    # ----------------------------------------------------------------- HTTP

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        for attempt in range(_RETRIES + 1):
            try:
                response = self._http.request(method, path, json=body)
            except self._transport_error as error:
                raise ModelNotAvailableError(
                    f"no inbedder-index server answers at {self.base_url} ({error}); start one with: "
                    "inbedder-index serve INDEX ... --port PORT") from error
            if response.status_code == 503 and attempt < _RETRIES:
                wait = float(response.headers.get("retry-after", "1") or 1)
                logger.info("%s is busy; retrying in %.1f s", self.base_url, wait)
                time.sleep(min(wait, 30.0))
                continue
            break
        if response.is_success:
            return response.json()
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        where = f"{self.base_url}{path} answered {response.status_code}: {message}"
        if response.status_code in (401, 403):
            raise PermissionError(where)
        if response.status_code == 404 and "model" in message:
            raise ModelNotAvailableError(where)
        if response.status_code < 500:
            raise ValueError(where)
        raise InBedderError(where)

    @property
    def card(self) -> dict[str, Any]:
        """The served model's ``/v1/models`` entry (id, dim, fingerprint, max_length, kind)."""
        if self._card is None:
            served = self._request("GET", "/v1/models")["data"]
            chosen = [m for m in served if self._requested in (None, m["id"])]
            if not chosen:
                raise ModelNotAvailableError(f"{self.base_url} does not serve {self._requested!r}; it serves "
                                             f"{', '.join(repr(m['id']) for m in served)}")
            self._card = chosen[0]
        return self._card

    # ----------------------------------------------------------------- identity

    @property
    def model_id(self) -> str:
        return str(self.card["id"])

    @property
    def dim(self) -> int:
        return int(self.card["dim"])

    @property
    def fingerprint(self) -> str:
        return str(self.card["fingerprint"])

    @property
    def max_length(self) -> int:  # type: ignore[override]
        return int(self.card["max_length"])

    @property
    def kind(self) -> Any:  # type: ignore[override]
        return self.card["kind"]

    # ----------------------------------------------------------------- encoding

    def encode(self, texts: str | Sequence[str], instruction: str | Sequence[str], *, batch_size: int | None = None,
               normalize: bool = True, show_progress_bar: bool | None = None, return_answers: bool = False) -> Any:
        """Like ``InBedder.encode``; vectors are always unit length and answers are not served."""
        if return_answers:
            raise ValueError("an inbedder-index server returns vectors, not the model's answers; "
                             "encode with a local InBedder (or build the index with answers=False)")
        if not normalize:
            raise ValueError("an inbedder-index server returns unit vectors; normalize=False needs a local InBedder")
        single = isinstance(texts, str)
        text_list = [texts] if single else _check_texts(texts)  # type: ignore[list-item]
        size = batch_size or self.batch_size
        results = {}
        for item in _check_instructions(instruction):
            rows = [self._embed(text_list[start : start + size], item) for start in range(0, len(text_list), size)]
            vectors = np.concatenate(rows) if rows else np.empty((0, self.dim), dtype=np.float32)
            results[item] = vectors[0] if single else vectors
        return results[instruction] if isinstance(instruction, str) else results

    def _embed(self, texts: list[str], instruction: str) -> np.ndarray:
        body: dict[str, Any] = {"input": texts, "instruction": instruction, "encoding_format": "base64"}
        if self._requested is not None:
            body["model"] = self._requested
        data = sorted(self._request("POST", "/v1/embeddings", body)["data"], key=lambda item: item["index"])
        return np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in data])
