"""Loading SQuAD-format data in every supported layout, and the answer validation counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kotae.errors import KotaeError
from kotae.reader_training.data import (
    Answer,
    QAExample,
    load_examples,
    repair_answer,
    subsample,
    validate_examples,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CONTEXT = "Alice met Bob in Paris. Bob met Carol in Rome."


def squad(qas: list[dict], context: str = CONTEXT) -> dict:
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def qa(qid: str, text: str, start: int) -> dict:
    return {"id": qid, "question": "?", "answers": [{"text": text, "answer_start": start}]}


def test_repair_rules() -> None:
    assert repair_answer(CONTEXT, Answer("Paris", 17)) == Answer("Paris", 17)  # already right
    assert repair_answer(CONTEXT, Answer("Paris", 15)) == Answer("Paris", 17)  # unique nearby: moved
    assert repair_answer(CONTEXT, Answer("Bob", 0)) is None  # twice nearby: ambiguous
    assert repair_answer(CONTEXT, Answer("Tokyo", 0)) is None  # absent
    assert repair_answer(CONTEXT, Answer("Rome", 0), window=10) is None  # too far


def test_squad_json_counts(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    path.write_text(
        json.dumps(
            squad([qa("a", "Paris", 17), qa("b", "Paris", 14), qa("c", "Tokyo", 3), qa("d", "Bob", 1)])
        )
    )
    result = load_examples(path)
    report = result.report
    assert (report.kept, report.repaired, report.dropped) == (2, 1, 2)
    assert report.dropped_ids == ["c", "d"]
    assert report.summary() == f"{path}: kept 2, repaired 1, dropped 2"
    assert [e.answers[0].start for e in result.examples] == [17, 17]
    assert result.examples[0].title == "T"


def test_multiple_references_keep_the_good_ones() -> None:
    item = QAExample("m", "?", CONTEXT, (Answer("Paris", 17), Answer("Tokyo", 0)))
    result = validate_examples([item], "mem")
    assert result.examples[0].answers == (Answer("Paris", 17),)
    assert result.report.repaired == 1  # changed, though not dropped


def test_v2_unanswerable_and_jsonl(tmp_path: Path) -> None:
    records = [
        {
            "id": "1",
            "question": "Where?",
            "context": CONTEXT,
            "answers": [{"text": "Rome", "answer_start": 41}],
        },
        {"id": "2", "question": "Why?", "context": CONTEXT, "answers": [], "is_impossible": True},
        {"question": "Who?", "context": CONTEXT, "answers": {"text": ["Alice"], "answer_start": [0]}},
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    result = load_examples(path)
    assert [e.id for e in result.examples] == ["1", "2", "set-3"]
    assert result.has_unanswerable and result.examples[1].is_impossible
    assert result.report.unanswerable == 1
    assert result.examples[2].answers == (Answer("Alice", 0),)


def test_directory_of_shards_with_limit_and_unique_ids(tmp_path: Path) -> None:
    (tmp_path / "a_0000.json").write_text(json.dumps(squad([qa("x", "Paris", 17)])))
    (tmp_path / "a_0001.json").write_text(json.dumps(squad([qa("x", "Rome", 41), qa("y", "Alice", 0)])))
    (tmp_path / "notes.txt").write_text("ignored")
    result = load_examples(tmp_path)
    assert [e.id for e in result.examples] == ["x", "x#1", "y"]
    assert len(load_examples(tmp_path, max_examples=2).examples) == 2


def test_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KotaeError, match="data not found"):
        load_examples(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KotaeError, match="not valid JSON"):
        load_examples(bad)
    (tmp_path / "wrong.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(KotaeError, match="'data'"):
        load_examples(tmp_path / "wrong.json")

    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'squad' on the Hub (LocalEntryNotFoundError)\nmore lines")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cache only: load_dataset itself reports the miss
    with pytest.raises(KotaeError) as error:
        load_examples("squad@validation")
    assert "squad@validation" in str(error.value) and "\n" not in str(error.value)

    import kotae.reader_training.data as data_module

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(data_module, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(KotaeError, match="hub cannot be reached"):
        load_examples("squad")


def test_subsample_weights() -> None:
    items = [QAExample(str(i), "?", "c") for i in range(10)]
    assert len(subsample(items, 1.0, 0)) == 10
    assert len(subsample(items, 2.5, 0)) == 25
    half = subsample(items, 0.5, 0)
    assert len(half) == 5 and half == subsample(items, 0.5, 0)
    assert subsample(items, 0.0, 0) == []


@pytest.mark.skipif(
    not (SHARED / "data" / "jaquad").is_dir(), reason="../shared/data/jaquad is not available"
)
def test_jaquad_dev_layout() -> None:
    result = load_examples(SHARED / "data" / "jaquad" / "dev")
    assert (result.report.kept, result.report.repaired, result.report.dropped) == (3939, 0, 0)
    first = result.examples[0]
    assert first.id == "de-000-00-000" and first.answers[0].text == "奈良"
    assert first.context[first.answers[0].start : first.answers[0].end] == "奈良"


def test_hugging_face_dataset_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[str, str]] = []

    def fake_load(name: str, split: str) -> list[dict]:
        calls.append((name, split))
        return [
            {
                "id": "h1",
                "title": "T",
                "context": CONTEXT,
                "question": "?",
                "answers": {"text": ["Rome"], "answer_start": [41]},
            }
        ]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    result = load_examples("rajpurkar/squad@validation")
    assert calls == [("rajpurkar/squad", "validation")]
    assert result.examples[0].answers == (Answer("Rome", 41),)
