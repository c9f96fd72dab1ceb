"""From start/end logits to ranked answer spans: kotae's one decoder, shared by evaluation and the pipeline.

Pure functions over numpy arrays, no model. For every window: take the ``n_best`` highest start
and end logits among context tokens, pair them with ``end >= start`` and at most
``max_answer_length`` tokens, map the tokens to characters of the original context through the
window's offsets, and score each span by the raw sum ``start_logit + end_logit`` (or by its margin
over its window's null score, below). Spans from all windows (of one question, or of many passages
for the pipeline) are merged, the same character span keeping its best score, and ranked.

The null ("no answer") score is ``start_logit + end_logit`` at the CLS token, the minimum over
windows (every window must agree there is no answer), as in the SQuAD v2 reference code;
:func:`choose_answer` returns ``None`` when it beats the best span by more than a threshold.

With ``relative_to_null=True`` a span scores ``start_logit + end_logit`` minus its own window's CLS
score, and the null score is 0. kotae trains readers with answer-less windows labelled at CLS, so
this margin says how sure the model is that *this* window holds the answer; raw sums of different
passages are on different scales (a passage full of plausible names has high logits everywhere), so
the pipeline, which ranks spans from many retrieved passages, ranks by the margin. Within one window
both orders are the same.

Example::

    windows = [WindowLogits(start, end, offsets, cls_index=0, context_index=0)]
    decoded = decode(windows, [context], n_best=20, max_answer_length=30)
    best = decoded.answers[0]   # Span(text=..., start=..., end=..., score=...)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

OUTSIDE = -1

EdgeRefine = Callable[[str, int, int, tuple[int, int], tuple[int, int]], tuple[int, int]]
"""``refine(context, start, end, start_token, end_token) -> (start, end)``: moves a span's edges inside
its first and last token's character ranges (:class:`kotae.reader_training.edges.EdgeRefiner`)."""


@dataclass(frozen=True)
class WindowLogits:
    """The model output for one window and where its tokens sit in which context."""

    start_logits: np.ndarray  # (length,)
    end_logits: np.ndarray  # (length,)
    offsets: np.ndarray  # (length, 2) character offsets, OUTSIDE (-1) for non-context tokens
    cls_index: int = 0
    context_index: int = 0


@dataclass(frozen=True)
class Span:
    """One candidate answer: text, character offsets into its context, and its ranking score."""

    text: str
    start: int
    end: int
    score: float
    start_logit: float
    end_logit: float
    context_index: int = 0


@dataclass(frozen=True)
class Decoded:
    """Ranked candidate spans (best first) and the null-answer score (None without CLS logits)."""

    answers: list[Span]
    null_score: float | None


