"""``store.sqlite3`` damaged while ``kotae serve`` runs: 503 with one line naming the file and the repair.

A real server on 127.0.0.1 over a real tiny index (SQLite + FAISS + BM25, hybrid pipeline). After
the first answers, the store file is cut short in place, as a full disk, a bad copy or a stray
``truncate`` would leave it; SQLite then reports "database disk image is malformed" (or loses its
tables). Every route that reads the index must say so plainly, never a generic 500.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch

from kotae.errors import IndexUnavailable
from kotae.indexing.store import SQLITE_NAME
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.server import create_app
from kotae.pipeline.testing import ServedApp, TinySetup, build_tiny_setup

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"


def _cut_in_half(database: Path) -> None:
    with open(database, "r+b") as handle:
        handle.truncate(database.stat().st_size // 2)


def _emptied(database: Path) -> None:
    with open(database, "r+b") as handle:
        handle.truncate(0)


DAMAGE: dict[str, Callable[[Path], None]] = {"cut in half": _cut_in_half, "emptied": _emptied}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("damaged"))


def _fresh_index(setup: TinySetup, folder: Path) -> list[str]:
    shutil.copytree(setup.index_dir, folder)
    return [f"index.dir={json.dumps(str(folder))}"]


def _one_line_naming_the_file(message: str, database: Path) -> None:
    assert str(database) in message, message
    assert "kotae index" in message and "--full" in message, message
    assert "\n" not in message and "Traceback" not in message, message


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_store_damaged_while_serving_gives_503_naming_the_file(
    setup: TinySetup, tmp_path: Path, damage: str
) -> None:
    index = tmp_path / "index"
    config = setup.config(CONFIGS / "default.yaml", _fresh_index(setup, index))
    database = index / SQLITE_NAME
    with ServedApp(create_app(config, answerer=QuestionAnswerer.from_config(config))) as server:
        client = httpx.Client(base_url=server.url, timeout=60)
        assert client.post("/ask", json={"question": "富士山の高さは？"}).status_code == 200
        assert client.get("/health").status_code == 200

        DAMAGE[damage](database)

        for method, path, body in (
            ("POST", "/ask", {"question": "What is the capital of Japan?"}),
            ("POST", "/api/ask", {"question": "京都はいつ都になりましたか？"}),
            ("GET", "/health", None),
            ("GET", "/api/collection", None),
        ):
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.headers["content-type"].startswith("application/json")
            message = response.json()["error"]
            _one_line_naming_the_file(message, database)
            assert "restart kotae serve" in message
        client.close()


def test_ask_raises_one_line_when_the_store_is_damaged_after_start_up(
    setup: TinySetup, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    answerer = QuestionAnswerer.from_config(setup.config(CONFIGS / "bm25.yaml", _fresh_index(setup, index)))
    assert answerer.ask("富士山の高さは？")
    _cut_in_half(index / SQLITE_NAME)
    with pytest.raises(IndexUnavailable) as error:
        answerer.ask("富士山の高さは？")
    _one_line_naming_the_file(str(error.value), index / SQLITE_NAME)
    assert "database disk image is malformed" in str(error.value)
