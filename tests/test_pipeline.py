"""The QA pipeline: configs decide the components, every combination answers, YAML round-trips safely,
the reader agrees with ``kotae evaluate``'s decoder, and ``kotae ask`` prints what it promises.

Tiny untrained models (built in seconds, nothing downloaded) over a small Japanese + English corpus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from haystack import Document, ExtractedAnswer
from typer.testing import CliRunner

from kotae.cli import app
from kotae.errors import KotaeError
from kotae.pipeline.answers import answer_record, sentence_around, source_span
from kotae.pipeline.build import ALLOWED_MODULES, build_pipeline, check_allowed, load_pipeline_yaml
from kotae.pipeline.config import load_pipeline_config
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.reader import KotaeExtractiveReader
from kotae.pipeline.testing import QUESTIONS, TinySetup, build_tiny_setup

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"

EXPECTED = {
    "default.yaml": {"query_embedder", "dense_retriever", "bm25_retriever", "joiner", "reader"},
    "dense.yaml": {"query_embedder", "dense_retriever", "reader"},
    "bm25.yaml": {"bm25_retriever", "reader"},
}
READER_CLASSES = {"kotae": "KotaeExtractiveReader", "haystack": "TransformersExtractiveReader"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("qa"))


def _source_text(setup: TinySetup, record: dict) -> str:
    return setup.texts[Path(record["source"]).name]


# ------------------------------------------------------------------ pure helpers


def test_sentence_around_japanese_and_english() -> None:
    text = "東京は日本の首都です。富士山は高い。京都は古い。"
    assert sentence_around(text, 11, 14) == ("富士山は高い。", 0, 3)
    english = "Tokyo is big. The capital is Tokyo! Osaka is not."
    context, start, end = sentence_around(english, 29, 34)
    assert context == "The capital is Tokyo!" and context[start:end] == "Tokyo"
    # an answer spanning two sentences keeps both; a very long sentence is cut around the answer
    assert sentence_around(text, 8, 13)[0] == "東京は日本の首都です。富士山は高い。"
    long = "あ" * 500 + "答え" + "い" * 500
    context, start, end = sentence_around(long, 500, 502, limit=100)
    assert len(context) <= 100 and context[start:end] == "答え"


def test_source_span_uses_passage_offset() -> None:
    assert source_span(Document(content="abc", meta={"start": 40}), 1, 2) == (41, 42)
    assert source_span(Document(content="abc"), 1, 2) == (1, 2)


def test_no_answer_record() -> None:
    record = answer_record(ExtractedAnswer(query="q", score=0.3, data=None))
    assert record["answer"] is None and record["start"] is None and record["score"] == 0.3


def test_config_errors_are_one_line() -> None:
    with pytest.raises(KotaeError, match=r"unknown key 'reader.topk'"):
        load_pipeline_config(CONFIGS / "default.yaml", ["reader.topk=3"])
    with pytest.raises(KotaeError, match=r"retriever.type = 'sparse' is not allowed"):
        load_pipeline_config(None, ["retriever.type=sparse"])
    with pytest.raises(KotaeError, match="weights"):
        load_pipeline_config(None, ["retriever.weights=[-1, 1]"])
    assert load_pipeline_config(None, ["retriever.weights=[0.7, 0.3]"]).retriever.weights == (0.7, 0.3)


def test_shipped_configs_differ_only_in_retriever() -> None:
    configs = {name: load_pipeline_config(CONFIGS / name) for name in EXPECTED}
    assert {name: c.retriever.type for name, c in configs.items()} == {
        "default.yaml": "hybrid",
        "dense.yaml": "dense",
        "bm25.yaml": "bm25",
    }
    assert len({c.model_dump_json(exclude={"retriever"}) for c in configs.values()}) == 1


# ------------------------------------------------------------------ built pipelines


@pytest.mark.parametrize("reader_type", ["kotae", "haystack"])
@pytest.mark.parametrize("config_name", list(EXPECTED))
def test_configs_build_different_pipelines_that_answer(
    setup: TinySetup, config_name: str, reader_type: str
) -> None:
    config = setup.config(CONFIGS / config_name, [f"reader.type={reader_type}", "reader.top_k=3"])
    answerer = QuestionAnswerer.from_config(config)
    pipeline = answerer.pipeline
    assert set(pipeline.graph.nodes) == EXPECTED[config_name]
    assert type(pipeline.get_component("reader")).__name__ == READER_CLASSES[reader_type]
    if "joiner" in EXPECTED[config_name]:
        assert pipeline.get_component("joiner").join_mode.value == "reciprocal_rank_fusion"
    for question in QUESTIONS[:2]:
        answers = answerer.ask(question)
        spans = [a for a in answers if a.data is not None]
        assert 1 <= len(spans) <= 3
        for answer in spans:
            assert isinstance(answer, ExtractedAnswer) and answer.document is not None
            record = answer_record(answer)
            # offsets into the passage and into the source document both point at the answer text
            offset = answer.document_offset
            assert (
                offset is not None
                and (answer.document.content or "")[offset.start : offset.end] == answer.data
            )
            assert _source_text(setup, record)[record["start"] : record["end"]] == answer.data
            assert record["context"][record["context_start"] : record["context_end"]] == answer.data
        scores = [a.score for a in spans]
        assert scores == sorted(scores, reverse=True)


def test_filters_reach_the_retrievers(setup: TinySetup) -> None:
    answerer = QuestionAnswerer.from_config(setup.config(CONFIGS / "default.yaml"))
    source = str(setup.corpus / "tokyo.txt")
    answers = answerer.ask(
        "富士山の高さは？", filters={"field": "meta.source", "operator": "==", "value": source}
    )
    assert answers and {a.document.meta["source"] for a in answers if a.document} == {source}


def test_missing_index_and_unprepared_reader_are_one_line(setup: TinySetup, tmp_path: Path) -> None:
    with pytest.raises(KotaeError, match=r"no index at .*kotae index .*--corpus PATH"):
        QuestionAnswerer.from_config(setup.config(None, [f"index.dir={tmp_path / 'none'}"]))
    assert not (tmp_path / "none").exists()
    with pytest.raises(KotaeError, match=r"reader model 'my-reader' is not prepared.*kotae train"):
        QuestionAnswerer.from_config(setup.config(None, ["reader.model=my-reader"]))


# ------------------------------------------------------------------ the reader component


def test_reader_agrees_with_evaluate(setup: TinySetup) -> None:
    """On one passage, the pipeline reader ranking by raw logit sums gives exactly what ``kotae
    evaluate`` scores (with the default margin ranking, only single-window passages must agree)."""
    from kotae.reader_training.data import QAExample
    from kotae.reader_training.evaluate import DecodeSettings, load_reader, predict

    reader = KotaeExtractiveReader(
        model=str(setup.reader), top_k=1, max_length=48, stride=16, relative_scores=False
    )
    reader.warm_up()
    model, tokenizer, _ = load_reader(str(setup.reader))
    settings = DecodeSettings(max_length=48, stride=16)
    for name, text in setup.texts.items():
        for question in QUESTIONS:
            best = reader.run(query=question, documents=[Document(content=text)])["answers"][0]
            example = QAExample(id=f"{name}-{question}", question=question, context=text, answers=())
            expected = predict(model, tokenizer, [example], settings)[0]
            assert (best.data, best.document_offset.start, best.document_offset.end) == (
                expected.text,
                expected.start,
                expected.end,
            )
            assert best.meta["logit_score"] == pytest.approx(expected.score)


def test_reader_ranks_across_passages_limits_length_and_adds_no_answer(setup: TinySetup) -> None:
    documents = [
        Document(content=text, meta={"start": 5, "source": name}) for name, text in setup.texts.items()
    ]
    reader = KotaeExtractiveReader(
        model=str(setup.reader), top_k=6, max_answer_length=3, max_length=40, stride=8
    )
    answers = reader.run(query="富士山の高さは？", documents=documents)["answers"]
    assert len(answers) == 6
    assert len({a.document.id for a in answers if a.document}) >= 1
    logits = [a.meta["logit_score"] for a in answers]
    assert logits == sorted(logits, reverse=True)
    tokenizer = reader.loaded.tokenizer
    for answer in answers:
        assert len(tokenizer(answer.data, add_special_tokens=False)["input_ids"]) <= 3
        assert answer.meta["source_start"] == answer.document_offset.start + 5
    with_null = reader.run(query="富士山の高さは？", documents=documents, top_k=2, no_answer=True)["answers"]
    assert len(with_null) == 3 and sum(a.data is None for a in with_null) == 1
    assert reader.run(query="富士山の高さは？", documents=[])["answers"] == []


def test_reader_validates_and_round_trips() -> None:
    with pytest.raises(ValueError, match="top_k must be greater than 0"):
        KotaeExtractiveReader(model="x", top_k=0)
    reader = KotaeExtractiveReader(
        model="some/reader", top_k=3, max_answer_length=12, no_answer=True, device="cpu"
    )
    data = reader.to_dict()
    assert data["type"] == "haystack_integrations.components.readers.kotae.KotaeExtractiveReader"
    again = KotaeExtractiveReader.from_dict(data)
    assert again.to_dict() == data


# ------------------------------------------------------------------ YAML: show, load back, allow-list


def _normalised(data: dict) -> dict:
    return {**data, "connections": sorted(data["connections"], key=lambda c: (c["sender"], c["receiver"]))}


def test_pipeline_show_loads_back_and_answers(setup: TinySetup) -> None:
    args = ["pipeline", "show", "--config", str(CONFIGS / "default.yaml")]
    for override in setup.overrides:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "haystack_integrations.components.readers.kotae.KotaeExtractiveReader" in text
    assert "reciprocal_rank_fusion" in text
    loaded = load_pipeline_yaml(text)
    assert _normalised(loaded.to_dict()) == _normalised(
        build_pipeline(setup.config(CONFIGS / "default.yaml")).to_dict()
    )
    answers = QuestionAnswerer(loaded).ask(QUESTIONS[0], top_k=2)
    assert answers and answers[0].data


def test_allow_list_refuses_outside_modules_without_importing(
    setup: TinySetup, tmp_path: Path, monkeypatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "kotae_evil_plugin.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\nclass Evil:\n    pass\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    good = build_pipeline(setup.config(CONFIGS / "bm25.yaml")).dumps()
    import yaml

    def with_type(path: list[str], kind: str) -> str:
        data = yaml.safe_load(good)
        node = data
        for key in path:
            node = node[key]
        node["type"] = kind
        return yaml.safe_dump(data)

    cases = [
        with_type(["components", "reader"], "kotae_evil_plugin.Evil"),  # a component
        with_type(
            ["components", "bm25_retriever", "init_parameters", "document_store"], "kotae_evil_plugin.Evil"
        ),
        with_type(["components", "reader"], "haystack.components.generators.openai.OpenAIGenerator"),
        with_type(["components", "reader"], "os.system"),
    ]
    for text in cases:
        with pytest.raises(KotaeError, match="not on kotae's allow-list"):
            load_pipeline_yaml(text)
    assert "kotae_evil_plugin" not in sys.modules and not marker.exists()
    assert "haystack.components.generators.openai" not in sys.modules
    check_allowed(yaml.safe_load(good))  # the real thing passes
    assert all(
        m.startswith(("kotae.pipeline.", "kotae.indexing.", "haystack.", "haystack_integrations."))
        for m in ALLOWED_MODULES
    )


# ------------------------------------------------------------------ kotae ask


def test_kotae_ask_json(setup: TinySetup) -> None:
    args = ["ask", "富士山の高さは？", "--json", "--top-k", "2", "--config", str(CONFIGS / "bm25.yaml")]
    for override in setup.overrides:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["question"] == "富士山の高さは？"
    assert 1 <= len(payload["answers"]) <= 2
    for record in payload["answers"]:
        assert {"answer", "score", "document_id", "source", "title", "start", "end", "context"} <= set(record)
        assert _source_text(setup, record)[record["start"] : record["end"]] == record["answer"]
        assert record["answer"] in record["context"]


def test_kotae_ask_prints_answers_and_fails_in_one_line(setup: TinySetup, tmp_path: Path) -> None:
    base = [f"--set={override}" for override in setup.overrides]
    result = CliRunner().invoke(
        app, ["ask", "What is the capital of Japan?", "--config", str(CONFIGS / "bm25.yaml"), *base]
    )
    assert result.exit_code == 0, result.output
    assert "score" in result.stdout and "tokyo.txt" in result.stdout
    missing = CliRunner().invoke(app, ["ask", "x", *base, "--index-dir", str(tmp_path / "none")])
    assert isinstance(missing.exception, KotaeError) and "kotae index" in str(missing.exception)
    assert "\n" not in str(missing.exception)


def test_kotae_ask_answers_several_questions_with_one_load(setup: TinySetup) -> None:
    args = ["ask", "富士山の高さは？", "What is the capital of Japan?", "--json", "-k", "1"]
    args += ["--config", str(CONFIGS / "bm25.yaml"), *(f"--set={o}" for o in setup.overrides)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["question"] for line in lines] == ["富士山の高さは？", "What is the capital of Japan?"]
    assert all(len(line["answers"]) == 1 for line in lines)
