"""The compute step of indexing: texts to passages and their vectors, the one function every engine runs.

:func:`split_and_embed` splits each text with the embedder's own token count, embeds all passages
together in length-sorted batches and yields each text's passages and vectors as soon as they are
done. The local engine runs it in this process, the Ray engine on its actors
(:mod:`kotae.indexing.engine`), so both build the same store. Usage::

    for position, passages, vectors in split_and_embed(embedder, texts, SplitSettings(200, 32)):
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kotae.indexing.split import Passage, split_text

__all__ = ["Computed", "PassageEmbedder", "SplitSettings", "split_and_embed"]


class PassageEmbedder(Protocol):
    """What the job needs from an embedder: an identity, a token count, a length limit and vectors."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def max_tokens(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...


Computed = tuple[int, list[Passage], np.ndarray]


@dataclass(frozen=True)
class SplitSettings:
    """Passage length and overlap in tokens (already within the embedder's limit), embedding batch size."""

    max_tokens: int
    overlap_tokens: int
    batch_size: int = 32


def split_and_embed(
    embedder: PassageEmbedder,
    texts: list[str],
    settings: SplitSettings,
    on_batch: Callable[[int], None] = lambda n: None,
) -> Iterator[Computed]:
    """Split every text, embed all passages together in length-sorted batches (longest first), and
    yield each text's passages and vectors as soon as its last passage is embedded."""
    pieces = [
        split_text(text, embedder.count_tokens, settings.max_tokens, settings.overlap_tokens)
        for text in texts
    ]
    owner = [i for i, passages in enumerate(pieces) for _ in passages]
    flat = [passage.text for passages in pieces for passage in passages]
    remaining = [len(passages) for passages in pieces]
    first = np.cumsum([0, *remaining[:-1]]) if pieces else np.zeros(0, dtype=np.int64)
    vectors: np.ndarray | None = None
    for i, passages in enumerate(pieces):
        if not passages:
            yield i, [], np.zeros((0, 0), dtype=np.float32)
    order = sorted(range(len(flat)), key=lambda k: len(flat[k]), reverse=True)
    for start in range(0, len(order), settings.batch_size):
        batch = order[start : start + settings.batch_size]
        embedded = embedder.embed([flat[k] for k in batch])
        if vectors is None:
            vectors = np.zeros((len(flat), embedded.shape[1]), dtype=np.float32)
        vectors[batch] = embedded
        on_batch(len(batch))
        for k in batch:
            i = owner[k]
            remaining[i] -= 1
            if remaining[i] == 0:
                yield i, pieces[i], vectors[first[i] : first[i] + len(pieces[i])]
