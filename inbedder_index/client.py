"""``RemoteInBedder``: the embedder protocol (``embedder.Embedder``) over an ``inbedder-index serve`` server.

It speaks the server's ``/v1/embeddings`` (base64 float32, so vectors arrive bit for bit as the
server computed them) and reports the server's model id, dimension, fingerprint and
``max_length`` from ``/v1/models``: an index built through it records the same model as one
built in-process, and either can reopen it. Needs ``httpx`` (the ``serve`` extra) and numpy;
it imports neither PyTorch nor transformers.

Nothing a server sends is trusted. The model card must carry an id, a dimension, a fingerprint
and ``max_length``; every answer must hold one row per text, with the indexes 0..n-1 once each,
base64 of ``dim`` finite float32 values of unit length, from the same model (id and
fingerprint) as the card. Anything else is a ``RemoteEmbedderError`` naming the server and what
was wrong, raised before a vector leaves this module, so an index never stores it.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ._util import import_optional
from .embedder import API_KEY_VARIABLE, check_instructions, check_texts
from .errors import ModelNotAvailableError, RemoteEmbedderError

logger = logging.getLogger(__name__)

_RETRIES = 5  # 503 (queue full) and dropped connections are retried this often
_MAX_WAIT = 30.0  # seconds: the longest a Retry-After is obeyed
_DEFAULT_WAIT = 1.0  # seconds: when Retry-After is absent or unreadable
_UNIT = 1e-3  # how far from 1 a served vector's norm may be (the server normalises in float32)


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
    return api_key or os.environ.get(API_KEY_VARIABLE) or None


def retry_after(value: str | None, now: datetime | None = None) -> float:
    """Seconds to wait for a ``Retry-After`` header (delay-seconds or an HTTP-date), within 0..30 s.

    A server's header must not crash the client nor park it for hours: a negative delay or a
    date in the past is no wait, and anything unreadable (``nan``, text) is the default 1 s.
    """
    if value is None or not value.strip():
        return _DEFAULT_WAIT
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return _DEFAULT_WAIT
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if math.isnan(seconds):
        return _DEFAULT_WAIT
    return min(max(seconds, 0.0), _MAX_WAIT)


@dataclass(frozen=True)
class ServedModel:
    """The checked ``/v1/models`` entry of the model a client embeds with."""

    id: str
    dim: int
    fingerprint: str
    max_length: int
    kind: str


def _served_model(card: Any, where: str) -> ServedModel:
    """The card's fields, each of the right type, or a ``RemoteEmbedderError`` naming the first that is not."""
    if not isinstance(card, dict):
        raise RemoteEmbedderError(f"{where} lists a model that is a {type(card).__name__}, not an object")
    fields: dict[str, Any] = {}
    for name, kind in (("id", str), ("dim", int), ("fingerprint", str), ("max_length", int), ("kind", str)):
        value = card.get(name)
        if value is None:
            raise RemoteEmbedderError(f"{where}: the model card has no {name!r}, which a client needs "
                                      "(is this an inbedder-index server of this version?)")
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value.strip()) \
                or (kind is int and value < 1):
            raise RemoteEmbedderError(f"{where}: the model card's {name!r} is {value!r}, not a "
                                      f"{'positive integer' if kind is int else 'non-empty string'}")
        fields[name] = value
    return ServedModel(**fields)


