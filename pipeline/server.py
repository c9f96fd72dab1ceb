"""``kotae serve``: the pipeline behind a small FastAPI service.

- ``POST /ask`` ``{"question": ..., "top_k": 5, "filters": {...}}`` → ``{"question", "answers", "seconds"}``,
  each answer the same object as ``kotae ask --json`` (offsets in the source document).
- ``GET /health`` → status, the components in the pipeline and how many passages are indexed.
- ``POST /feedback`` → a user's verdict on an answer, stored next to the index (pipeline/feedback_api.py).
- The OpenAPI schema at ``/openapi.json``, rendered for people at ``/docs`` by kotae's own page
  (pipeline/web.py); FastAPI's Swagger UI and ReDoc, which load scripts from a CDN, are off.

The pipeline is built and its models loaded once, when the app is created. Requests run in
FastAPI's thread pool, and :class:`~pipeline.qa.QuestionAnswerer` lets one question at a time
through the pipeline (its components are not assumed to be thread-safe). Bodies larger than
``max_body_bytes`` get 413, malformed JSON 400, bad fields 422, each with a one-line ``error``. An
index that SQLite can no longer read (``store.sqlite3`` damaged or cut short while serving) gives
503 with one line naming the file and the command that rebuilds it. Any other unexpected failure
is logged with its traceback on the server and the client gets a 500 with a plain message, never
the traceback. A filter the store cannot apply (comparing ``meta.start`` with ``"abc"``) is the
client's mistake: 400 with one line. Host names, session cookies and the headers every response
carries are :mod:`pipeline.guards`' job.

Example::

    app = create_app(load_pipeline_config("configs/pipeline/default.yaml"))
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kotae.errors import IndexUnavailable, KotaeError
from pipeline.config import PipelineConfig
from pipeline.guards import SECURITY_HEADERS, ServerAccess, add_access
from pipeline.qa import QuestionAnswerer

logger = logging.getLogger("kotae.server")

MAX_QUESTION_CHARS = 1000
MAX_TOP_K = 50
MAX_FILTER_DEPTH = 8
COMPARISONS = {"==", "!=", ">", ">=", "<", "<=", "in", "not in"}
LOGICAL = {"AND", "OR", "NOT"}


@dataclass(frozen=True)
class ServerLimits:
    """What the service accepts."""

    max_body_bytes: int = 16_384


def check_filters(filters: Any, depth: int = 0) -> None:
    """Raise ValueError (one line) unless ``filters`` is a Haystack metadata filter.

    A comparison is ``{"field": "meta.source", "operator": "==", "value": ...}``; a logical node is
    ``{"operator": "AND" | "OR" | "NOT", "conditions": [...]}``.
    """
    if depth > MAX_FILTER_DEPTH:
        raise ValueError(f"filters are nested deeper than {MAX_FILTER_DEPTH} levels")
    if not isinstance(filters, dict):
        raise ValueError("a filter must be an object with 'operator' and 'field'/'value' or 'conditions'")
    operator = filters.get("operator")
    if not isinstance(operator, str):
        raise ValueError(f"a filter's 'operator' must be a string, but got {type(operator).__name__}")
    if operator in LOGICAL:
        conditions = filters.get("conditions")
        if set(filters) != {"operator", "conditions"} or not isinstance(conditions, list) or not conditions:
            raise ValueError(
                f"a {operator} filter needs exactly 'operator' and a non-empty 'conditions' list"
            )
        for condition in conditions:
            check_filters(condition, depth + 1)
        return
    if operator not in COMPARISONS:
        allowed = ", ".join(sorted(COMPARISONS | LOGICAL))
        raise ValueError(f"filter operator {operator!r} is not one of {allowed}")
    if set(filters) != {"field", "operator", "value"} or not isinstance(filters["field"], str):
        raise ValueError("a comparison filter needs exactly 'field' (a string), 'operator' and 'value'")
    if operator in ("in", "not in") and not isinstance(filters["value"], list):
        raise ValueError(f"the value of an {operator!r} filter must be a list")


FILTER_FIELDS = (
    "meta.source",
    "meta.title",
    "meta.document_id",
    "meta.start",
    "meta.end",
    "meta.passage_index",
    "content",
    "id",
)
"""Fields every indexed passage has; the schema names them so that generated filters hit real data."""
_COMPARISON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "field": {"anyOf": [{"enum": list(FILTER_FIELDS)}, {"type": "string"}]},
        "operator": {"enum": sorted(COMPARISONS)},
        "value": {"description": "any JSON value; 'in' and 'not in' take a list"},
    },
    "required": ["field", "operator", "value"],
    "additionalProperties": False,
}
FILTERS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        _COMPARISON_SCHEMA,
        {
            "type": "object",
            "properties": {
                "operator": {"enum": sorted(LOGICAL)},
                "conditions": {"type": "array", "minItems": 1, "items": _COMPARISON_SCHEMA},
            },
            "required": ["operator", "conditions"],
            "additionalProperties": False,
        },
        {"type": "null"},
    ],
    "description": 'Haystack metadata filter, e.g. {"field": "meta.source", "operator": "==", "value": "a.txt"}; '
    f"logical nodes nest up to {MAX_FILTER_DEPTH} levels",
}
"""The filters as the OpenAPI schema describes them (one logical level), so schema-driven fuzzing
generates real filters; :func:`check_filters` accepts the deeper nesting too."""


class AskRequest(BaseModel):
    """A question for ``POST /ask``."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="the question")
    top_k: int | None = Field(
        None, ge=1, le=MAX_TOP_K, description="answers to return (default: the config's)"
    )
    filters: Annotated[dict[str, Any] | None, WithJsonSchema(FILTERS_SCHEMA)] = None

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is blank")
        return value

    @field_validator("filters")
    @classmethod
    def _valid_filters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_filters(value)
        return value


