"""Ranking answers across passages: the pure combination of reader and retriever scores, and the real
pipeline reader ordering its answers by it (tiny real models, real index)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from haystack import Document

from kotae.pipeline.config import load_pipeline_config
from kotae.pipeline.ranking import combined_scores, rank_order, retriever_evidence, unread_cannot_win
from kotae.pipeline.reader import KotaeExtractiveReader
from kotae.pipeline.testing import TinySetup, build_tiny_setup

# ------------------------------------------------------------------ pure functions, hand-computed


def test_rank_evidence_is_minus_log_rank() -> None:
    assert retriever_evidence([0.9, None, 0.1], "rank") == pytest.approx([0.0, -math.log(2), -math.log(3)])
    assert retriever_evidence([], "rank").size == 0


def test_score_evidence_is_the_passage_score_or_zero() -> None:
    assert retriever_evidence([0.9, None, 0.25], "score") == pytest.approx([0.9, 0.0, 0.25])


def test_unknown_evidence_names_the_choices() -> None:
    with pytest.raises(ValueError, match="rank, score"):
        retriever_evidence([1.0], "bm25")  # type: ignore[arg-type]


def test_combined_scores_interpolate_reader_and_passage_evidence() -> None:
    prior = retriever_evidence([0.9, 0.5, 0.4], "rank")
    # span 0: margin 3.0 in the 2nd passage; span 1: margin 2.5 in the 1st
    assert combined_scores([3.0, 2.5], [1, 0], prior, 0.0) == pytest.approx([3.0, 2.5])
    assert combined_scores([3.0, 2.5], [1, 0], prior, 0.5) == pytest.approx(
        [0.5 * 3.0 - 0.5 * math.log(2), 1.25]
    )
    assert combined_scores([3.0, 2.5], [1, 0], prior, 1.0) == pytest.approx([-math.log(2), 0.0])
    assert list(rank_order(combined_scores([3.0, 2.5], [1, 0], prior, 0.5))) == [1, 0]
    assert combined_scores([], [], prior, 0.3).size == 0


def test_combined_scores_check_their_inputs() -> None:
    with pytest.raises(ValueError, match="weight must be between 0 and 1"):
        combined_scores([1.0], [0], [0.0], 1.5)
    with pytest.raises(ValueError, match="2 reader scores but 1 passage indexes"):
        combined_scores([1.0, 2.0], [0], [0.0], 0.5)


def test_rank_order_is_stable_on_ties() -> None:
    assert list(rank_order(np.array([1.0, 2.0, 1.0, 2.0]))) == [1, 3, 0, 2]


def test_unread_passages_cannot_win_once_their_best_possible_score_is_below_the_best() -> None:
    prior = retriever_evidence([None] * 10, "rank")
    # after 3 passages the 4th (evidence -log 4) is the best unread one: 0.25 * M - 0.75 * log 4
    assert unread_cannot_win(0.0, prior, 3, 0.75, 4.0)
    assert not unread_cannot_win(0.0, prior, 3, 0.75, 10.0)
    assert unread_cannot_win(0.25 * 10 - 0.75 * math.log(4), prior, 3, 0.75, 10.0)
    assert not unread_cannot_win(0.25 * 10 - 0.75 * math.log(4) - 1e-9, prior, 3, 0.75, 10.0)
    assert unread_cannot_win(-100.0, prior, 10, 0.75, 10.0)  # nothing left to read
    # score evidence: the best unread passage need not be the next one
    assert not unread_cannot_win(1.0, [0.0, 0.0, 5.0], 1, 0.5, 0.0)  # passage 2 could reach 2.5


# ------------------------------------------------------------------ config and component


def test_config_keys_validate_and_reach_the_reader() -> None:
    from kotae.errors import KotaeError
    from kotae.pipeline.build import build_components

    with pytest.raises(KotaeError, match="retriever_weight"):
        load_pipeline_config(None, ["reader.retriever_weight=2"])
    with pytest.raises(KotaeError, match="retriever_evidence"):
        load_pipeline_config(None, ["reader.retriever_evidence=bm25"])
    with pytest.raises(ValueError, match="retriever_weight must be between 0 and 1"):
        KotaeExtractiveReader(model="x", retriever_weight=-0.1)
    reader = KotaeExtractiveReader(model="some/reader", retriever_weight=0.3, retriever_evidence="score")
    again = KotaeExtractiveReader.from_dict(reader.to_dict())
    assert (again.retriever_weight, again.retriever_evidence) == (0.3, "score")
    stopping = KotaeExtractiveReader(model="some/reader", early_stop_margin=10.0, early_stop_after=[6, 3, 3])
    again = KotaeExtractiveReader.from_dict(stopping.to_dict())
    assert (again.early_stop_margin, again.early_stop_after) == (10.0, [3, 6])
    with pytest.raises(ValueError, match="early_stop_after counts must be 1 or more"):
        KotaeExtractiveReader(model="x", early_stop_after=[0])
    with pytest.raises(KotaeError, match="early_stop_after"):
        load_pipeline_config(None, ["reader.early_stop_after=[0]"])
    config = load_pipeline_config(None, ["reader.early_stop_margin=8", "reader.early_stop_after=[2]"])
    assert (config.reader.early_stop_margin, config.reader.early_stop_after) == (8.0, [2])
    del build_components  # imported to show where the keys are wired (pipeline/build.py)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("ranking"), index=False)


def _passages(setup: TinySetup) -> list[Document]:
    return [Document(content=text, meta={"source": name}, score=0.1) for name, text in setup.texts.items()]


def test_reader_orders_answers_by_the_combined_score(setup: TinySetup) -> None:
    """With the retriever's share at 0 the answers follow the reader's margins; with a share, every
    answer's ``rank_score`` is the combined score of its span and its passage's rank, and the answers
    come in that order, best first, with the scores' softmax order too."""
    passages = _passages(setup)
    question = "富士山の高さは？"
    alone = KotaeExtractiveReader(model=str(setup.reader), top_k=50, max_length=40, stride=8)
    answers = alone.run(query=question, documents=passages)["answers"]
    margins = [a.meta["logit_score"] for a in answers]
    assert margins == sorted(margins, reverse=True)
    assert [a.meta["rank_score"] for a in answers] == pytest.approx(margins)

    # move the reader's favourite passage to the end of the retrieval order
    favourite = answers[0].document
    passages = [p for p in passages if p is not favourite] + [p for p in passages if p is favourite]
    weight = 0.9
    mixed = KotaeExtractiveReader(
        model=str(setup.reader), top_k=8, max_length=40, stride=8, retriever_weight=weight
    )
    ranked = mixed.run(query=question, documents=passages)["answers"]
    position = {id(p): i for i, p in enumerate(passages)}
    expected = [
        (1 - weight) * a.meta["logit_score"] - weight * math.log(position[id(a.document)] + 1) for a in ranked
    ]
    assert [a.meta["rank_score"] for a in ranked] == pytest.approx(expected)
    assert expected == sorted(expected, reverse=True)
    assert [a.score for a in ranked] == sorted((a.score for a in ranked), reverse=True)
    # the retriever's first passage now gives the top answer: its best span by the reader's margin
    assert ranked[0].document is passages[0] is not favourite
    first = [a for a in answers if a.document is passages[0]]
    assert first and ranked[0].meta["logit_score"] == pytest.approx(first[0].meta["logit_score"])


