"""kotae's indexing: a corpus on disk becomes passages, vectors and a searchable store, incrementally.

For: ``kotae index`` and anything that builds or reads an index. It knows nothing of questions or
readers (the pipeline above it does); it uses only the core (:mod:`kotae.models`, errors).

- ``readers.py``: files and folders to source documents (text, Markdown, HTML, PDF, DOCX, JSONL,
  SQuAD JSON), never raising.
- ``split.py``: documents to passages of at most N tokens on sentence boundaries, with offsets.
- ``settings.py``: the ``embedder`` and ``index`` sections of a pipeline YAML.
- ``embedder.py``: the sentence-transformers passage embedder; ``query_embedder.py``: the question
  embedder without sentence-transformers, for plain Transformer + mean-pooling folders (a Haystack
  component); ``compute.py``: split and embed,
  the one function every engine runs; ``engine.py`` / ``ray_engine.py``: where it runs.
- ``job.py``: :func:`run_index`, the incremental job (plan what changed, compute, commit).
- ``store.py``: :class:`KotaeDocumentStore` (SQLite + FAISS), with ``faiss_index.py`` (FAISS
  indexes from a factory string) and ``vector_file.py`` (the checksummed vector file, atomic
  writes); ``retriever.py`` and ``bm25.py``: the dense and BM25 retrievers over it, Haystack
  components (also importable from ``haystack_integrations.document_stores.kotae`` and
  ``haystack_integrations.components.retrievers.kotae``; the old names ``FaissDocumentStore``,
  ``FaissEmbeddingRetriever`` and ``BM25Retriever`` remain in their modules).
- ``milvus_store.py``: :class:`KotaeMilvusDocumentStore`, the passages in a Milvus collection
  (``index.store: milvus``) with the same manifest, generation and crash-safe commits;
  ``stores.py``: which store an index lives in (:func:`open_store`); ``store_protocol.py``: the part
  of Haystack's document-store protocol both stores share, on top of one commit at a time.
- ``testing.py``: test helpers: a tiny sentence-transformers model built offline, a fake embedder
  and a minimal PDF; ``milvus_testing.py``: a Milvus Lite server for tests.

Public names (imported on first use)::

    from kotae.indexing import KotaeDocumentStore, KotaeEmbeddingRetriever, KotaeBM25Retriever, run_index
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kotae.lazy import lazy_exports

if TYPE_CHECKING:
    from kotae.indexing.bm25 import KotaeBM25Retriever
    from kotae.indexing.job import IndexSummary, run_index
    from kotae.indexing.readers import read_corpus
    from kotae.indexing.retriever import KotaeEmbeddingRetriever
    from kotae.indexing.settings import EmbedderConfig, IndexConfig
    from kotae.indexing.split import split_text
    from kotae.indexing.store import KotaeDocumentStore

_EXPORTS = {
    "EmbedderConfig": "kotae.indexing.settings",
    "IndexConfig": "kotae.indexing.settings",
    "IndexSummary": "kotae.indexing.job",
    "KotaeBM25Retriever": "kotae.indexing.bm25",
    "KotaeDocumentStore": "kotae.indexing.store",
    "KotaeEmbeddingRetriever": "kotae.indexing.retriever",
    "read_corpus": "kotae.indexing.readers",
    "run_index": "kotae.indexing.job",
    "split_text": "kotae.indexing.split",
}
__all__ = [
    "EmbedderConfig",
    "IndexConfig",
    "IndexSummary",
    "KotaeBM25Retriever",
    "KotaeDocumentStore",
    "KotaeEmbeddingRetriever",
    "read_corpus",
    "run_index",
    "split_text",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
