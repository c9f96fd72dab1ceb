"""Where passages and vectors are computed: in this process (``local``) or on a Ray cluster (``ray``).

The indexing job (:mod:`indexing.job`) reads the corpus, decides what changed and commits to the
store; an engine only turns the texts of the changed documents into passages and vectors. Both
engines run the same function, :func:`split_and_embed`, so they build the same store.

An engine yields ``(position, passages, vectors)`` for every document it was given, in any order;
``position`` is the document's index in the list it was given. Usage::

    engine = LocalEngine(embedder, group_documents=256)
    for position, passages, vectors in engine.run(documents, SplitSettings(200, 32, batch_size=32)):
        ...

The Ray engine lives in :mod:`indexing.ray_engine` (Ray is an optional extra).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from indexing.readers import SourceDocument
from indexing.split import Passage, split_text

if TYPE_CHECKING:
    from indexing.job import PassageEmbedder
    from pipeline.config import PipelineConfig

Computed = tuple[int, list[Passage], np.ndarray]


@dataclass(frozen=True)
class SplitSettings:
    """Passage length and overlap in tokens (already within the embedder's limit), embedding batch size."""

    max_tokens: int
    overlap_tokens: int
    batch_size: int = 32


class PassageEngine(Protocol):
    """Computes passages and their vectors for a list of documents (the driver's reading of them)."""

    def run(self, documents: Sequence[SourceDocument], settings: SplitSettings) -> Iterator[Computed]: ...


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


class LocalEngine:
    """In-process: texts are handled in groups of ``group_documents`` (the job's commit size), so the
    length sort spans a whole commit and at most one group's vectors are held at a time."""

    def __init__(self, embedder: PassageEmbedder, group_documents: int = 256) -> None:
        if group_documents < 1:
            raise ValueError(f"group_documents must be at least 1, but got {group_documents}")
        self.embedder = embedder
        self.group_documents = group_documents

    def run(self, documents: Sequence[SourceDocument], settings: SplitSettings) -> Iterator[Computed]:
        for offset in range(0, len(documents), self.group_documents):
            group = [document.text for document in documents[offset : offset + self.group_documents]]
            for position, passages, vectors in split_and_embed(self.embedder, group, settings):
                yield offset + position, passages, vectors


def make_engine(
    config: PipelineConfig,
    embedder: PassageEmbedder,
    ray_address: str | None = None,
    ray_input: str | None = None,
) -> PassageEngine:
    """The engine named by ``config.index.engine``; ``ray_address`` overrides ``index.ray_address``;
    ``ray_input`` (default ``index.ray_input``) is how documents reach Ray's workers (``data`` or
    ``paths``, see :mod:`indexing.ray_engine`)."""
    settings = config.index
    if settings.engine == "local":
        return LocalEngine(embedder, settings.commit_documents)
    from indexing.ray_engine import RayEngine

    return RayEngine(
        embedder,
        address=ray_address or settings.ray_address,
        workers=settings.ray_workers,
        batch_documents=settings.ray_batch_size,
        cpus_per_worker=settings.ray_cpus_per_worker,
        gpus_per_worker=settings.ray_gpus_per_worker,
        input=ray_input or settings.ray_input,
        max_document_chars=settings.max_document_chars,
    )
