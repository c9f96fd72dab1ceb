"""Re-index while serving: ``kotae serve`` keeps answering during a re-index and picks up each commit.

The server and the indexing job share only the index folder: the job writes through its own store
object (its own SQLite connection, as another process would), and the server's store notices a
new commit generation on the next request (FAISS vectors and BM25 are reloaded). Every request
during the job must succeed, and every answer must point at text that is really in its source
file; once the job is done, the new documents are found and the deleted ones are gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kotae.indexing.job import run_index
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.server import create_app
from kotae.pipeline.testing import QUESTIONS, ServedApp, TinySetup, build_tiny_setup

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"
NEW_DOCUMENTS = {
    f"river{i:02d}.txt": f"The Tone River number {i} flows through Kanto. 利根川{i}号は関東を流れる川です。"
    for i in range(40)
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("reindex"))


@pytest.fixture(scope="module")
def server(setup: TinySetup) -> Iterator[ServedApp]:
    config = setup.config(CONFIGS / "default.yaml")
    with ServedApp(create_app(config, answerer=QuestionAnswerer.from_config(config))) as running:
        yield running


def test_answers_keep_coming_during_a_reindex_and_the_new_commit_is_picked_up(
    server: ServedApp, setup: TinySetup
) -> None:
    before = httpx.get(server.url + "/health").json()["passages"]
    for name, text in NEW_DOCUMENTS.items():
        (setup.corpus / name).write_text(text, encoding="utf-8")
    (setup.corpus / "rivers.txt").unlink()
    texts = {**setup.texts, **NEW_DOCUMENTS}

    results: list[tuple[int, str]] = []
    wrong: list[dict] = []  # answers whose offsets do not point at their text
    done = threading.Event()

    def ask_continuously() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            i = 0
            while not done.is_set():
                question = [*QUESTIONS, "利根川はどこを流れますか？"][i % 4]
                response = client.post("/ask", json={"question": question, "top_k": 3})
                results.append((response.status_code, response.text))
                for record in response.json().get("answers", []) if response.status_code == 200 else []:
                    if record["answer"] is not None:
                        text = texts[Path(record["source"]).name]
                        if text[record["start"] : record["end"]] != record["answer"]:
                            wrong.append(record)
                i += 1

    clients = [threading.Thread(target=ask_continuously) for _ in range(3)]
    for client in clients:
        client.start()
    time.sleep(0.5)
    config = setup.config(CONFIGS / "default.yaml", ["index.commit_documents=4"])
    summary = run_index(config, [setup.corpus])  # its own store object and connection
    time.sleep(0.5)
    done.set()
    for client in clients:
        client.join(timeout=60)

    assert summary.added == len(NEW_DOCUMENTS) and summary.removed == 1
    assert wrong == []
    assert results and all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    health = httpx.get(server.url + "/health").json()
    assert health["passages"] == summary.passages_total != before
    source = str(setup.corpus / "river07.txt")
    found = httpx.post(
        server.url + "/ask",
        json={
            "question": "Tone River",
            "filters": {"field": "meta.source", "operator": "==", "value": source},
        },
    ).json()
    assert found["answers"] and {a["source"] for a in found["answers"]} == {source}
    gone = httpx.post(
        server.url + "/ask",
        json={
            "question": "Shinano River",
            "filters": {"field": "meta.source", "operator": "==", "value": str(setup.corpus / "rivers.txt")},
        },
    ).json()
    assert [a for a in gone["answers"] if a["answer"] is not None] == []
    print(f"re-index while serving: {len(results)} requests during the job, all 200")
