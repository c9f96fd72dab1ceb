"""``kotae serve`` over real HTTP on 127.0.0.1: answers, 20 concurrent requests, bad requests, no tracebacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.schemas import check_filters
from kotae.pipeline.server import ServerLimits, create_app
from kotae.pipeline.testing import QUESTIONS, ServedApp, TinySetup, build_tiny_setup

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(setup: TinySetup) -> Iterator[ServedApp]:
    app = create_app(setup.config(CONFIGS / "default.yaml"), limits=ServerLimits(max_body_bytes=2048))
    with ServedApp(app) as running:
        yield running


def _no_traceback(response: httpx.Response) -> None:
    assert "Traceback" not in response.text and 'File "' not in response.text


def test_health_and_docs(server: ServedApp) -> None:
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["retriever"] == "hybrid" and body["passages"] > 0
    assert "joiner" in body["components"]
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/ask" in schema["paths"] and "/health" in schema["paths"]
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_ask(server: ServedApp, setup: TinySetup) -> None:
    response = httpx.post(f"{server.url}/ask", json={"question": "富士山の高さは？", "top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["question"] == "富士山の高さは？" and 1 <= len(body["answers"]) <= 2
    for record in body["answers"]:
        text = setup.texts[Path(record["source"]).name]
        assert text[record["start"] : record["end"]] == record["answer"]
    source = str(setup.corpus / "rivers.txt")
    filtered = httpx.post(
        f"{server.url}/ask",
        json={
            "question": "longest river?",
            "filters": {"field": "meta.source", "operator": "==", "value": source},
        },
    ).json()
    assert filtered["answers"] and {r["source"] for r in filtered["answers"]} == {source}


def test_twenty_concurrent_requests_get_their_own_answers(server: ServedApp) -> None:
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(20)]
    expected = {
        q: httpx.post(f"{server.url}/ask", json={"question": q, "top_k": 3}).json()["answers"]
        for q in QUESTIONS
    }

    def ask(question: str) -> tuple[str, int, Any]:
        response = httpx.post(f"{server.url}/ask", json={"question": question, "top_k": 3}, timeout=60)
        return question, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(ask, questions))
    assert len(results) == 20
    for question, status, body in results:
        assert status == 200
        assert body["question"] == question
        assert body["answers"] == expected[question]


@pytest.mark.parametrize(
    ("payload", "status", "phrase"),
    [
        ({"question": ""}, 422, "question"),
        ({"question": "   "}, 422, "blank"),
        ({"question": 123}, 422, "question"),
        ({"question": "x" * 1001}, 422, "at most 1000"),
        ({"question": "ok", "top_k": "many"}, 422, "top_k"),
        ({"question": "ok", "top_k": 0}, 422, "top_k"),
        ({"question": "ok", "top_k": 10_000}, 422, "top_k"),
        ({"question": "ok", "extra": 1}, 422, "extra"),
        ({"top_k": 3}, 422, "question"),
        (
            {"question": "ok", "filters": {"field": "meta.source", "operator": "~=", "value": 1}},
            422,
            "operator",
        ),
        ({"question": "ok", "filters": {"operator": "AND", "conditions": "no"}}, 422, "conditions"),
        ([1, 2, 3], 422, "body"),
    ],
)
def test_bad_requests_get_4xx_with_a_clear_message(
    server: ServedApp, payload: Any, status: int, phrase: str
) -> None:
    response = httpx.post(f"{server.url}/ask", json=payload)
    assert response.status_code == status, response.text
    assert phrase in response.json()["error"]
    _no_traceback(response)


def test_malformed_oversized_and_wrong_method(server: ServedApp) -> None:
    headers = {"content-type": "application/json"}
    malformed = httpx.post(f"{server.url}/ask", content=b'{"question": "x",', headers=headers)
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]
    big = json.dumps({"question": "x" * 5000}).encode()
    oversized = httpx.post(f"{server.url}/ask", content=big, headers=headers)
    assert oversized.status_code == 413 and "larger than 2048 bytes" in oversized.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"question": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    streamed = httpx.post(f"{server.url}/ask", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    not_json = httpx.post(f"{server.url}/ask", content=b"question=x", headers={"content-type": "text/plain"})
    assert not_json.status_code == 415 and "application/json" in not_json.json()["error"]
    wrong_method = httpx.get(f"{server.url}/ask")
    assert wrong_method.status_code == 405
    for response in (malformed, oversized, streamed, not_json, wrong_method):
        _no_traceback(response)


def test_internal_errors_never_leak_a_traceback(setup: TinySetup) -> None:
    class Broken(QuestionAnswerer):
        def __init__(self) -> None:
            self.components = {"reader"}

        def ask(self, question: str, top_k: int | None = None, filters: Any = None) -> list:
            raise RuntimeError("secret internal detail /etc/passwd")

    app = create_app(setup.config(CONFIGS / "bm25.yaml"), answerer=Broken())
    with ServedApp(app) as running:
        response = httpx.post(f"{running.url}/ask", json={"question": "boom"})
    assert response.status_code == 500
    assert "secret" not in response.text and "internal error" in response.json()["error"]
    _no_traceback(response)


def test_check_filters() -> None:
    check_filters({"field": "meta.title", "operator": "in", "value": ["a", "b"]})
    check_filters({"operator": "NOT", "conditions": [{"field": "meta.x", "operator": ">", "value": 1}]})
    for bad in ({"field": "meta.x", "operator": "in", "value": 1}, {"operator": "OR", "conditions": []}, "x"):
        with pytest.raises(ValueError):
            check_filters(bad)


def test_serve_binds_localhost_by_default() -> None:
    import inspect

    from kotae.pipeline.cli import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
