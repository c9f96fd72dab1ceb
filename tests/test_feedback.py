"""Feedback labels: the append-only store, staleness after re-indexing, the SQuAD v2.0 export,
``POST /feedback`` (validation, API key, size limit) and ``kotae feedback list|export``."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kotae.cli import app as cli_app
from kotae.pipeline.feedback import (
    FEEDBACK_NAME,
    FeedbackStore,
    Label,
    parse_since,
    squad_export,
    stale_labels,
    store_lookup,
)
from kotae.pipeline.guards import ServerAccess
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.server import create_app
from kotae.pipeline.testing import TinySetup, build_tiny_setup

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"
PASSAGE = "富士山は日本で一番高い山です。高さは3776メートルです。"
HEIGHT = PASSAGE.index("3776")


def _label(**changes: Any) -> Label:
    fields: dict[str, Any] = {
        "question": "富士山の高さは？",
        "verdict": "wrong",
        "document_id": "fuji.txt",
        "passage_id": "fuji-0",
        "passage_text": PASSAGE,
        "passage_start": 100,
        "answer_start": 0,
        "answer_end": 3,
        "corrected_start": HEIGHT,
        "corrected_end": HEIGHT + 8,
        "reader_model": "tiny",
        "index_generation": 3,
    }
    fields.update(changes)
    return Label(**fields)


# ---------------------------------------------------------------------------------------- pure parts


def test_label_validation_says_what_is_wrong() -> None:
    assert _label().corrected_text == "3776メートル"
    assert _label().in_source(HEIGHT) == 100 + HEIGHT
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        _label(verdict="maybe")
    with pytest.raises(ValueError, match="corrected span"):
        _label(corrected_start=10, corrected_end=999)
    with pytest.raises(ValueError, match="go together"):
        _label(corrected_end=None)
    with pytest.raises(ValueError, match="goes with verdict 'wrong'"):
        _label(verdict="no_answer")
    with pytest.raises(ValueError, match="needs the answer span"):
        _label(
            verdict="correct", answer_start=None, answer_end=None, corrected_start=None, corrected_end=None
        )
    with pytest.raises(ValueError, match="blank"):
        _label(question="  ")


def test_squad_export_maps_each_verdict_and_holds_out_whole_questions() -> None:
    labels = [
        _label(id=1),
        _label(id=2, verdict="correct", question="一番高い山は？", corrected_start=None, corrected_end=None),
        _label(id=3, verdict="no_answer", question="京都は？", corrected_start=None, corrected_end=None),
        _label(id=4, question="高さ？", corrected_start=None, corrected_end=None),  # wrong, no correction
        _label(id=5),  # the same question again: same side of the split
    ]
    data, heldout, counts = squad_export(labels, stale={5})
    assert heldout is None and counts.exported == 4 and counts.stale == 1
    assert counts.wrong_without_correction == 1
    assert "correct 1, wrong 3, no_answer 1" in counts.summary()
    (article,) = data["data"]
    (paragraph,) = article["paragraphs"]
    assert paragraph["context"] == PASSAGE
    by_id = {qa["id"]: qa for qa in paragraph["qas"]}
    assert by_id["feedback-1"]["answers"] == [{"text": "3776メートル", "answer_start": HEIGHT}]
    assert by_id["feedback-2"]["answers"] == [{"text": "富士山", "answer_start": 0}]
    assert by_id["feedback-3"] == {
        "id": "feedback-3",
        "question": "京都は？",
        "answers": [],
        "is_impossible": True,
    }
    assert "feedback-4" not in by_id

    _, _, skipping = squad_export(labels, stale={5}, skip_stale=True)
    assert skipping.exported == 3 and skipping.skipped_stale == 1

    train, held, split = squad_export(labels, holdout_fraction=0.3, seed=1)
    assert held is not None and split.heldout >= 1 and split.exported + split.heldout == 4

    def questions(data: dict[str, Any]) -> set[str]:
        return {qa["question"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]}

    assert questions(train).isdisjoint(questions(held))


def test_parse_since() -> None:
    assert parse_since("2026-11-01") == "2026-11-01T00:00:00.000000Z"
    assert parse_since("2026-11-01T09:00+09:00") == "2026-11-01T00:00:00.000000Z"
    with pytest.raises(Exception, match="--since 'yesterday'"):
        parse_since("yesterday")


# ---------------------------------------------------------------------------------------- the store


def test_store_is_append_only_durable_and_filters_by_time(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    first = store.add(_label(created="2026-01-01T00:00:00.000000Z"))
    second = store.add(_label(verdict="no_answer", corrected_start=None, corrected_end=None))
    assert (first.id, second.id) == (1, 2) and second.created > first.created
    store.close()

    again = FeedbackStore(tmp_path)  # a restart
    assert [label.verdict for label in again.labels()] == ["wrong", "no_answer"]
    assert again.labels()[0] == first
    assert [label.id for label in again.labels(since=parse_since("2026-06-01"))] == [2]
    again.close()

    raw = sqlite3.connect(tmp_path / FEEDBACK_NAME)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for statement in ("UPDATE labels SET verdict = 'correct'", "DELETE FROM labels"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute(statement)
    raw.close()


def test_an_acknowledged_label_survives_kill_9(tmp_path: Path) -> None:
    """A process killed right after ``add`` returned (as the server answers 201) loses nothing."""
    script = f"""
