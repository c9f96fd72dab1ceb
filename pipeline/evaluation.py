"""Open-domain evaluation, the functional core of ``kotae eval``: hit rules, recall@k, MRR, latency.

Pure functions, no model and no I/O; :mod:`kotae.pipeline.eval_job` runs the pipeline and calls them.

The rules:

- A retrieved passage is a **hit** for a question when it contains one of the question's gold
  answer strings (exact substring) *and* comes from the question's own context: its
  ``meta["document_id"]`` is the id ``kotae index`` gave that SQuAD paragraph
  (:func:`kotae.indexing.readers.squad_paragraph_id`). A passage of another paragraph that happens to
  contain the same string counts only for ``recall@k_any``.
- ``recall@k`` is the fraction (0-1) of questions with a hit among the first ``k`` passages; ``MRR``
  is the mean of 1/rank of the first hit (0 when none is retrieved).
- EM/F1 (percent, 0-100) are :mod:`kotae.reader_training.metrics`'s, with the language chosen per example
  from the question, as ``kotae evaluate`` does: one implementation of the metrics.
- Latency percentiles interpolate linearly between order statistics, as ``numpy.percentile`` does.

Example::

    rank = first_hit_rank(["x 奈良 y", "奈良"], ["doc-2", "doc-1"], ["奈良"], "doc-1")   # 2
    recall_at([2, None, 1], 1)          # 1/3
    mean_reciprocal_rank([2, None, 1])  # (0.5 + 0 + 1) / 3 = 0.5
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kotae.indexing.readers import squad_paragraph_id
from kotae.reader_training.metrics import Language, resolve_language, score_example

RECALL_KS: tuple[int, ...] = (1, 5, 20)
"""The recall cut-offs ``kotae eval`` reports; retrieval runs at least ``max(RECALL_KS)`` deep."""


@dataclass(frozen=True)
class EvalQuestion:
    """One question of the data set, with the id of its context as ``kotae index`` names it."""

    id: str
    question: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]
    context: str
    document_id: str
    title: str = ""
    question_type: str | None = None


@dataclass(frozen=True)
class QuestionResult:
    """What happened to one question: retrieval ranks, answers and their scores, latency."""

    id: str
    language: Language
    rank: int | None
    """1-based rank of the first hit from the question's own context, or None."""
    rank_any: int | None
    """1-based rank of the first passage containing a gold answer, from any context, or None."""
    exact_match: float
    f1: float
    reader_exact_match: float
    reader_f1: float
    latency_s: float
    question_type: str | None = None
    prediction: str = ""
    reader_prediction: str = ""


def squad_questions(document: Mapping[str, Any], source: str) -> Iterator[EvalQuestion]:
    """The answerable questions of a decoded SQuAD v1.1/v2.0 file, in file order.

    ``source`` is the path string the file is indexed under, so that ``document_id`` is the id of the
    passages ``kotae index`` wrote for the question's paragraph. Unanswerable questions (SQuAD v2) have
    no gold string to find, so they are left out.
    """
    articles = document.get("data")
    if not isinstance(articles, list):
        return
    for a, article in enumerate(articles):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            continue
        title = article.get("title") if isinstance(article.get("title"), str) else ""
        for p, paragraph in enumerate(article["paragraphs"]):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                continue
            for qa in paragraph.get("qas") or []:
                answers = [] if qa.get("is_impossible") else list(qa.get("answers") or [])
                texts = tuple(str(answer["text"]) for answer in answers if str(answer.get("text", "")))
                if not texts:
                    continue
                kind = qa.get("question_type")
                yield EvalQuestion(
                    id=str(qa["id"]),
                    question=str(qa["question"]),
                    answers=texts,
                    answer_starts=tuple(int(answer.get("answer_start", -1)) for answer in answers),
                    context=paragraph["context"],
                    document_id=squad_paragraph_id(source, a, p),
                    title=title or "",
                    question_type=str(kind) if kind else None,
                )


def contains_answer(passage: str, answers: Sequence[str]) -> bool:
    """Whether ``passage`` contains one of the (non-empty) gold answer strings verbatim."""
    return any(answer and answer in passage for answer in answers)


def first_hit_rank(
    passages: Sequence[str],
    document_ids: Sequence[str | None],
    answers: Sequence[str],
    document_id: str | None,
) -> int | None:
    """1-based rank of the first passage that holds an answer and comes from ``document_id``.

    ``document_id=None`` drops the second condition: any passage holding an answer is a hit
    (the ``_any`` variant).
    """
    for rank, (text, source) in enumerate(zip(passages, document_ids, strict=True), start=1):
        if (document_id is None or source == document_id) and contains_answer(text, answers):
            return rank
    return None


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    """Fraction of questions whose first hit is within the first ``k`` (0.0 for no questions)."""
    if not ranks:
        return 0.0
    return sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks)


