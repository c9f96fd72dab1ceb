"""kotae's retrievers as a Haystack integration: dense (cosine over a kotae store) and BM25 (Japanese-aware).

Their serialised ``type`` is this module, which Haystack's deserializer trusts. The implementation
lives in :mod:`kotae.indexing.retriever` and :mod:`kotae.indexing.bm25`.
"""

from kotae.indexing.bm25 import KotaeBM25Retriever
from kotae.indexing.retriever import KotaeEmbeddingRetriever

__all__ = ["KotaeBM25Retriever", "KotaeEmbeddingRetriever"]
