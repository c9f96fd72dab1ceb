"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis), plus bounded hostile requests.

Every operation in ``/openapi.json`` gets ``MAX_EXAMPLES`` generated requests, valid and invalid,
through the app in process (ASGI): no 5xx, no traceback in any body, every response matches the
schema (status codes, content types, bodies). The schema describes ``filters`` (fields, operators,
any value), so generated questions carry real filters too, and ``test_generated_filters`` sends
``MAX_EXAMPLES`` × 10 filters built from every field, operator and kind of value. Hostile requests
that a generator does not make — huge bodies, very long questions, huge ``top_k``, wrong content
types, a filter comparing a number with text — go over real HTTP.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from kotae.pipeline.guards import ServerAccess
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.schemas import COMPARISONS, FILTER_FIELDS, LOGICAL
from kotae.pipeline.server import ServerLimits, create_app
from kotae.pipeline.testing import ServedApp, build_tiny_setup

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"
MAX_EXAMPLES = int(os.environ.get("KOTAE_FUZZ_EXAMPLES", "30"))
TRACEBACK_MARKS = ("Traceback", 'File "', "site-packages")


OPERATIONS = [
    "POST /ask",
    "GET /health",
    "POST /api/ask",
    "GET /api/collection",
    "GET /api/document",
    "POST /feedback",
]
PARAMETERLESS = {"GET /health", "GET /api/collection"}  # nothing to make invalid
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]
EXAMPLES_RUN: dict[str, int] = {}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    setup = build_tiny_setup(tmp_path_factory.mktemp("fuzz"))
    config = setup.config(CONFIGS / "default.yaml")
    access = ServerAccess(allowed_hosts=("testserver",))  # the host name schemathesis's ASGI client sends
    return create_app(
        config, answerer=QuestionAnswerer.from_config(config), limits=ServerLimits(), access=access
    )


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _no_traceback(text: str) -> None:
    for mark in TRACEBACK_MARKS:
        assert mark not in text, text[:500]


