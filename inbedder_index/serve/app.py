"""The HTTP API of ``inbedder-index serve``: OpenAI's embeddings shape plus instruction-aware search.

Routes hold no logic of their own: each validates its request, hands the work to the
``Batcher`` (``InBedder.encode`` for /v1/embeddings; ``InstructionIndex`` for the index
routes) and shapes the answer. Every refusal is a JSON error in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with a 4xx status naming the problem
(the library's exceptions map to statuses in ``status_of``), answered without re-raising so
the keep-alive connection stays open. The work one request can cause is bounded before it is
queued: body bytes, texts per request, characters per text and per request (``Settings``),
and ``k`` (``limits.MAX_K``).
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import numpy as np

from .._util import import_optional
from ..errors import (
    AnswersNotKeptError,
    ApiError,
    BackendUnavailableError,
    CorpusError,
    IndexLockedError,
    InBedderError,
    LimitExceededError,
    ModelMismatchError,
    QueueFullError,
    ShuttingDownError,
    UnknownInstructionError,
)
from ..limits import MAX_K, check_text_sizes
from ..models import resolve_name
from .metrics import ASGIApp, Message, Scope
from .service import Service

fastapi = import_optional("fastapi", "serve")  # fails with the install hint; then the names below import
from fastapi import APIRouter, Depends, FastAPI, Query, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import Response  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

from ..explore import MAX_CLUSTERS, MAX_POINTS, collection_map  # noqa: E402
from .ui import ui_router  # noqa: E402

logger = logging.getLogger(__name__)


def status_of(error: Exception) -> tuple[int, str]:
    """The HTTP status and error code for one of the library's (or a builtin) exceptions."""
    if isinstance(error, UnknownInstructionError):
        return 404, "unknown_instruction"
    if isinstance(error, (CorpusError, ModelMismatchError, IndexLockedError)):
        return 409, "conflict"
    if isinstance(error, AnswersNotKeptError):
        return 409, "answers_not_kept"
    if isinstance(error, BackendUnavailableError):
        return 503, "backend_unavailable"
    if isinstance(error, LimitExceededError):
        return 413, "too_large"
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


def _filter_param(given: str | None) -> dict[str, Any] | None:
    """The ``filter`` of a GET route: a JSON object in the query string."""
    if given is None:
        return None
    try:
        parsed = json.loads(given)
    except ValueError as error:
        raise ApiError(400, f"filter is not valid JSON ({error}); send a JSON object, URL-encoded, e.g. "
                       '?filter={"lang":"en"}', "invalid_request", param="filter") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, f"filter must be a JSON object, not {type(parsed).__name__}", "invalid_request",
                       param="filter")
    return parsed


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
    """One query under one instruction, or ``queries`` (instruction -> query) searched at once."""

    query: str | None = None
    instruction: str | None = None
    queries: dict[str, str] | None = None
    weights: dict[str, float] | None = None
    k: int = Field(default=10, ge=1, le=MAX_K)
    filter: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give either query (with instruction) or queries ({instruction: query, ...}), "
                             "not both or neither")
        if self.queries is not None and self.instruction is not None:
            raise ValueError("instruction goes with query; with queries, each key is an instruction")
        if self.weights is not None and self.queries is None:
            raise ValueError("weights weigh the instructions of queries; a single query has none to weigh")
        return self


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


