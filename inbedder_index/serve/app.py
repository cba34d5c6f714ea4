"""The HTTP API of ``inbedder-index serve``: OpenAI's embeddings shape plus instruction-aware search.

Routes hold no logic of their own: each validates its request, hands the work to the
``Batcher`` (``InBedder.encode`` for /v1/embeddings; ``InstructionIndex`` for the index
routes) and shapes the answer. Every refusal is a JSON error in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with a 4xx status naming the problem
(the library's exceptions map to statuses in ``status_of``).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import numpy as np

from ..backends.base import import_optional
from ..errors import (
    BackendUnavailableError,
    CorpusError,
    IndexLockedError,
    InBedderError,
    ModelMismatchError,
    UnknownInstructionError,
)
from .batching import QueueFullError, ShuttingDownError
from .metrics import ASGIApp, Message, Scope
from .service import Service

fastapi = import_optional("fastapi", "serve")  # fails with the install hint; then the names below import
from fastapi import APIRouter, Depends, FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import Response  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, field_validator  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal with its HTTP status, OpenAI error ``code`` and extra headers."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param, self.headers = status, code, param, dict(headers or {})


def status_of(error: Exception) -> tuple[int, str]:
    """The HTTP status and error code for one of the library's (or a builtin) exceptions."""
    if isinstance(error, UnknownInstructionError):
        return 404, "unknown_instruction"
    if isinstance(error, (CorpusError, ModelMismatchError, IndexLockedError)):
        return 409, "conflict"
    if isinstance(error, BackendUnavailableError):
        return 503, "backend_unavailable"
    if isinstance(error, (InBedderError, ValueError, TypeError)):
        return 400, "invalid_request"
    return 500, "internal_error"


