"""The passage splitter: sentence boundaries, token budget, overlap, exact offsets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kotae.indexing.bm25 import bigram_tokenize
from kotae.indexing.split import sentence_spans, split_text


def chars(text: str) -> int:
    return len(text)


def words(text: str) -> int:
    return len(text.split())


def test_japanese_sentences_end_at_kuten_and_bangs() -> None:
    text = "東京は日本の首都です。富士山は高い！本当ですか？「はい。」と答えた。"
    pieces = [text[s:e] for s, e in sentence_spans(text)]
    assert pieces == ["東京は日本の首都です。", "富士山は高い！", "本当ですか？", "「はい。」", "と答えた。"]


def test_english_sentences_and_paragraphs() -> None:
    text = "Tokyo is big. It has 3.5 million cars! Really?\n\nNew paragraph without stop\nnext line"
    pieces = [text[s:e] for s, e in sentence_spans(text)]
    assert pieces == [
        "Tokyo is big.",
        "It has 3.5 million cars!",
        "Really?",
        "New paragraph without stop",
        "next line",
    ]


def test_packs_whole_sentences_up_to_the_budget() -> None:
    text = "あいう。えおか。きくけ。こさし。"
    passages = split_text(text, chars, max_tokens=8)
    assert [p.text for p in passages] == ["あいう。えおか。", "きくけ。こさし。"]
    assert [(p.start, p.end, p.index) for p in passages] == [(0, 8, 0), (8, 16, 1)]


def test_overlap_repeats_trailing_sentences() -> None:
    text = "aa. bb. cc. dd. ee."
    passages = split_text(text, words, max_tokens=3, overlap_tokens=1)
    assert [p.text for p in passages] == ["aa. bb. cc.", "cc. dd. ee."]


def test_overlap_always_moves_forward() -> None:
    text = "one two three. four five six. seven eight nine."
    passages = split_text(text, words, max_tokens=3, overlap_tokens=2)
    assert [p.text for p in passages] == ["one two three.", "four five six.", "seven eight nine."]


def test_overlong_sentence_is_cut_at_spaces_within_budget() -> None:
    text = " ".join(f"w{i}" for i in range(50)) + "."
    passages = split_text(text, words, max_tokens=7)
    assert all(words(p.text) <= 7 for p in passages)
    assert " ".join(p.text for p in passages) == text
    assert all(text[p.start : p.end] == p.text for p in passages)


def test_overlong_japanese_sentence_without_spaces() -> None:
    text = "あ" * 1000
    passages = split_text(text, chars, max_tokens=64)
    assert all(len(p.text) <= 64 for p in passages)
    assert "".join(p.text for p in passages) == text


def test_empty_and_whitespace_text_give_no_passages() -> None:
    assert split_text("", chars, 10) == []
    assert split_text(" \n\t\n ", chars, 10) == []


def test_non_additive_counter_is_respected() -> None:
    # Joining sentences costs one extra token each: the whole passage must still fit.
    def joined(text: str) -> int:
        return len(sentence_spans(text)) * 2 + len(text) // 10

    text = "。".join("文" * 5 for _ in range(20)) + "。"
    for passage in split_text(text, joined, max_tokens=6):
        assert joined(passage.text) <= 6


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (5, 5), (5, -1)])
def test_bad_budgets_are_refused(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        split_text("text", chars, max_tokens, overlap)


_ALPHABET = st.sampled_from(list("あいう漢字カナabc xyz。！？.!?\n 　」』\t"))


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=_ALPHABET, max_size=400),
    max_tokens=st.integers(1, 40),
    overlap=st.integers(0, 39),
    counter=st.sampled_from([chars, words, lambda t: len(bigram_tokenize(t))]),
)
def test_offsets_map_back_and_budget_holds(text: str, max_tokens: int, overlap: int, counter) -> None:
    overlap = min(overlap, max_tokens - 1)
    passages = split_text(text, counter, max_tokens, overlap)
    previous_start = -1
    for i, passage in enumerate(passages):
        assert passage.index == i
        assert text[passage.start : passage.end] == passage.text
        assert passage.text.strip() == passage.text and passage.text
        assert counter(passage.text) <= max_tokens or len(passage.text) == 1
        assert passage.start > previous_start
        previous_start = passage.start
    # Every non-space character is covered by some passage.
    covered = set()
    for passage in passages:
        covered.update(range(passage.start, passage.end))
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())