class _Unexpected:
    """A 500 in OpenAI's shape for an error no handler maps (a bug), logged once with its traceback.

    Starlette's own last-resort handler re-raises after answering, so the server logs the
    error again and drops the keep-alive connection; this answers and returns instead.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:
            if started or scope["type"] != "http":
                raise  # too late to answer: let the server close the connection
            logger.exception("request %s %s failed", scope.get("method"), scope.get("path"))
            message = f"internal error ({type(error).__name__}); see the server's log"
            await _json(_error_body(500, message, "internal_error"), 500)(scope, receive, send)


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

    # The library's refusals are answers, not failures: handled here (inside Starlette's exception
    # middleware) they are never re-raised, so the server logs no traceback and keeps the
    # connection open. Anything else is a bug: ``_Unexpected`` logs it once and answers 500.
    @app.exception_handler(ShuttingDownError)
    async def _stopping(request: Request, error: ShuttingDownError) -> Response:
        return _json(_error_body(503, str(error), "shutting_down"), 503)

    async def _refused(request: Request, error: Exception) -> Response:
        status, code = status_of(error)
        return _json(_error_body(status, str(error), code), status)

    for refusal in (InBedderError, ValueError, TypeError):
        app.add_exception_handler(refusal, _refused)

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

    def too_long(texts: list[tuple[str, str]]) -> None:
        """``(label, text)`` pairs of one request within the server's character limits (413 if not)."""
        check_text_sizes(texts, per_text=settings.max_input_chars, per_request=settings.max_request_chars)

    def writable() -> None:
        if settings.read_only:
            raise ApiError(403, "this server was started with --read-only: it serves search, not writes", "read_only")

    def serves(name: str) -> bool:
        """The served model by its id or by an alias of it (``inbedder-smollm2-135m`` -> its version)."""
        return resolve_name(name) == encoder.model_id  # a name that is no alias resolves to itself

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
        if not serves(model_id):
            raise ApiError(404, f"model {model_id!r} is not served here; this server serves {encoder.model_id!r}",
                           "model_not_found")
        return model_card()

    @api.post("/v1/embeddings")
    async def embeddings(request: EmbeddingRequest) -> Response:
        if request.model is not None and not serves(request.model):
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
        instruction = instruction_of(request.instruction)
        too_long([("instruction", instruction), *((f"input[{i}]", text) for i, text in enumerate(texts))])
        vectors, tokens = await service.batcher.embed(texts, instruction)
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
            "fingerprint": encoder.fingerprint,  # RemoteInBedder checks every answer against the model card
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
        if request.queries is None:
            instruction = instruction_of(request.instruction)
            too_long([("instruction", instruction), ("query", request.query)])
            hits = await service.batcher.call(index.search, request.query, instruction, request.k, request.filter)
            return {"index": name, "instruction": instruction, "hits": [dataclasses.asdict(h) for h in hits]}
        queries = request.queries
        too_many(len(queries), "queries")
        too_long([item for instruction, query in queries.items()
                  for item in (("instruction", instruction), (f"queries[{instruction!r}]", query))])
        hits = await service.batcher.call(
            lambda: index.search_combined(queries, k=request.k, weights=request.weights, filter=request.filter),
            units=len(queries))
        return {"index": name, "instructions": list(queries), "hits": [dataclasses.asdict(h) for h in hits]}

    @api.get("/indexes/{name}/facets")
    async def facets(name: str, instruction: str | None = None, k: int = Query(20, ge=1, le=MAX_K),
                     filter: str | None = None) -> dict[str, Any]:
        index, chosen = index_of(name), instruction_of(instruction)
        parsed = _filter_param(filter)
        found = await service.batcher.call(lambda: index.facets(chosen, k=k, filter=parsed))
        return {"index": name, "instruction": chosen, "facets": [{"answer": a, "count": n} for a, n in found]}

    @api.post("/indexes/{name}/documents")
    async def add(name: str, request: DocumentsRequest) -> dict[str, Any]:
        writable()
        index = index_of(name)
        too_many(len(request.documents), "documents")
        too_long([(f"documents[{i}].text", doc.text) for i, doc in enumerate(request.documents)])
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

    @api.get("/indexes/{name}/map")
    async def map_of(name: str, instruction: str | None = None, limit: int = Query(2000, ge=1, le=MAX_POINTS),
                     clusters: int = Query(8, ge=1, le=MAX_CLUSTERS)) -> Response:
        index, chosen = index_of(name), instruction_of(instruction)
        found = await service.batcher.call(lambda: collection_map(index, chosen, limit=limit, clusters=clusters))
        return _json(found.to_dict())

    app.include_router(api)
    if settings.ui:
        app.include_router(ui_router())
    app.add_middleware(_Unexpected)
    return service.metrics.middleware(_BodyLimit(app, settings.max_request_bytes))