import os, signal
from kotae.pipeline.feedback import FeedbackStore, Label
store = FeedbackStore({str(tmp_path)!r})
for n in range(3):
    store.add(Label(question=f"q{{n}}", verdict="no_answer", document_id="d", passage_id="p",
                    passage_text="text"))
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], check=False)
    assert done.returncode == -signal.SIGKILL
    store = FeedbackStore(tmp_path)
    assert [label.question for label in store.labels()] == ["q0", "q1", "q2"]
    store.close()


# ---------------------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("feedback"))


@pytest.fixture(scope="module")
def qa(setup: TinySetup) -> QuestionAnswerer:
    return QuestionAnswerer.from_config(setup.config(CONFIGS / "bm25.yaml"))


def _first_answer(client: TestClient, question: str) -> dict[str, Any]:
    response = client.post("/api/ask", json={"question": question, "top_k": 1})
    assert response.status_code == 200, response.text
    return next(a for a in response.json()["answers"] if a["answer"] is not None)


def test_post_feedback_validates_stores_and_flags_stale_after_reindexing(
    setup: TinySetup, qa: QuestionAnswerer
) -> None:
    from kotae.indexing.job import run_index
    from kotae.indexing.store import FaissDocumentStore

    config = setup.config(CONFIGS / "bm25.yaml")
    client = TestClient(create_app(config, answerer=qa), base_url="http://127.0.0.1")
    answer = _first_answer(client, "富士山の高さは？")
    passage = answer["passage"]
    body = {
        "question": "富士山の高さは？",
        "verdict": "wrong",
        "passage_id": answer["passage_id"],
        "document_id": answer["document_id"],
        "answer_start": answer["passage_start"],
        "answer_end": answer["passage_end"],
        "corrected_start": 0,
        "corrected_end": 3,
    }
    response = client.post("/feedback", json=body)
    assert response.status_code == 201, response.text
    stored = response.json()
    assert stored["corrected"] == passage[:3] and stored["answer"] == answer["answer"]
    assert stored["reader_model"] == str(setup.reader) and isinstance(stored["index_generation"], int)

    bad = [
        ({**body, "verdict": "maybe"}, 422, "verdict"),
        ({**body, "corrected_end": 10_000}, 422, "corrected span"),
        ({**body, "passage_id": "nope"}, 404, "no passage 'nope'"),
        ({**body, "document_id": "other.txt"}, 422, "belongs to document"),
        ({**body, "extra": 1}, 422, "extra"),
        ({**body, "question": "x" * 1001}, 422, "question"),
        ({**body, "question": "x" * 20_000}, 413, "larger than"),
    ]
    for payload, status, message in bad:
        response = client.post("/feedback", json=payload)
        assert response.status_code == status, (payload, response.text)
        assert message in response.json()["error"]

    labels = FeedbackStore(config.index_dir).labels()
    assert len(labels) == 1 and labels[0].passage_text == passage
    store = FaissDocumentStore(config.index_dir)
    assert stale_labels(labels, store_lookup(store)) == set()
    store.close()

    # The document changes and is re-indexed: the label is kept, and flagged stale.
    source = Path(labels[0].source or "")
    source.write_text("富士山は静岡県と山梨県にあります。", encoding="utf-8")
    run_index(config, [setup.corpus])
    store = FaissDocumentStore(config.index_dir)
    assert stale_labels(labels, store_lookup(store)) == {labels[0].id}
    store.close()
    source.write_text(setup.texts[source.name], encoding="utf-8")
    run_index(config, [setup.corpus])

    result = CliRunner().invoke(cli_app, ["feedback", "list", "--index-dir", str(config.index_dir), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[0])
    assert record["verdict"] == "wrong" and record["stale"] is False
    assert record["corrected_source_start"] == record["passage_start"]


def test_feedback_needs_the_api_key_when_one_is_set(setup: TinySetup, qa: QuestionAnswerer) -> None:
    app = create_app(setup.config(CONFIGS / "bm25.yaml"), answerer=qa, access=ServerAccess(api_key="k3y"))
    client = TestClient(app, base_url="http://127.0.0.1")
    body = {"question": "q", "verdict": "no_answer", "passage_id": "nope"}
    assert client.post("/feedback", json=body).status_code == 401
    assert client.post("/feedback", json=body, headers={"X-API-Key": "k3y"}).status_code == 404


def test_cli_without_labels_says_how_to_get_them(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["feedback", "export", "--out", "x.json", "--index-dir", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "no feedback labels" in str(result.exception)


def test_an_unwritable_label_file_is_a_clear_503(
    setup: TinySetup, qa: QuestionAnswerer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kotae.pipeline.feedback_api as feedback_api
    from kotae.errors import KotaeError

    def refuse(index_dir: Any) -> Any:
        raise KotaeError(
            f"cannot open the feedback labels in {index_dir}: attempt to write a readonly database"
        )

    monkeypatch.setattr(feedback_api, "open_feedback", refuse)
    client = TestClient(
        create_app(setup.config(CONFIGS / "bm25.yaml"), answerer=qa), base_url="http://127.0.0.1"
    )
    answer = _first_answer(client, "富士山の高さは？")
    body = {"question": "q", "verdict": "no_answer", "passage_id": answer["passage_id"]}
    response = client.post("/feedback", json=body)
    assert response.status_code == 503 and "readonly" in response.json()["error"]
