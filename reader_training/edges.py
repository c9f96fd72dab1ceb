"""Exact answer edges inside Japanese tokens: where a span may end (or start) between two morphemes
of one token, and whether the training labels say it should.

The e5 tokenizer (SentencePiece) glues a word to the particle after it: ``1983年に生まれた`` is
``▁1983 | 年に | 生まれた`` and ``9歳の時`` is ``▁9 | 歳の | 時``. A reader that scores tokens can end a
span after ``年に`` or after ``生まれた``, never after ``年``; its training labels, aligned to tokens,
taught it to point at ``年に`` when the answer is ``1983年``. No token-level change can fix that, so
the decoder refines the edges at characters: inside the first and last token of a span it may move
the edge to a morpheme boundary (MeCab through fugashi, unidic-lite, as BM25 uses), and an
:class:`EdgeTable` learnt from the training labels says when.

The table counts, over the gold answers of a training set, how often the labellers cut an edge token
at a morpheme boundary, keyed by what would be cut off: the morphemes between the boundary and the
token's edge (``助詞:に`` for the に of ``年に``; content words by their part of speech only, since
particles and auxiliaries are a small closed class and content words are not). At decode time an
edge moves to the boundary whose key was cut in more than half of at least ``min_support`` training
cases. An edge token with no Japanese character is never cut, so English answers are unchanged.

Everything here is pure given the text, except :func:`morphemes`, which calls MeCab.

Example::

    table = learn_from_examples(training_examples, tokenizer)          # from training labels
    refine = EdgeRefiner(table)
    refine(context, start, end, start_token=(0, 5), end_token=(4, 6))  # -> (start, end) refined
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from kotae.errors import KotaeError
from kotae.japanese import mecab
from kotae.reader_training.data import QAExample, load_examples
from kotae.reader_training.metrics import normalize_japanese, resolve_language
from kotae.reader_weights import SPAN_EDGES_FILE as EDGE_TABLE

MIN_SUPPORT = 20
"""Training cases a cut key needs before the decoder acts on it."""

CLOSED_CLASSES = ("助詞", "助動詞", "補助記号")
"""Parts of speech keyed by their surface form as well (particles, auxiliaries, brackets)."""

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")


@dataclass(frozen=True, slots=True)
class Morpheme:
    start: int
    end: int
    surface: str
    pos: str


@lru_cache(maxsize=256)  # the passages of a few questions; serve reads new ones all day
def morphemes(text: str) -> tuple[Morpheme, ...]:
    """MeCab's morphemes of ``text`` with their character offsets (whitespace lies between them)."""
    found: list[Morpheme] = []
    cursor = 0
    for word in mecab()(text):
        surface = word.surface
        start = text.find(surface, cursor)
        if start < 0:  # MeCab normalised something away; skip rather than misplace offsets
            continue
        cursor = start + len(surface)
        found.append(Morpheme(start, cursor, surface, word.feature.pos1 or ""))
    return tuple(found)


def morpheme_key(morpheme: Morpheme) -> str:
    """``助詞:に`` for closed-class words, the part of speech alone for the rest."""
    if morpheme.pos in CLOSED_CLASSES:
        return f"{morpheme.pos}:{morpheme.surface}"
    return morpheme.pos


def cut_key(pieces: Sequence[Morpheme]) -> str:
    return "|".join(morpheme_key(m) for m in pieces)


def inner_boundaries(words: Sequence[Morpheme], low: int, high: int) -> list[int]:
    """Morpheme boundaries strictly between ``low`` and ``high``."""
    return [m.start for m in words if low < m.start < high]


def end_cut(words: Sequence[Morpheme], boundary: int, token_end: int) -> str:
    """The key of what an end cut at ``boundary`` leaves out: the morphemes in ``[boundary, token_end)``."""
    return cut_key([m for m in words if boundary <= m.start and m.end <= token_end])


def start_cut(words: Sequence[Morpheme], token_start: int, boundary: int) -> str:
    """The key of what a start cut at ``boundary`` leaves out: the morphemes in ``[token_start, boundary)``."""
    return cut_key([m for m in words if token_start <= m.start and m.end <= boundary])


def has_japanese(text: str) -> bool:
    return bool(_JAPANESE.search(text))


