"""``kotae serve``: the pipeline behind a small FastAPI service.

- ``POST /ask`` ``{"question": ..., "top_k": 5, "filters": {...}}`` → ``{"question", "answers", "seconds"}``,
  each answer the same object as ``kotae ask --json`` (offsets in the source document).
- ``GET /health`` → status, the components in the pipeline and how many passages are indexed.
- ``POST /feedback`` → a user's verdict on an answer, stored next to the index (pipeline/feedback_api.py).
- The OpenAPI schema at ``/openapi.json``, rendered for people at ``/docs`` by kotae's own page
  (pipeline/web.py); FastAPI's Swagger UI and ReDoc, which load scripts from a CDN, are off.

The pipeline is built and its models loaded once, when the app is created. Requests run in
FastAPI's thread pool, and :class:`~kotae.pipeline.qa.QuestionAnswerer` lets one question at a time
through the pipeline (its components are not assumed to be thread-safe). Bodies larger than
``max_body_bytes`` get 413, malformed JSON 400, bad fields 422, each with a one-line ``error``. An
index that SQLite can no longer read (``store.sqlite3`` damaged or cut short while serving) gives
503 with one line naming the file and the command that rebuilds it. Any other unexpected failure
is logged with its traceback on the server and the client gets a 500 with a plain message, never
the traceback. A filter the store cannot apply (comparing ``meta.start`` with ``"abc"``) is the
client's mistake: 400 with one line. Host names, session cookies and the headers every response
carries are :mod:`kotae.pipeline.guards`' job.

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
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kotae.errors import IndexUnavailable, KotaeError
from kotae.pipeline.config import PipelineConfig
from kotae.pipeline.guards import SECURITY_HEADERS, ServerAccess, add_access
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.schemas import ERROR_RESPONSES, AskRequest, AskResponse, Health
from kotae.terminal import printable

logger = logging.getLogger("kotae.server")


@dataclass(frozen=True)
class ServerLimits:
    """What the service accepts."""

    max_body_bytes: int = 16_384


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
    :param access: Host names, API key, CORS origins and client deadlines (:mod:`kotae.pipeline.guards`);
        by default a loopback server with no key.
    :raises KotaeError: If the index is missing or a model cannot be loaded.
    """
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

    add_error_handlers(app, config, config_path)
    app.include_router(api_router(config, config_path, qa), responses=ERROR_RESPONSES)  # /ask, /health

    from kotae.pipeline.web import web_router

    app.include_router(
        web_router(config, qa), responses=ERROR_RESPONSES
    )  # the question page at / (pipeline/web.py)
    from kotae.pipeline.feedback_api import feedback_router

    app.include_router(feedback_router(config, qa), responses=ERROR_RESPONSES)  # POST /feedback
    return app


def add_error_handlers(app: FastAPI, config: PipelineConfig, config_path: str | Path | None) -> None:
    """Every error becomes one JSON line (:class:`~kotae.pipeline.schemas.ErrorBody`) with its status."""
    from kotae.indexing.store import damaged_store_message
    from kotae.pipeline.build import index_command

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
        logger.error("%s: %s", _where(request), error)
        suffix = RESTART if "rebuild" in str(error) else ""
        return JSONResponse({"error": f"{error}{suffix}"}, status_code=503)

    @app.exception_handler(sqlite3.DatabaseError)
    async def _store_unreadable(request: Request, error: sqlite3.DatabaseError) -> JSONResponse:
        # the store is the only SQLite file a route reads unguarded (the page's collection views)
        rebuild = f"{index_command(config_path, config.index_dir)} --full"
        message = damaged_store_message(config.index_dir, error, rebuild)
        logger.error("%s: %s", _where(request), message)
        suffix = RESTART if "rebuild" in message else ""
        return JSONResponse({"error": f"{message}{suffix}"}, status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("error while handling %s", _where(request))
        return JSONResponse(
            {"error": "internal error while answering; the server log has the details"},
            status_code=500,
            headers=SECURITY_HEADERS,  # answered outside the middleware that adds them to the rest
        )


def _where(request: Request) -> str:
    """The request's method and path as one printable log line (the path is the client's, decoded)."""
    return printable(f"{request.method} {request.url.path}")


def api_router(config: PipelineConfig, config_path: str | Path | None, qa: QuestionAnswerer) -> APIRouter:
    """``POST /ask`` and ``GET /health`` over the warmed-up pipeline ``qa``."""
    from kotae.pipeline.answers import answer_record
    from kotae.pipeline.build import require_index

    router = APIRouter()

    @router.post("/ask", response_model=AskResponse, summary="Answer a question from the indexed documents")
    def ask(request: AskRequest) -> dict[str, Any]:
        started = time.perf_counter()
        answers = qa.ask(request.question, top_k=request.top_k, filters=request.filters)
        return {
            "question": request.question,
            "answers": [answer_record(answer) for answer in answers],
            "seconds": round(time.perf_counter() - started, 4),
        }

    @router.get("/health", response_model=Health, summary="Is the service up, and what does it run")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "retriever": config.retriever.type,
            "reader": config.reader.type,
            "components": sorted(qa.components),
            "passages": require_index(config.index_dir, config_path, config),
        }

    return router