def test_pipeline_orders_answers_by_reader_and_retrieval_rank(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The real hybrid pipeline (tiny models, real FAISS + BM25 index): each answer's ranking score is
    ``(1 - w) * margin - w * log(rank)`` of its passage in the fused retrieval order, and the answers
    come best first by it."""
    from pathlib import Path

    from kotae.pipeline.qa import QuestionAnswerer

    setup = build_tiny_setup(tmp_path_factory.mktemp("ranked-pipeline"))
    default = Path(__file__).resolve().parents[1] / "configs" / "pipeline" / "default.yaml"
    weight = 0.05
    config = setup.config(
        default, [f"reader.retriever_weight={weight}", "reader.top_k=20", "retriever.top_k=4"]
    )
    answerer = QuestionAnswerer.from_config(config)
    reader = answerer.pipeline.get_component("reader")
    assert reader.retriever_weight == weight
    for question in ("富士山の高さは？", "What is the capital of Japan?"):
        result = answerer.pipeline.run(answerer.inputs(question, None, None), include_outputs_from={"joiner"})
        answers = result["reader"]["answers"]
        order = [d.id for d in result["joiner"]["documents"]]  # the fused order the reader was given
        assert len(answers) == 20 and len({a.document.id for a in answers if a.document}) >= 2
        expected = [
            (1 - weight) * a.meta["logit_score"] - weight * math.log(order.index(a.document.id) + 1)
            for a in answers
            if a.document is not None
        ]
        assert [a.meta["rank_score"] for a in answers] == pytest.approx(expected)
        assert expected == sorted(expected, reverse=True)


def test_early_stopping_reads_passages_in_rounds_and_stops_when_the_rest_cannot_win(setup: TinySetup) -> None:
    """A margin no span reaches reads every passage (the same answers as reading them at once); a
    margin every span reaches stops after the first round, with the answers of the first passages
    alone; batched questions stop each on their own, with the answers they get one at a time."""
    passages = _passages(setup) + _passages(setup)  # distinct objects; 3 rounds from 7 passages on
    question = "富士山の高さは？"
    common = {"model": str(setup.reader), "top_k": 50, "max_length": 40, "stride": 8, "retriever_weight": 0.5}
    full = KotaeExtractiveReader(**common)
    never = KotaeExtractiveReader(**common, early_stop_margin=1e9)
    always = KotaeExtractiveReader(**common, early_stop_margin=-1e9)

    def spans(answers: list) -> list[tuple[str, int, float]]:
        return [(a.data, id(a.document), round(a.meta.get("rank_score", 0.0), 4)) for a in answers]

    everything = full.run(query=question, documents=passages)["answers"]
    assert spans(never.run(query=question, documents=passages)["answers"]) == spans(everything)
    first_three = full.run(query=question, documents=passages[:3])["answers"]
    stopped = always.run(query=question, documents=passages)["answers"]
    assert {id(a.document) for a in stopped} <= {id(p) for p in passages[:3]}
    assert spans(stopped) == spans(first_three)
    # a no-answer needs every window's null score: no early stop then
    with_null = always.run(query=question, documents=passages, no_answer=True)["answers"]
    assert spans(with_null) == spans(full.run(query=question, documents=passages, no_answer=True)["answers"])

    from kotae.pipeline.reader import ReadRequest

    requests = [ReadRequest(question, passages), ReadRequest("日本の首都は？", passages[:4])]
    for reader in (never, always):
        together = reader.read_many(requests)
        alone = [reader.read_many([request])[0] for request in requests]
        assert [spans(a) for a in together] == [spans(a) for a in alone]