def recall_curve(ranks: Sequence[int | None], depth: int) -> list[float]:
    """``recall@k`` for k = 1..depth."""
    return [recall_at(ranks, k) for k in range(1, depth + 1)]


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float:
    """Mean of 1/rank of the first hit, 0 for a question with none retrieved."""
    if not ranks:
        return 0.0
    return sum(1.0 / rank for rank in ranks if rank is not None) / len(ranks)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation (``numpy.percentile``'s default)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean latency in milliseconds and questions per second (one question at a time)."""
    total = sum(seconds)
    return {
        "latency_p50_ms": 1000.0 * percentile(seconds, 50),
        "latency_p95_ms": 1000.0 * percentile(seconds, 95),
        "latency_mean_ms": 1000.0 * total / len(seconds) if seconds else 0.0,
        "questions_per_second": len(seconds) / total if total > 0 else 0.0,
    }


def score_answer(prediction: str, question: EvalQuestion) -> tuple[float, float]:
    """(EM, F1) in percent of one answer, in the question's language (SQuAD v1.1 rules)."""
    language = resolve_language("auto", question.question)
    em, f1 = score_example(prediction, question.answers, language, version_2=False)
    return 100.0 * em, 100.0 * f1


def score_question(
    question: EvalQuestion,
    prediction: str,
    reader_prediction: str,
    latency_s: float,
    passages: Sequence[tuple[str, str | None]],
) -> QuestionResult:
    """One question's result: the pipeline's answer and the reader's answer on the gold context,
    scored; the rank of the first retrieved passage (``(text, document id)``, in retrieval order)
    that holds a gold answer, from the question's own context and from any."""
    texts = [text for text, _ in passages]
    sources = [source for _, source in passages]
    em, f1 = score_answer(prediction, question)
    reader_em, reader_f1 = score_answer(reader_prediction, question)
    return QuestionResult(
        id=question.id,
        language=resolve_language("auto", question.question),
        rank=first_hit_rank(texts, sources, question.answers, question.document_id),
        rank_any=first_hit_rank(texts, sources, question.answers, None),
        exact_match=em,
        f1=f1,
        reader_exact_match=reader_em,
        reader_f1=reader_f1,
        latency_s=latency_s,
        question_type=question.question_type,
        prediction=prediction,
        reader_prediction=reader_prediction,
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(results: Sequence[QuestionResult], depth: int) -> dict[str, float | int]:
    """The headline numbers: ``recall@1/5/20``, ``recall@5_any``, ``mrr``, reader and end-to-end EM/F1,
    latency and ``n`` (keys as ``kotae eval --json`` prints them)."""
    ranks = [r.rank for r in results]
    summary: dict[str, float | int] = {f"recall@{k}": recall_at(ranks, k) for k in RECALL_KS if k <= depth}
    summary["recall@5_any"] = recall_at([r.rank_any for r in results], 5)
    summary["mrr"] = mean_reciprocal_rank(ranks)
    summary["reader_exact_match"] = _mean([r.reader_exact_match for r in results])
    summary["reader_f1"] = _mean([r.reader_f1 for r in results])
    summary["exact_match"] = _mean([r.exact_match for r in results])
    summary["f1"] = _mean([r.f1 for r in results])
    summary.update(latency_summary([r.latency_s for r in results]))
    summary["n"] = len(results)
    return summary


def breakdown(results: Sequence[QuestionResult], key: str) -> dict[str, dict[str, float | int]]:
    """Per value of ``key`` (``question_type`` or ``language``): n, recall@5, MRR, reader and
    end-to-end EM/F1; results without a value are left out. Sorted by value."""
    groups: dict[str, list[QuestionResult]] = {}
    for result in results:
        value = getattr(result, key)
        if value is not None:
            groups.setdefault(str(value), []).append(result)
    table: dict[str, dict[str, float | int]] = {}
    for value in sorted(groups):
        rows = groups[value]
        table[value] = {
            "n": len(rows),
            "recall@5": recall_at([r.rank for r in rows], 5),
            "mrr": mean_reciprocal_rank([r.rank for r in rows]),
            "reader_exact_match": _mean([r.reader_exact_match for r in rows]),
            "reader_f1": _mean([r.reader_f1 for r in rows]),
            "exact_match": _mean([r.exact_match for r in rows]),
            "f1": _mean([r.f1 for r in rows]),
        }
    return table