def test_the_fuzzed_operations_are_all_of_them(api_schema: Any) -> None:
    assert sorted(r.ok().label for r in api_schema.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.parametrize(
    ("label", "mode"),
    [(label, GenerationMode.POSITIVE) for label in OPERATIONS]
    + [(label, GenerationMode.NEGATIVE) for label in OPERATIONS if label not in PARAMETERLESS],
    ids=str,
)
def test_api_from_its_own_schema(api_schema: Any, label: str, mode: GenerationMode) -> None:
    [operation] = [r.ok() for r in api_schema.get_all_operations() if r.ok().label == label]
    counted = f"{label} ({mode.value})"
    EXAMPLES_RUN[counted] = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        EXAMPLES_RUN[counted] += 1
        response = case.call()
        assert response.status_code < 500, (case.body, response.text[:300])
        _no_traceback(response.text)
        case.validate_response(response, checks=CHECKS)

    fuzz()
    print(f"fuzz: {counted}: {EXAMPLES_RUN[counted]} examples")


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["abc", "2024-01-01", "2024-01-01T00:00:00+09:00", "fuji.txt", "", "NaN"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
COMPARISON = st.fixed_dictionaries(
    {
        "field": st.one_of(st.sampled_from(FILTER_FIELDS), st.text(max_size=10)),
        "operator": st.sampled_from(sorted(COMPARISONS)),
        "value": VALUES,
    }
)
FILTERS = st.one_of(
    COMPARISON,
    st.fixed_dictionaries(
        {
            "operator": st.sampled_from(sorted(LOGICAL)),
            "conditions": st.lists(COMPARISON, min_size=1, max_size=3),
        }
    ),
)


def test_generated_filters(app: FastAPI) -> None:
    """Any filter of the documented shape gets 200, or a 4xx with one line: never a 5xx."""
    from fastapi.testclient import TestClient

    client = TestClient(app, base_url="http://127.0.0.1")
    statuses: dict[int, int] = {}

    @settings(max_examples=MAX_EXAMPLES * 10, deadline=None, derandomize=True, database=None)
    @given(filters=FILTERS, path=st.sampled_from(["/ask", "/api/ask"]))
    def fuzz(filters: dict[str, Any], path: str) -> None:
        response = client.post(path, json={"question": "富士山の高さは？", "top_k": 1, "filters": filters})
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (filters, response.text[:300])
        _no_traceback(response.text)
        if response.status_code >= 400:
            assert "\n" not in response.json()["error"], response.text

    fuzz()
    print(f"fuzz: filters: {sum(statuses.values())} requests, statuses {sorted(statuses.items())}")
    assert statuses.get(200) and any(400 <= status < 500 for status in statuses)


# ------------------------------------------------------------------------------ hostile, over HTTP


@pytest.fixture(scope="module")
def server(app: FastAPI):
    with ServedApp(app) as running:
        yield running


@pytest.mark.parametrize(
    ("name", "request_kwargs", "status", "phrase"),
    [
        ("huge body", {"content": b'{"question": "' + b"x" * 200_000 + b'"}'}, 413, "larger than"),
        ("long question", {"json": {"question": "質" * 1001}}, 422, "at most 1000"),
        ("huge top_k", {"json": {"question": "q", "top_k": 10**12}}, 422, "top_k"),
        ("negative top_k", {"json": {"question": "q", "top_k": -1}}, 422, "top_k"),
        ("float top_k", {"json": {"question": "q", "top_k": 1e308}}, 422, "top_k"),
        ("text/plain", {"content": b"question", "headers": {"content-type": "text/plain"}}, 415, "JSON"),
        ("form", {"data": {"question": "q"}}, 415, "JSON"),
        ("no content type", {"content": b'{"question": "q"}', "headers": {"content-type": ""}}, 415, "JSON"),
        ("not json", {"content": b"\xff\xfe{", "headers": {"content-type": "application/json"}}, 400, "JSON"),
        (
            "lone surrogate",
            {"content": b'{"question": "\\ud800"}', "headers": {"content-type": "application/json"}},
            422,
            "question",
        ),
        (
            "text compared with a number (issue 23: was a 500 and a 130-line traceback in the log)",
            {"json": {"question": "q", "filters": {"field": "meta.start", "operator": ">", "value": "abc"}}},
            400,
            "Can't compare strings",
        ),
        (
            "an object after >= (found by the filter fuzzing: a TypeError, so a 500)",
            {
                "json": {
                    "question": "q",
                    "filters": {"field": "meta.start", "operator": ">=", "value": {"a": 1}},
                }
            },
            400,
            "cannot be applied",
        ),
        (
            "a list as operator (found by schemathesis once filters joined the schema: a TypeError, so a 500)",
            {"json": {"question": "q", "filters": {"operator": [], "": None}}},
            422,
            "'operator' must be a string",
        ),
        (
            "deep nesting",
            {
                "content": b'{"question": "q", "filters": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                "headers": {"content-type": "application/json"},
            },
            400,
            "JSON",
        ),
    ],
)
def test_hostile_requests_get_a_clear_4xx(server, name, request_kwargs, status, phrase) -> None:
    for path in ("/ask", "/api/ask"):
        response = httpx.post(server.url + path, timeout=30, **request_kwargs)
        assert response.status_code == status, (name, path, response.text[:300])
        _no_traceback(response.text)
        if phrase:
            message = response.json()["error"]
            assert phrase in message and "\n" not in message, (name, message)


def test_huge_query_strings_and_unknown_paths(server) -> None:
    long_id = httpx.get(server.url + "/api/document", params={"id": "x" * 5000})
    assert long_id.status_code == 422
    missing = httpx.get(server.url + "/api/document", params={"id": "nope"})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    for path in ("/static/../server.py", "/static/%2e%2e%2fserver.py", "/nowhere", "/ask/../../etc/passwd"):
        response = httpx.get(server.url + path)
        assert 400 <= response.status_code < 500, path
        _no_traceback(response.text)
    for length, status, phrase in (
        (b"99999999", 413, b"larger than"),
        (b"abc", 400, b"Invalid HTTP request"),
    ):
        reply = _raw(
            server,
            b"POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + b"Content-Length: "
            + length
            + b"\r\n\r\n{}",
        )
        assert reply.startswith(b"HTTP/1.1 %d" % status) and phrase in reply, reply[:300]


def _raw(server: ServedApp, request: bytes) -> bytes:
    """Send bytes no well-behaved client would (uvicorn answers a bad Content-Length itself), and read the reply until the server closes or 2 s pass."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as conn:
        conn.sendall(request)
        reply = b""
        try:
            while chunk := conn.recv(65536):
                reply += chunk
                if b"\r\n\r\n" in reply and b'"}' in reply:
                    break
        except TimeoutError:
            pass
    return reply
