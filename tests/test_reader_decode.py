"""The decoder on hand-made logits: spans inside the context only, lengths, merging, null answers."""

from __future__ import annotations

import numpy as np
import pytest

from kotae.reader_training.decode import (
    Decoded,
    Span,
    WindowLogits,
    choose_answer,
    decode,
    softmax,
    window_candidates,
)

CONTEXT = "Alice met Bob"
# [CLS] who ? [SEP] alice met bob [SEP]
OFFSETS = np.array([[-1, -1], [-1, -1], [-1, -1], [-1, -1], [0, 5], [6, 9], [10, 13], [-1, -1]])


def window(start: list[float], end: list[float], offsets: np.ndarray = OFFSETS, **kw: int) -> WindowLogits:
    return WindowLogits(np.array(start, dtype=float), np.array(end, dtype=float), offsets, **kw)


def test_best_span_and_ranking() -> None:
    w = window([0, 0, 0, 0, 1, 0, 5, 0], [0, 0, 0, 0, 0, 0, 4, 0])
    decoded = decode([w], [CONTEXT], n_best=20, max_answer_length=30)
    best = decoded.answers[0]
    assert (best.text, best.start, best.end, best.score) == ("Bob", 10, 13, 9.0)
    assert (best.start_logit, best.end_logit) == (5.0, 4.0)
    texts = [a.text for a in decoded.answers]
    # "Alice met Bob" (1 + 4) ranks second, then the other valid pairs; never an end before its start
    assert texts[1] == "Alice met Bob"
    assert set(texts) == {"Alice", "Alice met", "Alice met Bob", "met", "met Bob", "Bob"}
    assert decoded.null_score == 0.0
    assert [a.score for a in decoded.answers] == sorted((a.score for a in decoded.answers), reverse=True)


def test_question_tokens_are_never_answers() -> None:
    # the highest logits sit on question tokens (offsets -1): they must be ignored
    w = window([0, 9, 9, 0, 0, 2, 0, 9], [0, 9, 9, 0, 0, 3, 0, 9])
    best = decode([w], [CONTEXT]).answers[0]
    assert best.text == "met"


def test_max_answer_length_in_tokens() -> None:
    w = window([0, 0, 0, 0, 5, 0, 0, 0], [0, 0, 0, 0, 0, 0, 5, 0])
    assert decode([w], [CONTEXT], max_answer_length=3).answers[0].text == "Alice met Bob"
    assert decode([w], [CONTEXT], max_answer_length=2).answers[0].text != "Alice met Bob"
    pairs = window_candidates(w.start_logits, w.end_logits, w.offsets, n_best=1, max_answer_length=2)
    assert pairs == []  # the only top-1 pair (4, 6) is 3 tokens long


def test_windows_merge_keeps_best_score_and_min_null() -> None:
    context = "Alice met Bob in Paris"
    first = window(
        [2, 0, 0, 0, 0, 0, 3, 0],
        [1, 0, 0, 0, 0, 0, 3, 0],
        np.array([[-1, -1], [-1, -1], [-1, -1], [-1, -1], [0, 5], [6, 9], [10, 13], [-1, -1]]),
    )
    second = window(
        [0, 0, 0, 0, 4, 0, 0, 0],
        [1, 0, 0, 0, 4, 0, 0, 0],
        np.array([[-1, -1], [-1, -1], [-1, -1], [-1, -1], [10, 13], [14, 16], [17, 22], [-1, -1]]),
    )
    decoded = decode([first, second], [context])
    bobs = [a for a in decoded.answers if a.text == "Bob"]
    assert len(bobs) == 1 and bobs[0].score == 8.0  # the better of 6 (first) and 8 (second)
    assert decoded.null_score == 1.0  # min(2 + 1, 0 + 1)


