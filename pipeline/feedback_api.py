"""``POST /feedback``: a user's verdict on one answer, stored by :mod:`kotae.pipeline.feedback`.

The client names the passage (``passage_id``, as ``/api/ask`` returns it) and gives spans as
character offsets in that passage; the server reads the passage from the index, so the stored text,
hash, document, reader model and index generation are the server's, never the client's. The route
sits behind the same API key as ``/ask`` (:mod:`kotae.pipeline.guards` guards every non-public path) and
the same body-size limit; a bad field gets 422, an unknown passage 404, each with one line.

Example::

    POST /feedback {"question": "富士山の高さは？", "verdict": "wrong", "passage_id": "fuji-1a2b3c4d-0",
                    "answer_start": 0, "answer_end": 3, "corrected_start": 18, "corrected_end": 27}
    → 201 {"id": 7, "verdict": "wrong", "created": "2026-11-26T11:50:00.000000Z", ...}
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from kotae.errors import KotaeError
from kotae.pipeline.config import PipelineConfig
from kotae.pipeline.feedback import FeedbackStore, Label, Verdict, open_feedback
from kotae.pipeline.qa import QuestionAnswerer

MAX_QUESTION_CHARS = 1000
MAX_OFFSET = 10_000_000


class FeedbackRequest(BaseModel):
    """A verdict on one answer; spans are ``[start, end)`` characters in the passage."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="the question asked")
    verdict: Verdict = Field(description="correct, wrong, or no_answer (the passage holds no answer)")
    passage_id: str = Field(min_length=1, max_length=1024, description="the answer's passage_id")
    document_id: str | None = Field(
        None, max_length=4096, description="the answer's document_id (checked when given)"
    )
    answer_start: int | None = Field(None, ge=0, le=MAX_OFFSET, description="answer shown, start")
    answer_end: int | None = Field(None, ge=0, le=MAX_OFFSET, description="answer shown, end")
    corrected_start: int | None = Field(
        None, ge=0, le=MAX_OFFSET, description="for 'wrong': the right answer, start"
    )
    corrected_end: int | None = Field(
        None, ge=0, le=MAX_OFFSET, description="for 'wrong': the right answer, end"
    )


class FeedbackStored(BaseModel):
    id: int
    verdict: str
    created: str
    document_id: str
    answer: str | None
    corrected: str | None
    reader_model: str
    index_generation: int | None


def _index_store(config: PipelineConfig, qa: QuestionAnswerer) -> Any:
    """The pipeline's own document store when it has one, else the index opened from ``config``."""
    pipeline = getattr(qa, "pipeline", None)
    for name in ("bm25_retriever", "dense_retriever"):
        if pipeline is not None and name in qa.components:
            return pipeline.get_component(name).document_store
    from kotae.indexing.stores import open_store

    return open_store(config)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def feedback_router(config: PipelineConfig, qa: QuestionAnswerer) -> APIRouter:
    """``POST /feedback`` over the index of ``config`` (labels in ``<index dir>/feedback.sqlite3``)."""
    router = APIRouter()
    labels: FeedbackStore | None = None  # opened on the first verdict: a read-only index still serves
    store: Any = None

    @router.post(
        "/feedback",
        status_code=201,
        response_model=FeedbackStored,
        summary="Mark an answer correct or wrong, give the right span, or say the passage has no answer",
    )
    def feedback(request: FeedbackRequest) -> Any:
        nonlocal labels, store
        if store is None:
            store = _index_store(config, qa)
        found = store.get_documents_by_id([request.passage_id])
        if not found:
            return _error(404, f"no passage {request.passage_id[:200]!r} in the index; ask again and retry")
        passage = found[0]
        meta = passage.meta or {}
        document_id = str(meta.get("document_id", passage.id))
        if request.document_id is not None and request.document_id != document_id:
            return _error(
                422, f"passage {passage.id!r} belongs to document {document_id!r}, not the one given"
            )
        start = meta.get("start")
        fields = {
            "question": request.question,
            "verdict": request.verdict,
            "document_id": document_id,
            "passage_id": passage.id,
            "passage_text": passage.content or "",
            "passage_start": start if isinstance(start, int) and not isinstance(start, bool) else None,
            "answer_start": request.answer_start,
            "answer_end": request.answer_end,
            "corrected_start": request.corrected_start,
            "corrected_end": request.corrected_end,
            "title": meta.get("title"),
            "source": meta.get("source"),
            "reader_model": config.reader.model,
            "index_generation": store.generation,
        }
        try:
            label = Label(**fields)
        except ValueError as error:
            return _error(422, f"invalid feedback: {error}")
        if labels is None:
            try:
                labels = open_feedback(config.index_dir)
            except KotaeError as error:
                return _error(503, f"feedback is not stored: {error}")
        try:
            stored = labels.add(label)
        except sqlite3.DatabaseError as error:  # not the index: the labels' own file
            return _error(503, f"feedback is not stored: {labels.path} cannot be written ({error})")
        assert stored.id is not None
        return {
            "id": stored.id,
            "verdict": stored.verdict,
            "created": stored.created,
            "document_id": stored.document_id,
            "answer": stored.answer_text,
            "corrected": stored.corrected_text,
            "reader_model": stored.reader_model,
            "index_generation": stored.index_generation,
        }

    return router