class RemoteInBedder:
    """``encode(texts, instruction)`` over HTTP; the same vectors as the server's model in-process."""

    def __init__(self, base_url: str, *, api_key: str | None = None, model: str | None = None,
                 batch_size: int = 256, timeout: float = 120.0) -> None:  # nothing to load: the model is remote
        self._httpx = import_optional("httpx", "serve")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.base_url = server_root(base_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = self._httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._timeout = timeout
        self._requested = model
        self._chosen: tuple[ServedModel, dict[str, Any]] | None = None  # the checked card, and as sent
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"RemoteInBedder(base_url={self.base_url!r}, model={self._requested!r})"

    def close(self) -> None:
        self._http.close()

    # ----------------------------------------------------------------- HTTP

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON of a successful answer; every failure named with the URL."""
        httpx, url = self._httpx, f"{self.base_url}{path}"
        for attempt in range(_RETRIES + 1):
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TimeoutException as error:
                raise RemoteEmbedderError(
                    f"{url} is too slow: no answer within {self._timeout:g} s ({type(error).__name__}); the "
                    "server is busy or the batch is large: give RemoteInBedder a larger timeout= or a smaller "
                    "batch_size=") from error
            except httpx.ConnectError as error:
                raise ModelNotAvailableError(
                    f"no inbedder-index server answers at {self.base_url} ({error}); start one with: "
                    "inbedder-index serve INDEX ... --port PORT") from error
            except (httpx.NetworkError, httpx.RemoteProtocolError) as error:  # e.g. a dropped keep-alive connection
                if attempt == _RETRIES:
                    raise RemoteEmbedderError(f"the connection to {url} broke {_RETRIES + 1} times ({error})") \
                        from error
                logger.info("the connection to %s broke (%s); sending again", url, error)
                continue
            except httpx.TransportError as error:
                raise RemoteEmbedderError(f"cannot send a request to {url} ({error})") from error
            if response.status_code == 503 and attempt < _RETRIES:
                wait = retry_after(response.headers.get("retry-after"))
                logger.info("%s is busy; retrying in %.1f s", self.base_url, wait)
                time.sleep(wait)
                continue
            break
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                shown = repr(response.text[:80]) if response.content else "an empty body"
                raise RemoteEmbedderError(f"{url} answered {response.status_code} with "
                                          f"{response.headers.get('content-type', 'no content type')} "
                                          f"{shown}, not JSON (is this an inbedder-index server?)") from None
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        where = f"{url} answered {response.status_code}: {message}"
        if response.status_code in (401, 403):
            raise PermissionError(where)
        if response.status_code == 404 and "model" in message:
            raise ModelNotAvailableError(where)
        if response.status_code < 500:
            raise ValueError(where)
        raise RemoteEmbedderError(where)

    def _model(self) -> ServedModel:
        return self._choose()[0]

    def _choose(self) -> tuple[ServedModel, dict[str, Any]]:
        if self._chosen is None:
            where = f"{self.base_url}/v1/models"
            listing = self._request("GET", "/v1/models")
            served = listing.get("data") if isinstance(listing, dict) else None
            if not isinstance(served, list):
                raise RemoteEmbedderError(f"{where} answered without a list of models under 'data'")
            chosen = [m for m in served if isinstance(m, dict) and self._requested in (None, m.get("id"))]
            if not chosen:
                names = ", ".join(repr(m.get("id")) for m in served if isinstance(m, dict)) or "nothing"
                raise ModelNotAvailableError(
                    f"{where}: model {self._requested!r} is not served here; it serves {names}")
            self._chosen = _served_model(chosen[0], where), chosen[0]
        return self._chosen

    @property
    def card(self) -> dict[str, Any]:
        """The served model's ``/v1/models`` entry (id, dim, fingerprint, max_length, kind), checked."""
        return self._choose()[1]

    # ----------------------------------------------------------------- identity

    @property
    def model_id(self) -> str:
        return self._model().id

    @property
    def dim(self) -> int:
        return self._model().dim

    @property
    def fingerprint(self) -> str:
        return self._model().fingerprint

    @property
    def max_length(self) -> int:
        return self._model().max_length

    @property
    def kind(self) -> str:
        return self._model().kind

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
        text_list = [texts] if single else check_texts(texts)  # type: ignore[list-item]
        size = batch_size or self.batch_size
        if size < 1:
            raise ValueError(f"batch_size must be at least 1, got {size}")
        results = {}
        for item in check_instructions(instruction):
            rows = [self._embed(text_list[start : start + size], item) for start in range(0, len(text_list), size)]
            vectors = np.concatenate(rows) if rows else np.empty((0, self.dim), dtype=np.float32)
            results[item] = vectors[0] if single else vectors
        return results[instruction] if isinstance(instruction, str) else results

    def _embed(self, texts: list[str], instruction: str) -> np.ndarray:
        body: dict[str, Any] = {"input": texts, "instruction": instruction, "encoding_format": "base64"}
        if self._requested is not None:
            body["model"] = self._requested
        served = self._model()
        answer = self._request("POST", "/v1/embeddings", body)
        try:
            return _rows(answer, len(texts), served)
        except _Invalid as problem:
            raise RemoteEmbedderError(f"{self.base_url}/v1/embeddings sent {problem}; nothing it sent was used") \
                from None


class _Invalid(Exception):
    """What is wrong with an answer (``_rows`` names it; the client adds the server)."""


def _rows(answer: Any, count: int, served: ServedModel) -> np.ndarray:
    """The ``count`` vectors of an ``/v1/embeddings`` answer in input order, each checked."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        raise _Invalid("an answer without a list of embeddings under 'data'")
    if answer.get("model") != served.id:
        raise _Invalid(f"vectors of model {answer.get('model')!r}, but its model card is {served.id!r}")
    if answer.get("fingerprint") != served.fingerprint:
        raise _Invalid(f"vectors of model fingerprint {answer.get('fingerprint')!r}, but its model card says "
                       f"{served.fingerprint!r} (the server's model changed, or it is no inbedder-index server "
                       "of this version)")
    if len(data) != count:
        raise _Invalid(f"{len(data)} vectors for {count} texts")
    rows: list[np.ndarray | None] = [None] * count
    for position, item in enumerate(data):
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count \
                or rows[index] is not None:
            raise _Invalid(f"data[{position}] with index {index!r}; the indexes must be 0..{count - 1}, each once")
        rows[index] = _vector(item.get("embedding"), position, served.dim)
    return np.stack(rows).astype(np.float32, copy=False)  # type: ignore[arg-type]


def _vector(value: Any, position: int, dim: int) -> np.ndarray:
    if isinstance(value, list):
        raise _Invalid(f"a list of numbers in data[{position}] where base64 was asked for")
    if not isinstance(value, str):
        raise _Invalid(f"a {type(value).__name__} in data[{position}] where a base64 string was asked for")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise _Invalid(f"data[{position}] that is not base64 ({error})") from None
    if len(raw) != dim * 4:
        raise _Invalid(f"{len(raw)} bytes in data[{position}]; the model card's {dim} float32 values take {dim * 4}")
    vector = np.frombuffer(raw, dtype="<f4")
    if not np.isfinite(vector).all():
        raise _Invalid(f"NaN or infinite values in data[{position}]")
    norm = float(np.linalg.norm(vector))
    if abs(norm - 1.0) > _UNIT:
        raise _Invalid(f"a vector of length {norm:.6g} in data[{position}]; the server's vectors are unit length")
    return vector
