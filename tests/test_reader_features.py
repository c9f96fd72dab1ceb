"""Windowing and labels: window edges, answers split across windows, CLS wherever the tokenizer puts it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from kotae.errors import KotaeError
from kotae.reader_training.data import Answer, QAExample
from kotae.reader_training.features import (
    label_window,
    prepare_eval_features,
    prepare_train_features,
    require_fast_tokenizer,
    tokenize_windows,
)
from kotae.reader_training.testing import tiny_tokenizer

# "w0 w1 ... w9": token wK covers characters [3K, 3K + 2)
CONTEXT = " ".join(f"w{i}" for i in range(10))


def example(text: str | None, qid: str = "x") -> QAExample:
    answers = () if text is None else (Answer(text, CONTEXT.index(text)),)
    return QAExample(id=qid, question="q", context=CONTEXT, answers=answers)


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return tiny_tokenizer([CONTEXT, "q"])


@pytest.fixture(scope="module")
def tokenizer_cls_last():  # type: ignore[no-untyped-def]
    return tiny_tokenizer([CONTEXT, "q"], cls_at_end=True)


def test_windows_and_offsets(tokenizer) -> None:  # type: ignore[no-untyped-def]
    # [CLS] q [SEP] + 5 context tokens + [SEP] = 9; stride 2 -> w0-w4, w3-w7, w6-w9
    windows = tokenize_windows(tokenizer, ["q"], [CONTEXT], max_length=9, stride=2)
    assert [w.offsets[:, 0].tolist() for w in windows] == [
        [-1, -1, -1, 0, 3, 6, 9, 12, -1],
        [-1, -1, -1, 9, 12, 15, 18, 21, -1],
        [-1, -1, -1, 18, 21, 24, 27, -1],
    ]
    assert all(w.example_index == 0 and w.cls_index == 0 for w in windows)
    assert windows[0].token_type_ids == [0, 0, 0, 1, 1, 1, 1, 1, 1]


def test_answer_at_window_edge(tokenizer) -> None:  # type: ignore[no-untyped-def]
    features = prepare_train_features(tokenizer, [example("w4")], max_length=9, stride=2)
    # last context token of window 0, second of window 1, absent from window 2
    assert features.columns["start_positions"] == [7, 4, 0]
    assert features.columns["end_positions"] == [7, 4, 0]
    assert features.stats.positive_windows == 2
    assert features.stats.negative_windows_kept == 1
    first = features.columns["input_ids"][0]
    assert tokenizer.convert_ids_to_tokens(first[7]) == "w4"


def test_answer_split_across_windows(tokenizer) -> None:  # type: ignore[no-untyped-def]
    # "w4 w5": window 0 holds only w4 -> CLS; window 1 holds both -> (4, 5); window 2 neither -> CLS
    features = prepare_train_features(tokenizer, [example("w4 w5")], max_length=9, stride=2)
    assert features.columns["start_positions"] == [0, 4, 0]
    assert features.columns["end_positions"] == [0, 5, 0]


def test_cls_not_at_index_zero(tokenizer_cls_last) -> None:  # type: ignore[no-untyped-def]
    features = prepare_train_features(tokenizer_cls_last, [example("w1")], max_length=9, stride=2)
    cls_id = tokenizer_cls_last.cls_token_id
    starts = features.columns["start_positions"]
    assert starts == [3, 8, 7]  # answer in window 0; CLS is the last token of windows 1 and 2
    for ids, start in zip(features.columns["input_ids"][1:], starts[1:], strict=True):
        assert ids[start] == cls_id
    assert features.columns["end_positions"] == [3, 8, 7]


def test_unanswerable_points_at_cls_and_negative_ratio(tokenizer) -> None:  # type: ignore[no-untyped-def]
    unanswerable = prepare_train_features(tokenizer, [example(None)], max_length=9, stride=2)
    assert unanswerable.columns["start_positions"] == [0, 0, 0]
    assert unanswerable.stats.unanswerable_windows == 3
    # ratio 0 drops the windows of answerable questions that lack the answer, never unanswerable ones
    mixed = prepare_train_features(
        tokenizer, [example("w1"), example(None, "y")], max_length=9, stride=2, negative_window_ratio=0.0
    )
    assert mixed.columns["start_positions"] == [4, 0, 0, 0]
    assert mixed.stats.negative_windows_dropped == 2
    assert mixed.columns["length"] == [9, 9, 9, 8]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (1, 4, (1, 2)),  # starts inside token 1, ends inside token 2
        (0, 3, (1, 1)),  # exactly token 1
        (3, 8, (2, 3)),
        (4, 5, (2, 2)),  # a character inside one token (Japanese sub-token answer)
        (8, 11, (4, 4)),  # starts in a whitespace gap: the first token after it
        (7, 9, (3, 3)),  # ends in the gap: the last token before it
        (8, 9, (0, 0)),  # only whitespace: no token, CLS
        (0, 12, (0, 0)),  # runs past the window: CLS
    ],
)
def test_label_window_on_characters(start: int, end: int, expected: tuple[int, int]) -> None:
    # tokens: [CLS] [0,3) [3,5) [5,8) (gap) [9,11) [SEP]; CLS at 0
    offsets = np.array([[-1, -1], [0, 3], [3, 5], [5, 8], [9, 11], [-1, -1]])
    assert label_window(offsets, 0, start, end) == expected


def test_japanese_labels_on_characters() -> None:
    context = "奈良は八世紀に日本の首都であった。"
    tokenizer = tiny_tokenizer([context, "首都はどこ？"])
    item = QAExample("j", "首都はどこ？", context, (Answer("奈良", 0),))
    features = prepare_train_features(tokenizer, [item], max_length=64, stride=16)
    start, end = features.columns["start_positions"][0], features.columns["end_positions"][0]
    tokens = tokenizer.convert_ids_to_tokens(features.columns["input_ids"][0][start : end + 1])
    assert "".join(tokens) == "奈良"


def test_long_question_is_truncated(tokenizer) -> None:  # type: ignore[no-untyped-def]
    long_question = " ".join(["q"] * 50)
    item = QAExample("l", long_question, CONTEXT, (Answer("w9", 27),))
    features = prepare_train_features(tokenizer, [item], max_length=16, stride=2, max_question_tokens=4)
    assert features.stats.truncated_questions == 1
    assert 1 in features.columns["start_positions"] or max(features.columns["start_positions"]) > 0


def test_eval_features_index_across_chunks(tokenizer) -> None:  # type: ignore[no-untyped-def]
    items = [example("w1", f"q{i}") for i in range(5)]
    windows = prepare_eval_features(tokenizer, items, max_length=9, stride=2, chunk_size=2)
    assert [w.example_index for w in windows] == [i for i in range(5) for _ in range(3)]


def test_slow_tokenizer_is_refused_by_name() -> None:
    with pytest.raises(KotaeError, match="my/slow-model"):
        require_fast_tokenizer(SimpleNamespace(is_fast=False), "my/slow-model")


def test_bare_prefix_token_sharing_offsets_loses_to_the_character() -> None:
    # sentencepiece gives "▁" and "手" the same offsets (0, 1): the label goes to "手"
    offsets = np.array([[-1, -1], [0, 1], [0, 1], [1, 2], [2, 3], [-1, -1]])
    assert label_window(offsets, 0, 0, 3) == (2, 4)