def _error_body(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _problem(item: Mapping[str, Any]) -> str:
    """One of FastAPI's validation errors as ``field: what is wrong``."""
    if item.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({item.get('ctx', {}).get('error', 'decode error')})"
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
    if not where:
        return "the request body must be a JSON object (Content-Type: application/json)" \
            if item.get("type") == "model_attributes_type" else f"body: {message}"
    return f"{where}: {message}"


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """JSON without FastAPI's per-element encoder walk (vectors are long lists of floats); paths and
    times in index stats become text."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


# ----------------------------------------------------------------- request shapes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingRequest(_Strict):
    input: str | list[str]
    model: str | None = None
    instruction: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(v, (int, list)) for v in value):
            raise ValueError("input holds token ids; this server embeds text: send a string or a list of strings")
        return value


class SearchRequest(_Strict):
    query: str
    instruction: str | None = None
    k: int = Field(default=10, ge=1)
    filter: dict[str, Any] | None = None


class DocumentIn(_Strict):
    id: str
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(_Strict):
    documents: list[DocumentIn]
    upsert: bool = False


class DeleteRequest(_Strict):
    ids: list[str]


# ----------------------------------------------------------------- the app


class _BodyLimit:
    """413 for a request body over the limit, by Content-Length or by counting a streamed body.

    The body is read here (at most ``limit`` bytes are held) and replayed to the app, so an
    oversized one is refused before any route parses it.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, int(declared))
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(send, size)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Callable[[Message], Awaitable[None]], size: int) -> None:
        message = (f"the request body has {size} bytes or more; this server accepts up to {self.limit} "
                   "(send fewer texts per request)")
        body = json.dumps(_error_body(413, message, "request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(service: Service) -> ASGIApp:
    """The ASGI app over a ``Service`` (its encoder, indexes, batcher, metrics and settings)."""
    settings = service.settings
    encoder = service.encoder
    started = int(time.time())
    app = FastAPI(title="inbedder-index", description="Instruction-following embeddings and search",
                  docs_url=None, redoc_url=None, openapi_url=None)

    def authorise(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(dependencies=[Depends(authorise)])

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> Response:
        return _json(_error_body(error.status, str(error), error.code, error.param), error.status, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        return _json(_error_body(400, "; ".join(_problem(item) for item in error.errors()), "invalid_request"), 400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> Response:
        message = f"{error.detail}: {request.method} {request.url.path}"
        return _json(_error_body(error.status_code, message, "http_error"), error.status_code,
                     getattr(error, "headers", None))

    @app.exception_handler(QueueFullError)
    async def _busy(request: Request, error: QueueFullError) -> Response:
        headers = {"Retry-After": str(int(np.ceil(error.retry_after)))}
        return _json(_error_body(503, str(error), "queue_full"), 503, headers)

    @app.exception_handler(Exception)
    async def _library(request: Request, error: Exception) -> Response:
        if isinstance(error, ShuttingDownError):
            return _json(_error_body(503, str(error), "shutting_down"), 503)
        status, code = status_of(error)
        if status >= 500 and not isinstance(error, BackendUnavailableError):
            logger.exception("request %s %s failed", request.method, request.url.path)
            return _json(_error_body(500, f"internal error ({type(error).__name__}); see the server's log", code), 500)
        return _json(_error_body(status, str(error), code), status)

    def instruction_of(given: str | None) -> str:
        instruction = given if given is not None else settings.default_instruction
        if instruction is None:
            raise ApiError(400, "instruction is required: the question to embed the texts under, e.g. "
                           "'What is the topic of this text?' (OpenAI client: extra_body={'instruction': ...})",
                           "missing_instruction", param="instruction")
        return instruction

    def index_of(name: str) -> Any:
        index = service.indexes.get(name)
        if index is None:
            known = ", ".join(sorted(service.indexes)) or "none"
            raise ApiError(404, f"no index named {name!r}; this server has: {known}", "index_not_found")
        return index

    def too_many(count: int, what: str) -> None:
        if count > settings.max_inputs:
            raise ApiError(413, f"{what} has {count} items; this server accepts up to {settings.max_inputs} "
                           "per request", "too_many_inputs", param=what)

    def writable() -> None:
        if settings.read_only:
            raise ApiError(403, "this server was started with --read-only: it serves search, not writes", "read_only")

    def model_card() -> dict[str, Any]:
        return {"id": encoder.model_id, "object": "model", "created": started, "owned_by": "inbedder-index",
                "dim": encoder.dim, "fingerprint": encoder.fingerprint, "max_length": encoder.max_length,
                "kind": encoder.kind}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:  # open to all: it says nothing about what is served
        return {"status": "ok"}

    @api.get("/metrics")
    async def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @api.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != encoder.model_id:
            raise ApiError(404, f"model {model_id!r} is not served here; this server serves {encoder.model_id!r}",
                           "model_not_found")
        return model_card()

    @api.post("/v1/embeddings")
    async def embeddings(request: EmbeddingRequest) -> Response:
        if request.model is not None and request.model != encoder.model_id:
            raise ApiError(404, f"model {request.model!r} is not served here; this server serves "
                           f"{encoder.model_id!r}", "model_not_found", param="model")
        if request.dimensions is not None and request.dimensions != encoder.dim:
            raise ApiError(400, f"dimensions={request.dimensions} is not available: {encoder.model_id!r} gives "
                           f"{encoder.dim}-dimensional vectors", "invalid_dimensions", param="dimensions")
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts:
            raise ApiError(400, "input is empty: give a string or a non-empty list of strings", "empty_input",
                           param="input")
        too_many(len(texts), "input")
        vectors, tokens = await service.batcher.embed(texts, instruction_of(request.instruction))
        service.metrics.texts.inc(len(texts))
        service.metrics.tokens.inc(sum(tokens))
        if request.encoding_format == "base64":
            data = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
        else:
            data = vectors.tolist()
        return _json({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": item} for i, item in enumerate(data)],
            "model": encoder.model_id,
            "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)},
        })

    @api.get("/indexes")
    async def indexes() -> dict[str, Any]:
        def listing() -> list[dict[str, Any]]:
            return [{"name": name, "path": str(index.path), "documents": index.stats()["documents"],
                     "instructions": index.instructions()} for name, index in service.indexes.items()]

        return {"indexes": await service.batcher.call(listing)}

    @api.get("/indexes/{name}")
    async def info(name: str) -> Response:
        return _json({"name": name, **await service.batcher.call(index_of(name).stats)})

    @api.post("/indexes/{name}/search")
    async def search(name: str, request: SearchRequest) -> dict[str, Any]:
        index = index_of(name)
        instruction = instruction_of(request.instruction)
        hits = await service.batcher.call(index.search, request.query, instruction, request.k, request.filter)
        return {"index": name, "instruction": instruction, "hits": [
            {"id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata, "answer": h.answer} for h in hits]}

    @api.post("/indexes/{name}/documents")
    async def add(name: str, request: DocumentsRequest) -> dict[str, Any]:
        writable()
        index = index_of(name)
        too_many(len(request.documents), "documents")
        documents = [doc.model_dump() for doc in request.documents]
        write = index.upsert if request.upsert else index.add
        encoded = await service.batcher.call(write, documents, units=len(documents))
        return {"index": name, "stored": len(documents), "encoded": encoded}

    @api.delete("/indexes/{name}/documents")
    async def delete(name: str, request: DeleteRequest) -> dict[str, Any]:
        writable()
        index = index_of(name)
        too_many(len(request.ids), "ids")
        deleted = await service.batcher.call(index.delete, request.ids, units=len(request.ids))
        return {"index": name, "deleted": deleted}

    app.include_router(api)
    return service.metrics.middleware(_BodyLimit(app, settings.max_request_bytes))