class Answer(BaseModel):
    """One answer; ``start``/``end`` are character offsets in the source document, null for no answer."""

    answer: str | None
    score: float
    document_id: str | None
    passage_id: str | None
    source: str | None
    title: str | None
    start: int | None
    end: int | None
    context: str | None
    context_start: int | None
    context_end: int | None


class AskResponse(BaseModel):
    question: str
    answers: list[Answer]
    seconds: float


class Health(BaseModel):
    status: str
    retriever: str
    reader: str
    components: list[str]
    passages: int


class ErrorBody(BaseModel):
    """Every 4xx/5xx: one line for people, and the failing fields for a 422."""

    error: str
    details: list[str] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (
            400,
            "malformed request: the body is not JSON (UTF-8), the Content-Length is invalid, the Host is "
            "not one this server was started for, or the filters cannot be applied",
        ),
        (401, "this server needs an API key (see pipeline/guards.py)"),
        (404, "no such document or page"),
        (408, "the request body arrived too slowly"),
        (413, "the request body is too large"),
        (415, "the body is not sent as application/json"),
        (422, "a field is invalid"),
        (500, "internal error; the server log has the details"),
        (
            503,
            "the index cannot be read (damaged or replaced while serving); the message names the file and the repair",
        ),
    )
}
"""The error responses every route may give, documented in the OpenAPI schema."""
FASTAPI_BODY_ERROR = "There was an error parsing the body"
RESTART = " (then restart kotae serve)"
"""Appended to a damaged-index 503: the running server keeps the file it opened."""


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body is larger than {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes`` (by Content-Length, or counted while streaming)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                await _send_json(send, 400, {"error": "invalid Content-Length header"})
                return
            if too_large:
                await _send_json(send, 413, {"error": f"request body is larger than {self.max_bytes} bytes"})
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _describe(errors: list[Any]) -> list[str]:
    described = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        described.append(f"{where}: {error.get('msg', 'invalid')}")
    return described


def create_app(
    config: PipelineConfig,
    config_path: str | Path | None = None,
    limits: ServerLimits | None = None,
    answerer: QuestionAnswerer | None = None,
    access: ServerAccess | None = None,
) -> FastAPI:
    """The FastAPI app for ``config``; the pipeline is built and warmed up here, once.

    :param config: The pipeline configuration.
    :param config_path: Where the config came from (for error messages).
    :param limits: Request limits.
    :param answerer: An already loaded pipeline (tests, benchmarks); built from ``config`` if None.
    :param access: Host names, API key, CORS origins and client deadlines (:mod:`pipeline.guards`);
        by default a loopback server with no key.
    :raises KotaeError: If the index is missing or a model cannot be loaded.
    """
    from indexing.store import damaged_store_message
    from pipeline.answers import answer_record
    from pipeline.build import index_command, require_index

    limits = limits or ServerLimits()
    qa = answerer or QuestionAnswerer.from_config(config, config_path)
    app = FastAPI(
        title="kotae",
        summary="Open-domain question answering over your indexed documents (Japanese and English).",
        version="0.1.0",
        responses=ERROR_RESPONSES,
        docs_url=None,  # kotae's own /docs page (pipeline/web.py); Swagger UI and ReDoc need a CDN
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    add_access(app, access or ServerAccess())  # outside BodyLimit: key first, then size

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = list(error.errors())
        content_type = request.headers.get("content-type", "")
        body_error = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in errors)
        if body_error and "json" not in content_type.lower():
            return JSONResponse(
                {
                    "error": f"send a JSON body with Content-Type: application/json (got {content_type[:60]!r})"
                },
                status_code=415,
            )
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"error": "request body is not valid JSON"}, status_code=400)
        details = _describe(errors)
        return JSONResponse(
            {"error": "invalid request: " + "; ".join(details), "details": details}, status_code=422
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        message = str(error.detail)
        if message == FASTAPI_BODY_ERROR:  # undecodable or too deeply nested
            message = "request body is not valid JSON (UTF-8, nested at most a few hundred levels)"
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(KotaeError)
    async def _user_error(request: Request, error: KotaeError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(IndexUnavailable)
    async def _index_unavailable(request: Request, error: IndexUnavailable) -> JSONResponse:
        logger.error("%s %s: %s", request.method, request.url.path, error)
        suffix = RESTART if "rebuild" in str(error) else ""
        return JSONResponse({"error": f"{error}{suffix}"}, status_code=503)

    @app.exception_handler(sqlite3.DatabaseError)
    async def _store_unreadable(request: Request, error: sqlite3.DatabaseError) -> JSONResponse:
        # the store is the only SQLite file a route reads unguarded (the page's collection views)
        rebuild = f"{index_command(config_path, config.index_dir)} --full"
        message = damaged_store_message(config.index_dir, error, rebuild)
        logger.error("%s %s: %s", request.method, request.url.path, message)
        suffix = RESTART if "rebuild" in message else ""
        return JSONResponse({"error": f"{message}{suffix}"}, status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("error while handling %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": "internal error while answering; the server log has the details"},
            status_code=500,
            headers=SECURITY_HEADERS,  # answered outside the middleware that adds them to the rest
        )

    @app.post("/ask", response_model=AskResponse, summary="Answer a question from the indexed documents")
    def ask(request: AskRequest) -> dict[str, Any]:
        started = time.perf_counter()
        answers = qa.ask(request.question, top_k=request.top_k, filters=request.filters)
        return {
            "question": request.question,
            "answers": [answer_record(answer) for answer in answers],
            "seconds": round(time.perf_counter() - started, 4),
        }

    @app.get("/health", response_model=Health, summary="Is the service up, and what does it run")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "retriever": config.retriever.type,
            "reader": config.reader.type,
            "components": sorted(qa.components),
            "passages": require_index(config.index_dir, config_path, config),
        }

    from pipeline.web import web_router

    app.include_router(
        web_router(config, qa), responses=ERROR_RESPONSES
    )  # the question page at / (pipeline/web.py)
    from pipeline.feedback_api import feedback_router

    app.include_router(feedback_router(config, qa), responses=ERROR_RESPONSES)  # POST /feedback
    return app
