"""``kotae eval``'s functional core: hit rules, recall@k, MRR, percentiles, breakdowns, with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from kotae.indexing.readers import ReadReport, read_file
from kotae.pipeline.evaluation import (
    EvalQuestion,
    QuestionResult,
    breakdown,
    contains_answer,
    first_hit_rank,
    latency_summary,
    mean_reciprocal_rank,
    percentile,
    recall_at,
    recall_curve,
    score_answer,
    score_question,
    squad_questions,
    summarize,
)
from kotae.reader_training.metrics import evaluate_predictions


def _question(**changes: object) -> EvalQuestion:
    values: dict = {
        "id": "q1",
        "question": "奈良はいつ都でしたか？",
        "answers": ("奈良",),
        "answer_starts": (0,),
        "context": "奈良は8世紀の都です。",
        "document_id": "doc-1",
    }
    values.update(changes)
    return EvalQuestion(**values)


def test_contains_answer_is_verbatim_and_ignores_empty_answers() -> None:
    assert contains_answer("東大寺は奈良にある", ["京都", "奈良"])
    assert not contains_answer("東大寺は奈良にある", ["京都"])
    assert not contains_answer("anything", [""])
    assert not contains_answer("The Capital", ["capital"])  # exact substring, case-sensitive


def test_hit_needs_own_context_and_answer_string() -> None:
    passages = ["奈良の大仏", "京都の寺", "奈良は都だった", "奈良は古都"]
    sources = ["doc-2", "doc-1", "doc-1", "doc-1"]
    # rank 1 holds the string but is another paragraph; rank 2 is our paragraph without it; rank 3 is the hit
    assert first_hit_rank(passages, sources, ["奈良"], "doc-1") == 3
    # the _any rule takes the first passage holding the string, whatever its paragraph
    assert first_hit_rank(passages, sources, ["奈良"], None) == 1
    assert first_hit_rank(passages, sources, ["大阪"], "doc-1") is None
    assert first_hit_rank([], [], ["奈良"], "doc-1") is None
    # several gold strings: any one of them counts
    assert first_hit_rank(passages, sources, ["大阪", "古都"], "doc-1") == 4


def test_recall_and_mrr_by_hand() -> None:
    ranks = [1, 3, None, 7, 20]
    assert recall_at(ranks, 1) == pytest.approx(1 / 5)
    assert recall_at(ranks, 5) == pytest.approx(2 / 5)
    assert recall_at(ranks, 20) == pytest.approx(4 / 5)
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 3 + 0 + 1 / 7 + 1 / 20) / 5)
    assert recall_curve([2, None], 3) == [0.0, 0.5, 0.5]
    assert recall_at([], 5) == 0.0 and mean_reciprocal_rank([]) == 0.0


def test_percentile_interpolates_like_numpy() -> None:
    values = [40.0, 10.0, 20.0, 30.0]
    # sorted 10 20 30 40: p50 at position 1.5 -> 25; p95 at 2.85 -> 30 + 0.85 * 10 = 38.5
    assert percentile(values, 50) == pytest.approx(25.0)
    assert percentile(values, 95) == pytest.approx(38.5)
    assert percentile([7.0], 95) == 7.0 and percentile([], 50) == 0.0
    rng = np.random.default_rng(0).random(101).tolist()
    for q in (0, 5, 50, 95, 100):
        assert percentile(rng, q) == pytest.approx(float(np.percentile(rng, q)))


def test_latency_summary() -> None:
    summary = latency_summary([0.1, 0.2, 0.3, 0.4])
    assert summary["latency_p50_ms"] == pytest.approx(250.0)
    assert summary["latency_p95_ms"] == pytest.approx(385.0)
    assert summary["latency_mean_ms"] == pytest.approx(250.0)
    assert summary["questions_per_second"] == pytest.approx(4 / 1.0)


def test_score_answer_picks_the_language_per_question() -> None:
    ja = _question(answers=("奈良県",))
    em, f1 = score_answer("奈良", ja)  # characters: 2 shared of 2 predicted, 3 gold -> F1 0.8
    assert (em, f1) == (0.0, pytest.approx(80.0))
    en = _question(question="Where is Todaiji?", answers=("the city of Nara",))
    assert score_answer("Nara city", en) == (
        0.0,
        pytest.approx(100 * 2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3)),
    )
    assert score_answer("The city of Nara.", en) == (100.0, 100.0)


def test_score_question_scores_both_answers_and_ranks_the_passages() -> None:
    question = _question(question_type="when")
    passages = [("京都は都です。", "doc-9"), ("奈良の都", "doc-2"), ("奈良は8世紀の都です。", "doc-1")]
    result = score_question(question, "奈良", "奈良は", 0.25, passages)
    assert (result.exact_match, result.f1) == (100.0, 100.0)
    assert result.reader_exact_match == 0.0 and 0.0 < result.reader_f1 < 100.0
    assert (result.rank, result.rank_any) == (3, 2)  # own context third; any passage with 奈良 second
    assert (result.language, result.latency_s, result.question_type) == ("ja", 0.25, "when")
    assert (result.prediction, result.reader_prediction) == ("奈良", "奈良は")
    assert score_question(question, "", "", 0.0, []).rank is None


def test_summarize_agrees_with_the_metrics_module() -> None:
    questions = [
        _question(id="a", answers=("奈良県",)),
        _question(id="b", question="Where is Todaiji?", answers=("Nara", "Nara, Japan")),
        _question(id="c", question="Who?", answers=("Shomu",)),
    ]
    predictions = {"a": "奈良", "b": "in Nara Japan", "c": "Emperor Shomu"}
    results = []
    for question, rank in zip(questions, (1, 6, None), strict=True):
        em, f1 = score_answer(predictions[question.id], question)
        results.append(QuestionResult(question.id, "en", rank, rank, em, f1, 100.0, 100.0, 0.5))
    summary = summarize(results, depth=20)
    official = evaluate_predictions(
        predictions,
        {q.id: list(q.answers) for q in questions},
        "auto",
        texts={q.id: q.question for q in questions},
    )
    assert summary["exact_match"] == pytest.approx(official["exact_match"])
    assert summary["f1"] == pytest.approx(official["f1"])
    assert summary["recall@1"] == pytest.approx(1 / 3)
    assert summary["recall@5"] == pytest.approx(1 / 3)
    assert summary["recall@20"] == pytest.approx(2 / 3)
    assert summary["mrr"] == pytest.approx((1 + 1 / 6) / 3)
    assert summary["reader_f1"] == 100.0 and summary["n"] == 3
    assert summary["questions_per_second"] == pytest.approx(2.0)


def test_breakdown_groups_and_skips_missing_values() -> None:
    def result(kind: str | None, rank: int | None, f1: float) -> QuestionResult:
        return QuestionResult("x", "ja", rank, rank, 0.0, f1, 0.0, 50.0, 0.1, question_type=kind)

    table = breakdown(
        [result("Logical", 1, 100.0), result("Logical", None, 0.0), result(None, 1, 10.0)], "question_type"
    )
    assert list(table) == ["Logical"]
    assert table["Logical"]["n"] == 2
    assert table["Logical"]["recall@5"] == 0.5 and table["Logical"]["mrr"] == 0.5
    assert table["Logical"]["f1"] == 50.0 and table["Logical"]["reader_f1"] == 50.0
    assert breakdown([result("a", 1, 1.0)], "language")["ja"]["n"] == 1


def test_question_document_ids_match_the_indexed_paragraphs(tmp_path) -> None:
    """The id eval expects for a question's context is the id ``kotae index`` gives that paragraph."""
    import json

    data = {
        "data": [
            {"title": "A", "paragraphs": [{"context": "", "qas": []}, {"context": "奈良は都", "qas": [
                {"id": "1", "question": "都は？", "question_type": "Logical",
                 "answers": [{"text": "奈良", "answer_start": 0}]},
                {"id": "2", "question": "unanswerable", "is_impossible": True, "answers": []},
            ]}]},
            {"title": "B", "paragraphs": [{"context": "Nara was the capital.", "qas": [
                {"id": "3", "question": "Which?", "answers": [{"text": "Nara", "answer_start": 0}]},
            ]}]},
        ]
    }  # fmt: skip
    path = tmp_path / "set.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    questions = list(squad_questions(data, str(path)))
    assert [q.id for q in questions] == ["1", "3"]  # the unanswerable one is left out
    assert questions[0].question_type == "Logical" and questions[1].question_type is None
    indexed = {d.id: d.text for d in read_file(path, ReadReport())}
    for question in questions:
        assert indexed[question.document_id] == question.context
