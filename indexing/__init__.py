"""kotae's indexing: a corpus on disk becomes passages, vectors and a searchable store, incrementally.

For: ``kotae index`` and anything that builds or reads an index. It knows nothing of questions or
readers (the pipeline above it does); it uses only the core (:mod:`kotae.models`, errors).

- ``readers.py``: files and folders to source documents (text, HTML, JSON(L), SQuAD), never raising.
- ``split.py``: documents to passages of at most N tokens on sentence boundaries, with offsets.
- ``settings.py``: the ``embedder`` and ``index`` sections of a pipeline YAML.
- ``embedder.py``: the sentence-transformers passage embedder; ``compute.py``: split and embed,
  the one function every engine runs; ``engine.py`` / ``ray_engine.py``: where it runs.
- ``job.py``: :func:`run_index`, the incremental job (plan what changed, compute, commit).
- ``store.py``: :class:`FaissDocumentStore` (SQLite + FAISS), with ``faiss_index.py`` (FAISS
  indexes from a factory string) and ``vector_file.py`` (the checksummed vector file, atomic
  writes); ``retriever.py`` and ``bm25.py``: the dense and BM25 retrievers over it, Haystack
  components.
- ``testing.py``: a tiny embedder for tests.

Public names (imported on first use)::

    from kotae.indexing import FaissDocumentStore, FaissEmbeddingRetriever, BM25Retriever, run_index
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kotae.lazy import lazy_exports

if TYPE_CHECKING:
    from kotae.indexing.bm25 import BM25Retriever
    from kotae.indexing.job import IndexSummary, run_index
    from kotae.indexing.readers import read_corpus
    from kotae.indexing.retriever import FaissEmbeddingRetriever
    from kotae.indexing.settings import EmbedderConfig, IndexConfig
    from kotae.indexing.split import split_text
    from kotae.indexing.store import FaissDocumentStore

_EXPORTS = {
    "BM25Retriever": "kotae.indexing.bm25",
    "EmbedderConfig": "kotae.indexing.settings",
    "FaissDocumentStore": "kotae.indexing.store",
    "FaissEmbeddingRetriever": "kotae.indexing.retriever",
    "IndexConfig": "kotae.indexing.settings",
    "IndexSummary": "kotae.indexing.job",
    "read_corpus": "kotae.indexing.readers",
    "run_index": "kotae.indexing.job",
    "split_text": "kotae.indexing.split",
}
__all__ = [
    "BM25Retriever",
    "EmbedderConfig",
    "FaissDocumentStore",
    "FaissEmbeddingRetriever",
    "IndexConfig",
    "IndexSummary",
    "read_corpus",
    "run_index",
    "split_text",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