@dataclass
class EdgeTable:
    """Per side (``start``/``end``) and cut key: ``[times cut, times the boundary was there]``."""

    end: dict[str, list[int]] = field(default_factory=dict)
    start: dict[str, list[int]] = field(default_factory=dict)
    min_support: int = MIN_SUPPORT

    def should_cut(self, side: str, key: str) -> float:
        """The share of training edges cut at such a boundary, or 0 below ``min_support`` cases."""
        cut, seen = getattr(self, side).get(key, (0, 0))
        return cut / seen if seen >= self.min_support else 0.0

    def moving_keys(self) -> int:
        """How many keys move an edge (cut in more than half of at least ``min_support`` cases)."""
        return sum(
            1 for side in ("start", "end") for key in getattr(self, side) if self.should_cut(side, key) > 0.5
        )

    def to_dict(self) -> dict[str, Any]:
        return {"min_support": self.min_support, "end": self.end, "start": self.start}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EdgeTable:
        return cls(
            end={k: list(v) for k, v in data.get("end", {}).items()},
            start={k: list(v) for k, v in data.get("start", {}).items()},
            min_support=int(data.get("min_support", MIN_SUPPORT)),
        )

    def save(self, folder: Path) -> Path:
        path = folder / EDGE_TABLE
        path.write_text(
            json.dumps(self.to_dict(), ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8"
        )
        return path


def _count(counts: dict[str, list[int]], key: str, cut: bool) -> None:
    entry = counts.setdefault(key, [0, 0])
    entry[0] += int(cut)
    entry[1] += 1


def learn_edge_table(
    examples: Iterable[tuple[str, int, int]],
    token_offsets: Any,
    min_support: int = MIN_SUPPORT,
) -> EdgeTable:
    """Count the cuts of gold answers ``(context, start, end)`` inside their edge tokens.

    ``token_offsets(context)`` gives the reader tokenizer's character offsets of ``context``'s tokens.
    An edge token that holds a morpheme boundary inside the answer contributes one case per boundary:
    cut when the gold edge is that boundary. Gold edges inside a morpheme are skipped (no boundary
    could give them).
    """
    table = EdgeTable(min_support=min_support)
    offsets_of: dict[str, list[tuple[int, int]]] = {}
    for context, start, end in examples:
        if context not in offsets_of:
            offsets_of[context] = [(int(a), int(b)) for a, b in token_offsets(context) if b > a]
        tokens = offsets_of[context]
        words = morphemes(context)
        starts = {m.start for m in words}
        last = next((t for t in tokens if t[0] < end <= t[1]), None)
        if last and end < last[1] and end not in starts:
            last = None
        if last and has_japanese(context[last[0] : last[1]]):
            for boundary in inner_boundaries(words, max(last[0], start), last[1]):
                _count(table.end, end_cut(words, boundary, last[1]), boundary == end)
        first = next((t for t in tokens if t[0] <= start < t[1]), None)
        if first and start > first[0] and start not in starts:
            first = None
        if first and has_japanese(context[first[0] : first[1]]):
            for boundary in inner_boundaries(words, first[0], min(first[1], end)):
                _count(table.start, start_cut(words, first[0], boundary), boundary == start)
    return table


class EdgeRefiner:
    """Moves a span's edges inside its first and last token to the morpheme boundary the table
    prefers; a callable the decoder takes (:func:`kotae.reader_training.decode.decode`'s ``refine``)."""

    def __init__(self, table: EdgeTable) -> None:
        self.table = table

    def __call__(
        self, context: str, start: int, end: int, start_token: tuple[int, int], end_token: tuple[int, int]
    ) -> tuple[int, int]:
        cut_end = has_japanese(context[end_token[0] : end_token[1]])
        cut_start = has_japanese(context[start_token[0] : start_token[1]])
        if not (cut_end or cut_start):
            return start, end
        words = morphemes(context)
        new_end = end
        if cut_end:
            ends = inner_boundaries(words, max(end_token[0], start), end)
            new_end = self._best("end", [(b, end_cut(words, b, end_token[1])) for b in ends], end)
        new_start = start
        if cut_start:
            starts = inner_boundaries(words, start, min(start_token[1], new_end))
            new_start = self._best("start", [(b, start_cut(words, start_token[0], b)) for b in starts], start)
        return new_start, new_end

    def _best(self, side: str, options: list[tuple[int, str]], default: int) -> int:
        best, share = default, 0.5
        for boundary, key in options:
            value = self.table.should_cut(side, key)
            if value > share:
                best, share = boundary, value
        return best


def load_edge_table(folder: Path) -> EdgeTable | None:
    """The folder's :data:`EDGE_TABLE`, or None when the reader has none (it then decodes at tokens)."""
    path = Path(folder) / EDGE_TABLE
    if not path.is_file():
        return None
    try:
        table = EdgeTable.from_dict(json.loads(path.read_text(encoding="utf-8")))
        for side in ("start", "end"):
            for key, counts in getattr(table, side).items():
                if not (
                    isinstance(key, str) and len(counts) == 2 and all(isinstance(n, int) for n in counts)
                ):
                    raise ValueError(f"{side} key {key!r} needs [times cut, times seen], got {counts!r}")
                if not 0 <= counts[0] <= counts[1]:
                    raise ValueError(f"{side} key {key!r} was cut {counts[0]} times of {counts[1]}")
    except (ValueError, TypeError, AttributeError) as error:
        raise KotaeError(
            f"{path} is damaged ({error}); delete it or relearn it (python -m kotae.reader_training.edges)"
        ) from None
    return table


def edge_refiner_from_folder(folder: Path) -> EdgeRefiner | None:
    table = load_edge_table(folder)
    return EdgeRefiner(table) if table is not None else None


# --- classifying misses (bench/span_edges.py, the model card) ---------------------------------------

_COUNTERS = set("年月日時分秒歳才人名回個本枚件円倍度位号代世紀")


def _is_counter(morpheme: Morpheme) -> bool:
    """A counter or unit: a suffix (接尾辞, UniDic's 歳/人/…) or a noun used as a counter (年, 円, …)."""
    return morpheme.pos == "接尾辞" or morpheme.surface in _COUNTERS


_BRACKETS = set("「」『』（）()【】〈〉《》“”\"'’‘［］[]")


def classify_miss(context: str, prediction: tuple[int, int], golds: Sequence[tuple[int, int]]) -> str | None:
    """Why a predicted span is not an exact match of any gold span, or None when it is one.

    Classes, first that applies: ``no answer``; ``different span`` (no overlap with any gold);
    then, against the most overlapping gold, by what differs at the edges: ``trailing particle``
    (extra particles/auxiliaries after the answer), ``leading particle``, ``missing counter or unit``,
    ``extra counter or unit``, ``quotes and brackets``, ``edge inside a word`` (an edge that is no
    morpheme boundary), ``longer span`` / ``shorter span`` (whole extra or missing words), ``shifted span``.
    """
    start, end = prediction
    if start < 0:
        return "no answer"
    predicted = normalize_japanese(context[start:end])
    if any(predicted == normalize_japanese(context[a:b]) for a, b in golds):
        return None
    overlaps = [(min(end, b) - max(start, a), (a, b)) for a, b in golds]
    overlap, (gold_start, gold_end) = max(overlaps)
    if overlap <= 0:
        return "different span"
    words = morphemes(context)
    bounds = {m.start for m in words} | {m.end for m in words}
    parts = {
        "extra_right": context[gold_end:end] if end > gold_end else "",
        "missing_right": context[end:gold_end] if end < gold_end else "",
        "extra_left": context[start:gold_start] if start < gold_start else "",
        "missing_left": context[gold_start:start] if start > gold_start else "",
    }
    changed = {k: v for k, v in parts.items() if normalize_japanese(v)}
    if not changed:
        return (
            "quotes and brackets"
            if any(ch in _BRACKETS for v in parts.values() for ch in v)
            else "punctuation"
        )

    def inside(a: int, b: int) -> list[Morpheme]:
        return [m for m in words if a <= m.start and m.end <= b]

    function_words = set(CLOSED_CLASSES)
    if set(changed) == {"extra_right"} and {end, gold_end} <= bounds:
        extra = inside(gold_end, end)
        if extra and all(m.pos in function_words for m in extra):
            return "trailing particle"
        if extra and all(_is_counter(m) for m in extra):
            return "extra counter or unit"
    if set(changed) == {"extra_left"} and {start, gold_start} <= bounds:
        extra = inside(start, gold_start)
        if extra and all(m.pos in function_words for m in extra):
            return "leading particle"
    if set(changed) == {"missing_right"} and {end, gold_end} <= bounds:
        missing = inside(end, gold_end)
        if missing and all(_is_counter(m) for m in missing):
            return "missing counter or unit"
    if any(ch in _BRACKETS for v in changed.values() for ch in v):
        return "quotes and brackets"
    if start not in bounds or end not in bounds:
        return "edge inside a word"
    grew = set(changed) <= {"extra_right", "extra_left"}
    shrank = set(changed) <= {"missing_right", "missing_left"}
    return "longer span" if grew else "shorter span" if shrank else "shifted span"


def learn_from_examples(
    examples: Iterable[QAExample], tokenizer: Any, min_support: int = MIN_SUPPORT
) -> EdgeTable:
    """The edge table of the first answers of the Japanese questions among ``examples``, with the
    reader tokenizer ``tokenizer``'s token edges."""

    def golds() -> Iterable[tuple[str, int, int]]:
        for example in examples:
            if example.answers and resolve_language("auto", example.question) == "ja":
                answer = example.answers[0]
                yield example.context, answer.start, answer.end

    def token_offsets(context: str) -> list[tuple[int, int]]:
        encoded = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [tuple(pair) for pair in encoded["offset_mapping"]]

    return learn_edge_table(golds(), token_offsets, min_support)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kotae.reader_training.edges FOLDER DATA... [--out DIR]``: learn the edge table from DATA's
    labels with FOLDER's tokenizer and write it into DIR (default FOLDER) as :data:`EDGE_TABLE`."""
    import argparse

    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description="Learn a reader's span-edge table from training labels.")
    parser.add_argument("folder", type=Path, help="reader folder (its tokenizer; the table is written there)")
    parser.add_argument("data", nargs="+", help="SQuAD-format training data (Japanese questions are used)")
    parser.add_argument("--min-support", type=int, default=MIN_SUPPORT)
    parser.add_argument(
        "--out", type=Path, default=None, help="folder to write the table to (default: FOLDER)"
    )
    args = parser.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    examples = [e for source in args.data for e in load_examples(source).examples]
    table = learn_from_examples(examples, tokenizer, args.min_support)
    path = table.save(args.out or args.folder)
    print(
        f"{path}: {len(table.end)} end keys, {len(table.start)} start keys, {table.moving_keys()} that move an edge"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
