"""Split a document into passages of at most N tokens, on sentence boundaries, with exact offsets.

Pure functions, no I/O. Tokens are counted by a function passed in (the embedder tokenizer's own
count, so a passage never overflows the model), which keeps this module model-free and testable.

- Sentences end at Japanese 。！？ (plus closing brackets), at English ``.!?`` followed by space, and
  at line breaks.
- Sentences are packed greedily into passages of at most ``max_tokens``; consecutive passages
  share up to ``overlap_tokens`` worth of whole sentences.
- A passage is never cut inside a sentence unless that one sentence alone is too long; then the
  sentence is cut into windows, preferring a whitespace boundary.
- A form feed (``\\f``, the page break of PDF text) is a hard boundary: no passage, overlap
  included, spans one, so each passage lies on one page.
- Every passage keeps ``start``/``end`` character offsets with ``text[start:end] == passage.text``.

Usage::

    passages = split_text("東京は日本の首都です。富士山は高い。", count_tokens=len, max_tokens=12)
    assert passages[0].text == "東京は日本の首都です。"
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

TokenCounter = Callable[[str], int]

# A sentence ends after Japanese sentence-final punctuation, or after English .!? that is followed by
# whitespace (or the end of the text); closing brackets and quotes stay with their sentence.
# Line breaks end a sentence too.
_CLOSERS = "」』）)]】〕〉》\"'”’"
_SENTENCE_END = re.compile(
    rf"(?:[。！？｡]+|[.!?]+(?=[\s{re.escape(_CLOSERS)}]|$))[{re.escape(_CLOSERS)}]*|(?=\n)"
)


@dataclass(frozen=True, slots=True)
class Passage:
    """One passage: its text and where it lies in the source text (``source[start:end] == text``)."""

    text: str
    start: int
    end: int
    index: int


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences in ``text``, whitespace trimmed, empty ones dropped."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if end > start:
            spans.append((start, end))
            start = end
    if start < len(text):
        spans.append((start, len(text)))
    trimmed: list[tuple[int, int]] = []
    for begin, finish in spans:
        while begin < finish and text[begin].isspace():
            begin += 1
        while finish > begin and text[finish - 1].isspace():
            finish -= 1
        if finish > begin:
            trimmed.append((begin, finish))
    return trimmed


def _cut_long(
    text: str, start: int, end: int, tokens: int, count: TokenCounter, max_tokens: int
) -> list[tuple[int, int]]:
    """Cut one over-long sentence into windows of at most ``max_tokens`` tokens each."""
    pieces: list[tuple[int, int]] = []
    chars_per_token = max((end - start) / max(tokens, 1), 0.5)
    pos = start
    while pos < end:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            break
        stop = min(end, pos + max(1, int(max_tokens * chars_per_token)))
        n = count(text[pos:stop])
        while n > max_tokens and stop - pos > 1:
            # Shrink in proportion to the overshoot, always by at least one character.
            shrink = max(1, int((stop - pos) * (1 - 0.95 * max_tokens / n)))
            stop = max(pos + 1, stop - shrink)
            n = count(text[pos:stop])
        if stop < end:
            # Prefer to cut at whitespace in the second half of the window.
            space = max(text.rfind(" ", pos, stop), text.rfind("\t", pos, stop))
            if space > pos + (stop - pos) // 2:
                stop = space
        finish = stop
        while finish > pos and text[finish - 1].isspace():
            finish -= 1
        pieces.append((pos, finish if finish > pos else stop))
        pos = stop
    return pieces


def _sections(text: str, units: list[tuple[int, int]]) -> list[int]:
    """For each unit, how many form feeds (page breaks) come before it: passages never span one."""
    sections: list[int] = []
    count, position = 0, 0
    for start, _ in units:
        count += text.count("\f", position, start)
        position = start
        sections.append(count)
    return sections


def split_text(
    text: str, count_tokens: TokenCounter, max_tokens: int = 200, overlap_tokens: int = 0
) -> list[Passage]:
    """Split ``text`` into passages of at most ``max_tokens`` tokens, overlapping by whole sentences.

    ``count_tokens`` measures a piece of text (without special tokens). ``overlap_tokens`` is the most
    tokens of trailing sentences of one passage repeated at the start of the next.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, but got {max_tokens}")
    if overlap_tokens < 0 or overlap_tokens >= max_tokens:
        raise ValueError(f"overlap_tokens must be in [0, max_tokens), but got {overlap_tokens}")

    units: list[tuple[int, int]] = []
    counts: list[int] = []
    for start, end in sentence_spans(text):
        n = count_tokens(text[start:end])
        if n <= max_tokens:
            units.append((start, end))
            counts.append(n)
        else:
            for piece in _cut_long(text, start, end, n, count_tokens, max_tokens):
                units.append(piece)
                counts.append(count_tokens(text[piece[0] : piece[1]]))

    section = _sections(text, units)
    passages: list[Passage] = []
    i = 0
    while i < len(units):
        j = i
        total = counts[i]
        while j + 1 < len(units) and section[j + 1] == section[i] and total + counts[j + 1] <= max_tokens:
            j += 1
            total += counts[j]
        # Per-sentence counts are not always additive (subword merges at joins); check the whole.
        while j > i and count_tokens(text[units[i][0] : units[j][1]]) > max_tokens:
            j -= 1
        start, end = units[i][0], units[j][1]
        passages.append(Passage(text=text[start:end], start=start, end=end, index=len(passages)))
        if j + 1 >= len(units):
            break
        # Next passage starts with the trailing sentences worth at most overlap_tokens, but always
        # moves forward by at least one sentence.
        k = j + 1
        back = 0
        while k - 1 > i and section[k - 1] == section[j + 1] and back + counts[k - 1] <= overlap_tokens:
            k -= 1
            back += counts[k]
        i = k
    return passages