def window_candidates(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> list[tuple[int, int, float, float]]:
    """Valid ``(start_token, end_token, start_logit, end_logit)`` pairs from one window's top logits."""
    length = min(len(start_logits), len(end_logits), len(offsets))
    offsets = offsets[:length]
    context = np.flatnonzero((offsets[:, 0] != OUTSIDE) & (offsets[:, 1] != OUTSIDE))
    if context.size == 0:
        return []
    starts = np.asarray(start_logits[:length], dtype=np.float64)
    ends = np.asarray(end_logits[:length], dtype=np.float64)
    top_starts = context[np.argsort(-starts[context], kind="stable")[:n_best]]
    top_ends = context[np.argsort(-ends[context], kind="stable")[:n_best]]
    grid_s, grid_e = np.meshgrid(top_starts, top_ends, indexing="ij")
    s, e = grid_s.ravel(), grid_e.ravel()
    ok = (e >= s) & (e - s + 1 <= max_answer_length) & (offsets[e, 1] > offsets[s, 0])
    return [(int(a), int(b), float(starts[a]), float(ends[b])) for a, b in zip(s[ok], e[ok], strict=True)]


def decode(
    windows: Sequence[WindowLogits],
    contexts: Sequence[str],
    n_best: int = 20,
    max_answer_length: int = 30,
    top_k: int | None = None,
    relative_to_null: bool = False,
    refine: EdgeRefine | None = None,
) -> Decoded:
    """Merge the candidates of all ``windows`` into one ranked list of distinct character spans.

    ``contexts[w.context_index]`` is the text window ``w`` reads. ``top_k`` (default ``n_best``)
    bounds the returned list. ``relative_to_null`` scores spans by their margin over their window's
    CLS score (see the module docstring). ``refine`` moves the edges of the ranked spans inside their
    edge tokens (scores unchanged); spans that become the same span keep the best one's place.
    """
    best: dict[tuple[int, int, int], Span] = {}
    edge_tokens: dict[tuple[int, int, int], tuple[tuple[int, int], tuple[int, int]]] = {}
    null_score: float | None = None
    for window in windows:
        context = contexts[window.context_index]
        cls_score = 0.0
        if 0 <= window.cls_index < len(window.start_logits):
            cls_score = float(window.start_logits[window.cls_index]) + float(
                window.end_logits[window.cls_index]
            )
            window_null = 0.0 if relative_to_null else cls_score
            null_score = window_null if null_score is None else min(null_score, window_null)
        offset = cls_score if relative_to_null else 0.0
        for start_token, end_token, start_logit, end_logit in window_candidates(
            window.start_logits, window.end_logits, window.offsets, n_best, max_answer_length
        ):
            char_start, char_end = trim_span(
                context, int(window.offsets[start_token, 0]), int(window.offsets[end_token, 1])
            )
            if char_start >= char_end:
                continue
            key = (window.context_index, char_start, char_end)
            score = start_logit + end_logit - offset
            if key not in best or best[key].score < score:
                edge_tokens[key] = (
                    (int(window.offsets[start_token, 0]), int(window.offsets[start_token, 1])),
                    (int(window.offsets[end_token, 0]), int(window.offsets[end_token, 1])),
                )
                best[key] = Span(
                    text=context[char_start:char_end],
                    start=char_start,
                    end=char_end,
                    score=score,
                    start_logit=start_logit,
                    end_logit=end_logit,
                    context_index=window.context_index,
                )
    ranked = sorted(best.values(), key=lambda span: (-span.score, span.context_index, span.start, span.end))
    limit = top_k if top_k is not None else n_best
    if refine is not None:
        ranked = refined(ranked, contexts, edge_tokens, refine, limit)
    return Decoded(ranked[:limit], null_score)


def refined(
    ranked: Sequence[Span],
    contexts: Sequence[str],
    edge_tokens: dict[tuple[int, int, int], tuple[tuple[int, int], tuple[int, int]]],
    refine: EdgeRefine,
    limit: int,
) -> list[Span]:
    """The first ``limit`` distinct spans of ``ranked`` after ``refine`` moved their edges (refining
    in rank order is what refining every candidate and then merging would give, for less work)."""
    seen: set[tuple[int, int, int]] = set()
    kept: list[Span] = []
    for span in ranked:
        context = contexts[span.context_index]
        start_token, end_token = edge_tokens[(span.context_index, span.start, span.end)]
        start, end = refine(context, span.start, span.end, start_token, end_token)
        key = (span.context_index, start, end)
        if key in seen:
            continue
        seen.add(key)
        kept.append(
            span
            if (start, end) == (span.start, span.end)
            else replace(span, text=context[start:end], start=start, end=end)
        )
        if len(kept) == limit:
            break
    return kept


def trim_span(context: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` without surrounding whitespace: SentencePiece's word-initial pieces (``▁John``)
    have offsets that cover the space before the word."""
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    return start, end


def choose_answer(decoded: Decoded, allow_null: bool = False, null_threshold: float = 0.0) -> Span | None:
    """The best span, or None (no answer) when there is none or, with ``allow_null``, the null score
    exceeds the best span's score by more than ``null_threshold``."""
    if not decoded.answers:
        return None
    best = decoded.answers[0]
    if allow_null and decoded.null_score is not None and decoded.null_score - best.score > null_threshold:
        return None
    return best


def softmax(scores: Sequence[float]) -> np.ndarray:
    """Probabilities from raw scores (stable); handy for showing confidence next to ranked spans."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return values
    exp = np.exp(values - values.max())
    return exp / exp.sum()
