"""Question + context to model windows, and answer character spans to token labels.

Each question is paired with its context using ``truncation="only_second"``: a context longer than
``max_length`` becomes several overlapping windows (``stride`` tokens shared between neighbours),
each with an offset mapping back to characters of the original context. Tokens outside the
context (question, special tokens, padding) get the offset ``(-1, -1)``.

Labels are assigned on characters, never on whitespace words, so Japanese and Chinese work: the
answer's first token is the (last) context token covering the answer's first character, its last
token the last context token that starts before the answer's end. A window that does not
fully contain the answer — and every window of an unanswerable question — points both labels at
the CLS token, wherever the tokenizer puts it (found in ``input_ids``, not assumed to be 0).

The tokenizer must be a fast (Rust) tokenizer: only those give offset mappings.

Example::

    windows = tokenize_windows(tokenizer, ["Who?"], ["Alice met Bob."], max_length=64, stride=16)
    label_window(windows[0].offsets, windows[0].cls_index, 10, 13)   # token positions of "Bob"
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kotae.errors import KotaeError
from kotae.reader_training.data import QAExample
from kotae.reader_training.decode import OUTSIDE


@dataclass(frozen=True)
class Window:
    """One model input: a question and a slice of one context."""

    example_index: int
    input_ids: list[int]
    attention_mask: list[int]
    token_type_ids: list[int] | None
    offsets: np.ndarray  # (length, 2) character offsets into the context; OUTSIDE off-context
    cls_index: int

    def model_inputs(self) -> dict[str, list[int]]:
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids
        return inputs


@dataclass
class FeatureStats:
    """What windowing and labelling produced, for the training log and the model card."""

    examples: int = 0
    windows: int = 0
    positive_windows: int = 0
    negative_windows_kept: int = 0
    negative_windows_dropped: int = 0
    unanswerable_windows: int = 0
    truncated_questions: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class TrainFeatures:
    """Columns ready for a ``datasets.Dataset``: model inputs, labels and lengths."""

    columns: dict[str, list[Any]]
    stats: FeatureStats = field(default_factory=FeatureStats)

    def __len__(self) -> int:
        return len(self.columns["input_ids"])


def require_fast_tokenizer(tokenizer: Any, model_name: str) -> None:
    """Raise a one-line error unless ``tokenizer`` is a fast tokenizer (offset mappings needed)."""
    if not getattr(tokenizer, "is_fast", False):
        raise KotaeError(
            f"model {model_name!r} has a slow (Python) tokenizer {type(tokenizer).__name__}; the reader needs "
            "a fast tokenizer for character offsets: add tokenizer.json to the model folder or pick another model"
        )


def cls_position(input_ids: Sequence[int], cls_token_id: int | None) -> int:
    """Index of the CLS token in one window (0 when the tokenizer has none)."""
    if cls_token_id is not None:
        for index, token in enumerate(input_ids):
            if token == cls_token_id:
                return index
    return 0


def truncate_questions(
    tokenizer: Any, questions: Sequence[str], max_question_tokens: int
) -> tuple[list[str], int]:
    """Strip leading whitespace and cut questions longer than ``max_question_tokens`` tokens."""
    stripped = [q.lstrip() for q in questions]
    encoded = tokenizer(stripped, add_special_tokens=False, return_offsets_mapping=True)
    result: list[str] = []
    cut = 0
    for question, offsets in zip(stripped, encoded["offset_mapping"], strict=True):
        if len(offsets) > max_question_tokens:
            result.append(question[: offsets[max_question_tokens - 1][1]])
            cut += 1
        else:
            result.append(question)
    return result, cut


def tokenize_windows(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    max_length: int,
    stride: int,
    max_question_tokens: int = 64,
    stats: FeatureStats | None = None,
) -> list[Window]:
    """Tokenize question/context pairs into overlapping windows with context-only offsets."""
    if not questions:
        return []
    questions, cut = truncate_questions(tokenizer, questions, max_question_tokens)
    if stats is not None:
        stats.truncated_questions += cut
    pad_on_left = getattr(tokenizer, "padding_side", "right") == "left"
    first, second = (contexts, questions) if pad_on_left else (questions, contexts)
    context_sequence = 0 if pad_on_left else 1
    try:
        encoded = tokenizer(
            list(first),
            list(second),
            truncation="only_first" if pad_on_left else "only_second",
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=False,
        )
    except Exception as error:  # tokenizers reports a too-large stride or too-long question here
        raise KotaeError(
            f"cannot window questions with max_length={max_length}, stride={stride} ({error}); "
            "use a smaller stride or max_question_length, or a larger max_length"
        ) from None
    cls_id = getattr(tokenizer, "cls_token_id", None)
    windows: list[Window] = []
    for i, input_ids in enumerate(encoded["input_ids"]):
        sequence_ids = encoded.sequence_ids(i)
        offsets = np.array(encoded["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
        outside = np.array([s != context_sequence for s in sequence_ids], dtype=bool)
        offsets[outside] = OUTSIDE
        token_type_ids = encoded["token_type_ids"][i] if "token_type_ids" in encoded else None
        windows.append(
            Window(
                example_index=int(encoded["overflow_to_sample_mapping"][i]),
                input_ids=list(input_ids),
                attention_mask=list(encoded["attention_mask"][i]),
                token_type_ids=list(token_type_ids) if token_type_ids is not None else None,
                offsets=offsets,
                cls_index=cls_position(input_ids, cls_id),
            )
        )
    return windows


def label_window(offsets: np.ndarray, cls_index: int, start_char: int, end_char: int) -> tuple[int, int]:
    """Token positions of the answer ``[start_char, end_char)`` in one window, or (cls, cls).

    (cls, cls) when the window does not fully contain the answer's characters.
    """
    starts = offsets[:, 0]
    ends = offsets[:, 1]
    inside = np.flatnonzero((starts != OUTSIDE) & (ends > starts))
    if inside.size == 0 or end_char <= start_char:
        return cls_index, cls_index
    if start_char < starts[inside[0]] or end_char > ends[inside[-1]]:
        return cls_index, cls_index
    # The start is the last token covering the first character (so a bare "▁" that shares its
    # offsets with the next token loses to it), or the first token after a whitespace gap.
    covering = inside[(starts[inside] <= start_char) & (ends[inside] > start_char)]
    following = inside[starts[inside] >= start_char]
    end_candidates = inside[starts[inside] < end_char]
    if (covering.size == 0 and following.size == 0) or end_candidates.size == 0:
        return cls_index, cls_index
    start_token = int(covering[-1]) if covering.size else int(following[0])
    end_token = int(end_candidates[-1])
    if end_token < start_token:
        return cls_index, cls_index
    return start_token, end_token


def prepare_train_features(
    tokenizer: Any,
    examples: Sequence[QAExample],
    max_length: int = 384,
    stride: int = 128,
    max_question_tokens: int = 64,
    negative_window_ratio: float = 1.0,
    seed: int = 42,
    chunk_size: int = 1000,
) -> TrainFeatures:
    """Windows with ``start_positions``/``end_positions`` labels (first answer of each question).

    ``negative_window_ratio`` keeps that fraction (seeded) of the windows of answerable questions
    that do not contain the answer; windows of unanswerable questions are always kept, since they
    are what teaches the null answer.
    """
    rng = random.Random(seed)
    stats = FeatureStats(examples=len(examples))
    columns: dict[str, list[Any]] = {
        "input_ids": [],
        "attention_mask": [],
        "start_positions": [],
        "end_positions": [],
        "length": [],
    }
    with_types = False
    for offset in range(0, len(examples), chunk_size):
        chunk = examples[offset : offset + chunk_size]
        windows = tokenize_windows(
            tokenizer,
            [e.question for e in chunk],
            [e.context for e in chunk],
            max_length,
            stride,
            max_question_tokens,
            stats,
        )
        for window in windows:
            example = chunk[window.example_index]
            if example.answers:
                answer = example.answers[0]
                start, end = label_window(window.offsets, window.cls_index, answer.start, answer.end)
                if start == window.cls_index:
                    if rng.random() >= negative_window_ratio:
                        stats.negative_windows_dropped += 1
                        continue
                    stats.negative_windows_kept += 1
                else:
                    stats.positive_windows += 1
            else:
                start = end = window.cls_index
                stats.unanswerable_windows += 1
            columns["input_ids"].append(window.input_ids)
            columns["attention_mask"].append(window.attention_mask)
            if window.token_type_ids is not None:
                with_types = True
                columns.setdefault("token_type_ids", []).append(window.token_type_ids)
            columns["start_positions"].append(start)
            columns["end_positions"].append(end)
            columns["length"].append(len(window.input_ids))
    if with_types and len(columns["token_type_ids"]) != len(columns["input_ids"]):
        raise KotaeError("tokenizer returned token_type_ids for only some windows")
    stats.windows = len(columns["input_ids"])
    return TrainFeatures(columns, stats)


def prepare_eval_features(
    tokenizer: Any,
    examples: Sequence[QAExample],
    max_length: int = 384,
    stride: int = 128,
    max_question_tokens: int = 64,
    chunk_size: int = 1000,
) -> list[Window]:
    """All windows of all examples, ``example_index`` pointing into ``examples``."""
    windows: list[Window] = []
    for offset in range(0, len(examples), chunk_size):
        chunk = examples[offset : offset + chunk_size]
        for window in tokenize_windows(
            tokenizer,
            [e.question for e in chunk],
            [e.context for e in chunk],
            max_length,
            stride,
            max_question_tokens,
        ):
            windows.append(
                Window(
                    example_index=window.example_index + offset,
                    input_ids=window.input_ids,
                    attention_mask=window.attention_mask,
                    token_type_ids=window.token_type_ids,
                    offsets=window.offsets,
                    cls_index=window.cls_index,
                )
            )
    return windows