def test_scores_compare_across_contexts() -> None:
    contexts = ["Alice met Bob", "Carol met Dave"]
    a = window([0, 0, 0, 0, 0, 0, 3, 0], [0, 0, 0, 0, 0, 0, 3, 0], context_index=0)
    offsets_b = np.array([[-1, -1], [-1, -1], [-1, -1], [-1, -1], [0, 5], [6, 9], [10, 14], [-1, -1]])
    b = window([0, 0, 0, 0, 0, 0, 4, 0], [0, 0, 0, 0, 0, 0, 4, 0], offsets_b, context_index=1)
    decoded = decode([a, b], contexts, top_k=2)
    assert [(s.text, s.context_index, s.score) for s in decoded.answers] == [
        ("Dave", 1, 8.0),
        ("Bob", 0, 6.0),
    ]


def test_relative_scores_rank_by_margin_over_each_window_null() -> None:
    contexts = ["Alice met Bob", "Carol met Dave"]
    # passage 0: "Bob" 6 over a CLS of 0; passage 1: "Dave" 8 but its CLS says "not here" at 7
    a = window([0, 0, 0, 0, 0, 0, 3, 0], [0, 0, 0, 0, 0, 0, 3, 0], context_index=0)
    offsets_b = np.array([[-1, -1], [-1, -1], [-1, -1], [-1, -1], [0, 5], [6, 9], [10, 14], [-1, -1]])
    b = window([4, 0, 0, 0, 0, 0, 4, 0], [3, 0, 0, 0, 0, 0, 4, 0], offsets_b, context_index=1)
    raw = decode([a, b], contexts, top_k=2)
    assert [s.text for s in raw.answers] == ["Dave", "Bob"]
    relative = decode([a, b], contexts, top_k=20, relative_to_null=True)
    assert (relative.answers[0].text, relative.answers[0].score) == ("Bob", 6.0)
    dave = next(s for s in relative.answers if s.text == "Dave")
    assert (dave.score, dave.start_logit, dave.end_logit) == (1.0, 4.0, 4.0)  # raw logits kept
    assert relative.null_score == 0.0


def test_cls_not_at_zero_and_null_choice() -> None:
    offsets = np.array([[-1, -1], [-1, -1], [0, 5], [6, 9], [10, 13], [-1, -1], [-1, -1]])
    w = window([0, 0, 0, 0, 5, 0, 6], [0, 0, 0, 0, 4, 0, 5], offsets, cls_index=6)
    decoded = decode([w], [CONTEXT])
    assert decoded.null_score == 11.0
    assert choose_answer(decoded) is not None  # v1.1: always answer
    assert choose_answer(decoded, allow_null=True) is None  # 11 - 9 > 0
    kept = choose_answer(decoded, allow_null=True, null_threshold=3.0)  # 11 - 9 = 2 <= 3
    assert kept is not None and kept.text == "Bob"


def test_empty_and_softmax() -> None:
    assert choose_answer(Decoded([], None)) is None
    no_context = window([1, 2], [1, 2], np.array([[-1, -1], [-1, -1]]))
    assert decode([no_context], [""]).answers == []
    probabilities = softmax([1.0, 1.0, 1.0 + np.log(2)])
    assert probabilities == pytest.approx([0.25, 0.25, 0.5])
    assert softmax([]).size == 0  # no scores, no probabilities
    assert softmax([1000.0, 1000.0]) == pytest.approx([0.5, 0.5])  # large logits do not overflow
    only = Span("a", 0, 1, 1.0, 0.5, 0.5)
    assert choose_answer(Decoded([only], None), allow_null=True) is only  # no CLS logits: no null answer


def test_trim_span_drops_the_space_a_word_initial_piece_covers() -> None:
    from kotae.reader_training.decode import trim_span

    context = "Geneva was John Calvin's home"
    assert trim_span(context, 10, 22) == (11, 22)  # " John Calvin" -> "John Calvin"
    assert trim_span(context, 6, 7) == (7, 7)  # whitespace only: empty, skipped by decode
    assert trim_span("東京 ", 0, 3) == (0, 2)
