"""The HTTP API's request and response bodies (``POST /ask``, ``GET /health``, errors), and filter checks.

Shared by the JSON API (:mod:`kotae.pipeline.server`) and the question page
(:mod:`kotae.pipeline.web`); FastAPI renders them into the OpenAPI schema.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

__all__ = [
    "COMPARISONS",
    "ERROR_RESPONSES",
    "FILTERS_SCHEMA",
    "FILTER_FIELDS",
    "LOGICAL",
    "MAX_QUESTION_CHARS",
    "MAX_TOP_K",
    "Answer",
    "AskRequest",
    "AskResponse",
    "ErrorBody",
    "Health",
    "check_filters",
]

MAX_QUESTION_CHARS = 1000
MAX_TOP_K = 50
MAX_FILTER_DEPTH = 8
COMPARISONS = {"==", "!=", ">", ">=", "<", "<=", "in", "not in"}
LOGICAL = {"AND", "OR", "NOT"}


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
    page: int | None = None  # the page of a PDF where the answer's passage starts


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
