"""Where passages and vectors are computed: in this process (``local``) or on a Ray cluster (``ray``).

The indexing job (:mod:`kotae.indexing.job`) reads the corpus, decides what changed and commits to the
store; an engine only turns the texts of the changed documents into passages and vectors. Both
engines run the same function, :func:`kotae.indexing.compute.split_and_embed`, so they build the same store.

An engine yields ``(position, passages, vectors)`` for every document it was given, in any order;
``position`` is the document's index in the list it was given. Usage::

    engine = LocalEngine(embedder, group_documents=256)
    for position, passages, vectors in engine.run(documents, SplitSettings(200, 32, batch_size=32)):
        ...

The Ray engine lives in :mod:`kotae.indexing.ray_engine` (Ray is an optional extra).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from kotae.indexing.compute import Computed, PassageEmbedder, SplitSettings, split_and_embed
from kotae.indexing.readers import SourceDocument
from kotae.indexing.settings import IndexConfig


class PassageEngine(Protocol):
    """Computes passages and their vectors for a list of documents (the driver's reading of them)."""

    def run(self, documents: Sequence[SourceDocument], settings: SplitSettings) -> Iterator[Computed]: ...


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
    config: IndexConfig,
    embedder: PassageEmbedder,
    ray_address: str | None = None,
    ray_input: str | None = None,
) -> PassageEngine:
    """The engine named by ``config.engine`` (the ``index`` section); ``ray_address`` overrides
    ``ray_address``; ``ray_input`` (default ``ray_input``) is how documents reach Ray's workers
    (``data`` or ``paths``, see :mod:`kotae.indexing.ray_engine`)."""
    settings = config
    if settings.engine == "local":
        return LocalEngine(embedder, settings.commit_documents)
    from kotae.indexing.ray_engine import RayEngine

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
