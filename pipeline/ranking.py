"""Ranking answers across passages: the reader's span score combined with the retriever's evidence.

Pure functions over numpy arrays, no model. A span found in passage ``p`` scores

    S = (1 - w) * S_reader + w * S_retriever[p]

(BERTserini's linear interpolation, Yang et al. 2019, with ``w = 1 - mu``). ``S_reader`` is the
decoder's span score (by default its margin over its window's no-answer score, see
:mod:`kotae.reader_training.decode`). ``S_retriever`` is one number per passage, from the order the
retriever (or the fusion of retrievers) handed the passages over:

- ``rank``: ``-log(rank)``, 0 for the first passage, -log 10 = -2.3 for the tenth; it means the same
  for dense, BM25 and fused retrieval.
- ``score``: the passage's own retrieval score (``Document.score``: the reciprocal-rank-fusion score,
  about 0-1, for hybrid retrieval; cosine for dense; raw BM25 for bm25), 0 where a passage has none.

``w = 0`` is the reader alone (kotae's ranking before issue 20). The weight that pays is measured on
the shared dev sets by ``bench/rank_interpolation.py`` and written into ``configs/pipeline/*.yaml``.

Example::

    prior = retriever_evidence([0.9, 0.5, 0.4], "rank")       # [0, -0.69, -1.10]
    combined_scores([3.0, 2.5], [1, 0], prior, weight=0.5)      # [1.15, 1.25]: passage 0's span wins
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Evidence = Literal["rank", "score"]
EVIDENCE: tuple[str, ...] = ("rank", "score")


def retriever_evidence(passage_scores: Sequence[float | None], evidence: Evidence = "rank") -> np.ndarray:
    """One retriever score per passage, passages in retrieval order (best first).

    ``rank`` gives ``-log(rank)`` (rank 1-based); ``score`` gives the passages' retrieval scores,
    0.0 where a passage has none (``None``).
    """
    count = len(passage_scores)
    if evidence == "rank":
        return -np.log(np.arange(1, count + 1, dtype=np.float64))
    if evidence == "score":
        return np.array([0.0 if s is None else float(s) for s in passage_scores], dtype=np.float64)
    raise ValueError(f"evidence must be one of {', '.join(EVIDENCE)}, but got {evidence!r}")


def combined_scores(
    reader_scores: Sequence[float] | np.ndarray,
    passage_index: Sequence[int] | np.ndarray,
    passage_evidence: Sequence[float] | np.ndarray,
    weight: float,
) -> np.ndarray:
    """``(1 - weight) * reader_scores + weight * passage_evidence[passage_index]``, one per span.

    ``reader_scores[i]`` is span ``i``'s reader score and ``passage_index[i]`` the passage it was read
    in; ``weight`` (0-1) is the retriever's share.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be between 0 and 1, but got {weight}")
    reader = np.asarray(reader_scores, dtype=np.float64)
    evidence = np.asarray(passage_evidence, dtype=np.float64)
    index = np.asarray(passage_index, dtype=np.int64)
    if reader.shape != index.shape:
        raise ValueError(f"{reader.size} reader scores but {index.size} passage indexes")
    if reader.size == 0:
        return reader
    return (1.0 - weight) * reader + weight * evidence[index]


def rank_order(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Indexes of ``scores``, best first; ties keep their given order (a stable sort)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def unread_cannot_win(
    best: float,
    passage_evidence: Sequence[float] | np.ndarray,
    read: int,
    weight: float,
    max_reader_score: float,
) -> bool:
    """Whether no span of the passages not yet read (``passage_evidence[read:]``) can reach ``best``, the
    best combined score so far, if no reader score exceeds ``max_reader_score``: the reader may then stop.

    Example: with ``w = 0.75`` and rank evidence, after three passages with a best score of 0, a span
    of the fourth passage (evidence ``-log 4``) needs a reader margin of ``0.75 * log 4 / 0.25 = 4.16``::

        prior = retriever_evidence([None] * 10)
        unread_cannot_win(0.0, prior, 3, 0.75, 4.0)   # True: no margin above 4 can reach 0
        unread_cannot_win(0.0, prior, 3, 0.75, 10.0)  # False: a margin of 10 could
        unread_cannot_win(2.0, prior, 3, 0.75, 10.0)  # True: 0.25 * 10 - 0.75 * log 4 = 1.46 < 2
    """
    evidence = np.asarray(passage_evidence, dtype=np.float64)
    if read >= evidence.size:
        return True
    return best >= (1.0 - weight) * max_reader_score + weight * float(evidence[read:].max())
