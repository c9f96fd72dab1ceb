"""Two ``kotae serve`` processes answer from one Milvus collection on one Milvus Lite server.

The deployment of docs/scaling.md in small: a Milvus server, stateless replicas (each with its own
local folder for the BM25 cache), one indexing job. Both replicas give the same answers, and both
pick up a re-index written while they run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("milvus_lite", reason="the Milvus tests need kotae[milvus]")

from kotae.indexing.job import run_index
from kotae.pipeline.config import load_pipeline_config
from kotae.pipeline.testing import ServedCommand, TinySetup, build_tiny_setup

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pipeline" / "default.yaml"
QUESTION = "名古屋城はいつ完成しましたか？"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, milvus_server: Any) -> Iterator[dict[str, Any]]:
    setup: TinySetup = build_tiny_setup(tmp_path_factory.mktemp("replicas"), index=False)
    shared = [
        "index.store=milvus",
        f"index.milvus_uri={milvus_server.uri}",
        "index.milvus_collection=replicas",
    ]
    job = [*setup.overrides, *shared]
    run_index(load_pipeline_config(CONFIG, job), [setup.corpus])
    replicas = []
    try:
        for number in range(2):
            args = ["--config", str(CONFIG)]
            local = f"index.dir={json.dumps(str(setup.root / f'replica-{number}'))}"  # its own BM25 cache
            for override in [*setup.overrides, local, *shared]:
                args += ["--set", override]
            replicas.append(ServedCommand(args).start())
        yield {"setup": setup, "job": job, "urls": [replica.wait().url for replica in replicas]}
    finally:
        for replica in replicas:
            replica.stop()


def _ask(url: str, question: str) -> dict[str, Any]:
    response = httpx.post(f"{url}/api/ask", json={"question": question, "top_k": 3}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_two_replicas_give_the_same_answers_and_both_see_a_reindex(deployment: dict[str, Any]) -> None:
    urls, setup = deployment["urls"], deployment["setup"]
    for question in ("富士山の高さは？", "What is the capital of Japan?"):
        first, second = (_ask(url, question) for url in urls)
        assert first["answers"] == second["answers"] and first["passages"] == second["passages"]
    before = [httpx.get(f"{url}/health", timeout=10).json()["passages"] for url in urls]
    assert before[0] == before[1] > 0

    (setup.corpus / "nagoya.txt").write_text(
        "名古屋城は1612年に完成しました。金のしゃちほこで有名です。", encoding="utf-8"
    )
    summary = run_index(load_pipeline_config(CONFIG, deployment["job"]), [setup.corpus])
    assert summary.added == 1 and summary.unchanged == 4
    after = [httpx.get(f"{url}/health", timeout=10).json()["passages"] for url in urls]
    assert after[0] == after[1] == summary.passages_total > before[0]
    first, second = (_ask(url, QUESTION) for url in urls)
    assert first["passages"] == second["passages"]
    assert any("名古屋城" in passage["text"] for passage in first["passages"])
