"""``kotae eval`` end to end through the real CLI: a tiny Japanese + English SQuAD-format set, tiny
untrained models built here (nothing downloaded), every config; the report files are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kotae.cli import app
from kotae.pipeline.eval_job import JSON_KEYS, load_questions, run_eval, squad_files

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"

PARAGRAPHS = [
    ("富士山", "富士山は日本で一番高い山です。高さは3776メートルです。", [
        ("ja-1", "富士山の高さは？", "3776メートル", "Numeric"),
        ("ja-2", "日本で一番高い山は？", "富士山", "Syntactic variation"),
    ]),
    ("京都", "京都は794年に都になりました。金閣寺は有名な寺です。", [
        ("ja-3", "京都はいつ都になりましたか？", "794年", "Numeric"),
        ("ja-4", "有名な寺は？", "金閣寺", "Logical"),
    ]),
    ("Tokyo", "Tokyo is the capital of Japan. It became the capital in 1868.", [
        ("en-1", "What is the capital of Japan?", "Tokyo", None),
        ("en-2", "When did Tokyo become the capital?", "1868", None),
    ]),
    ("Rivers", "The Shinano River is the longest river in Japan. It flows into the Sea of Japan.", [
        ("en-3", "What is the longest river in Japan?", "The Shinano River", None),
    ]),
]  # fmt: skip


def squad_set() -> dict:
    data = []
    for title, context, qas in PARAGRAPHS:
        questions = []
        for qid, question, answer, kind in qas:
            record = {
                "id": qid,
                "question": question,
                "answers": [{"text": answer, "answer_start": context.index(answer)}],
            }
            if kind:
                record["question_type"] = kind
            questions.append(record)
        data.append({"title": title, "paragraphs": [{"context": context, "qas": questions}]})
    return {"version": "1.1", "data": data}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from kotae.indexing.testing import build_tiny_model
    from kotae.reader_training.testing import tiny_reader, tiny_tokenizer

    root = tmp_path_factory.mktemp("eval")
    data = root / "data" / "tiny.json"
    data.parent.mkdir()
    data.write_text(json.dumps(squad_set(), ensure_ascii=False), encoding="utf-8")
    texts = [text for _, context, qas in PARAGRAPHS for text in (context, *(q for _, q, _, _ in qas))]
    tokenizer = tiny_tokenizer(texts)
    reader = root / "reader"
    tiny_reader(tokenizer).save_pretrained(reader)
    tokenizer.save_pretrained(reader)
    return {"root": root, "data": data, "embedder": build_tiny_model(root / "embedder"), "reader": reader}


def _overrides(tiny: dict[str, Path]) -> list[str]:
    return [
        f"embedder.model={json.dumps(str(tiny['embedder']))}",
        f"reader.model={json.dumps(str(tiny['reader']))}",
        "index.passage_tokens=16",
        "index.overlap_tokens=2",
        "reader.runtime=torch",  # as kotae evaluate's default; tests/test_reader_runtime.py covers onnx-int8
    ]


def test_eval_cli_json_and_report_files(tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "report-default"
    args = ["eval", "--config", str(CONFIGS / "default.yaml"), "--data", str(tiny["data"])]
    args += ["--index-dir", str(tiny["root"] / "index"), "--out", str(out), "--json"]
    for item in _overrides(tiny):
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(JSON_KEYS) <= set(payload)
    assert payload["n"] == 7
    for key in ("recall@1", "recall@5", "recall@20", "recall@5_any", "mrr"):
        assert 0.0 <= payload[key] <= 1.0
    assert payload["recall@1"] <= payload["recall@5"] <= payload["recall@20"]
    assert payload["recall@5"] <= payload["recall@5_any"]
    # 4 short contexts: every own paragraph is retrieved within 20 passages, holding its answer
    assert payload["recall@20"] == 1.0
    assert 0.0 <= payload["f1"] <= 100.0 and payload["latency_p95_ms"] >= payload["latency_p50_ms"] > 0
    for name in ("report.md", "report.json", "predictions.jsonl", "recall_at_k.png", "latency.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "f1_by_question_type.png").stat().st_size > 0  # the Japanese questions have types
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["summary"] == payload | {
        k: report["summary"][k] for k in report["summary"].keys() - payload.keys()
    }
    assert set(report["by_question_type"]) == {"Logical", "Numeric", "Syntactic variation"}
    assert report["by_language"]["ja"]["n"] == 4 and report["by_language"]["en"]["n"] == 3
    assert report["settings"]["retrieval_depth"] == 20 and report["hardware"]["cores"] > 0
    assert len(report["recall_curve"]["own"]) == 20
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "recall@5_any" in text and "By question type" in text and "kotae eval" in text
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 7 and json.loads(lines[0])["question"] == "富士山の高さは？"


@pytest.mark.parametrize("name", ["dense.yaml", "bm25.yaml"])
def test_eval_reuses_the_index_for_other_configs(tiny: dict[str, Path], name: str) -> None:
    logs: list[str] = []
    run = run_eval(
        CONFIGS / name,
        tiny["data"],
        index_dir=tiny["root"] / "index-shared",
        limit=3,
        out=tiny["root"] / f"report-{name}",
        overrides=_overrides(tiny),
        log=logs.append,
    )
    assert run.summary["n"] == 3 and run.report["settings"]["retriever_type"] == name.split(".")[0]
    assert run.summary["recall@20"] == 1.0
    index = run.report["index"]
    assert index["documents"] == 4  # every context is indexed, whatever --limit says
    assert index["added"] + index["unchanged"] == 4
    # the reader alone reads the gold context: its prediction is a span of it, and it is exactly what
    # `kotae evaluate` predicts and scores on the same questions (one implementation)
    questions = {q.id: q for q in load_questions(squad_files(tiny["data"]))}
    for result in run.results:
        assert result.reader_prediction in questions[result.id].context
    from kotae.reader_training.evaluate import evaluate_folder

    alone = evaluate_folder(str(tiny["reader"]), str(tiny["data"]), limit=3)
    assert [p.text for p in alone.predictions] == [r.reader_prediction for r in run.results]
    assert run.summary["reader_f1"] == pytest.approx(alone.scores["f1"])
    assert run.summary["reader_runtime"] == run.report["settings"]["reader_runtime"] == "torch"


def test_eval_errors_are_one_line(tiny: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--data", str(tmp_path / "missing.json")])
    assert result.exit_code != 0 and "data not found" in str(result.exception)
    empty = tmp_path / "empty"
    empty.mkdir()
    from kotae.errors import KotaeError

    with pytest.raises(KotaeError, match=r"no SQuAD-format \.json files"):
        squad_files(empty)
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(KotaeError, match="not valid JSON"):
        load_questions(squad_files(bad))
