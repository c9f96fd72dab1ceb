"""The batching server over real HTTP on 127.0.0.1: concurrent questions get the answers each would
get alone, errors stay with their own request, and /health answers while the model is busy."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from kotae.pipeline.answers import answer_record
from kotae.pipeline.batcher import BatchSettings, QuestionBatcher, collect
from kotae.pipeline.qa import Question, QuestionAnswerer
from kotae.pipeline.server import create_app
from kotae.pipeline.testing import CORPUS, QUESTIONS, ServedApp, TinySetup, build_tiny_setup

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"
MORE = [
    "富士山はどこにありますか？",
    "What is the longest river in Japan?",
    "How many people live in Tokyo?",
    "金閣寺は何ですか？",
    "Where does the Shinano River flow?",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("batching"))


@pytest.fixture(scope="module")
def qa(setup: TinySetup) -> QuestionAnswerer:
    return QuestionAnswerer.from_config(setup.config(CONFIGS / "default.yaml"))


@pytest.fixture(scope="module")
def served(setup: TinySetup, qa: QuestionAnswerer) -> Iterator[tuple[ServedApp, QuestionBatcher]]:
    settings = BatchSettings(max_batch=16, max_wait_ms=50)
    app = create_app(setup.config(CONFIGS / "default.yaml"), answerer=qa, batching=settings)
    with ServedApp(app) as running:
        yield running, app.state.batcher


def _same(batched: list[dict[str, Any]], alone: list[dict[str, Any]]) -> None:
    """The same spans, from the same passages, in the same order, with the same scores."""
    assert batched == alone


def test_concurrent_questions_get_their_sequential_answers(
    served: tuple[ServedApp, QuestionBatcher], qa: QuestionAnswerer
) -> None:
    server, batcher = served
    questions = [*QUESTIONS, *MORE] * 2  # 16
    alone = {q: [answer_record(a) for a in qa.ask(q, top_k=3)] for q in set(questions)}
    batches_before = batcher.batches

    def ask(question: str) -> httpx.Response:
        return httpx.post(f"{server.url}/ask", json={"question": question, "top_k": 3}, timeout=60)

    with ThreadPoolExecutor(len(questions)) as pool:
        responses = list(pool.map(ask, questions))
    assert [r.status_code for r in responses] == [200] * len(questions), [r.text for r in responses]
    for question, response in zip(questions, responses, strict=True):
        assert response.json()["question"] == question
        _same(response.json()["answers"], alone[question])
    assert batcher.batches - batches_before < len(questions)  # some questions were read together


def test_the_page_api_batches_too_and_keeps_its_passages(
    served: tuple[ServedApp, QuestionBatcher], qa: QuestionAnswerer
) -> None:
    server, _ = served
    with ThreadPoolExecutor(6) as pool:
        responses = list(
            pool.map(
                lambda q: httpx.post(f"{server.url}/api/ask", json={"question": q, "top_k": 2}, timeout=60),
                QUESTIONS * 2,
            )
        )
    for question, response in zip(QUESTIONS * 2, responses, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        alone = [answer_record(a) for a in qa.ask(question, top_k=2)]
        assert [a["answer"] for a in body["answers"]] == [a["answer"] for a in alone]
        assert body["passages"] and all(p["text"] for p in body["passages"])


def test_a_bad_request_fails_alone(served: tuple[ServedApp, QuestionBatcher]) -> None:
    server, _ = served
    bad = {
        "question": "富士山の高さは？",
        "filters": {"field": "meta.start", "operator": ">", "value": "abc"},
    }
    payloads = [{"question": q} for q in QUESTIONS] + [bad]
    with ThreadPoolExecutor(len(payloads)) as pool:
        responses = list(pool.map(lambda p: httpx.post(f"{server.url}/ask", json=p, timeout=60), payloads))
    assert [r.status_code for r in responses[:-1]] == [200] * len(QUESTIONS)
    assert responses[-1].status_code == 400 and "error" in responses[-1].json()


def test_health_and_static_answer_while_a_question_is_read(
    served: tuple[ServedApp, QuestionBatcher], qa: QuestionAnswerer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    release = threading.Event()
    reading = threading.Event()
    reader = qa.pipeline.get_component("reader")
    read_many = reader.read_many

    def slow(*args: Any, **kwargs: Any) -> Any:
        reading.set()
        release.wait(30)
        return read_many(*args, **kwargs)

    monkeypatch.setattr(reader, "read_many", slow)
    with ThreadPoolExecutor(2) as pool:
        asked = pool.submit(httpx.post, f"{server.url}/ask", json={"question": QUESTIONS[0]}, timeout=60)
        assert reading.wait(30)
        started = time.monotonic()
        health = httpx.get(f"{server.url}/health", timeout=10)
        page = httpx.get(f"{server.url}/", timeout=10)
        static = httpx.get(f"{server.url}/static/app.js", timeout=10)
        answered_while_busy = time.monotonic() - started
        assert not asked.done()
        release.set()
        assert asked.result().status_code == 200
    assert health.status_code == 200 and page.status_code == 200 and static.status_code == 200
    assert answered_while_busy < 10


def test_collect_takes_what_arrives_in_time() -> None:
    waiting: queue.Queue[Any] = queue.Queue()
    items = [(Question(str(n)), Future()) for n in range(5)]
    for item in items[1:]:
        waiting.put(item)
    batch = collect(waiting, items[0], BatchSettings(max_batch=3, max_wait_ms=0))
    assert [question.text for question, _ in batch] == ["0", "1", "2"]
    waiting.put(None)  # a stop marker is left for the worker
    batch = collect(waiting, batch[0], BatchSettings(max_batch=8, max_wait_ms=10))
    assert [question.text for question, _ in batch] == ["0", "3", "4"] and waiting.get_nowait() is None
    with pytest.raises(ValueError, match="max_batch"):
        BatchSettings(max_batch=0)


def test_batched_reader_equals_the_single_reader(qa: QuestionAnswerer) -> None:
    questions = [Question(q, top_k=3) for q in [*QUESTIONS, *MORE]]
    together = qa.run_many(questions)
    for question, result in zip(questions, together, strict=True):
        assert not isinstance(result, BaseException)
        alone = [answer_record(a) for a in qa.ask(question.text, top_k=3)]
        _same([answer_record(a) for a in result["reader"]["answers"]], alone)
    assert set(CORPUS)  # the tiny corpus is what was asked
