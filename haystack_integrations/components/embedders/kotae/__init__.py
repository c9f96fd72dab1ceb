"""kotae's question embedders as a Haystack integration: a kotae model alias or folder, device chosen on load.

Their serialised ``type`` is this module, which Haystack's deserializer trusts.

- :class:`KotaeQueryEmbedder` (:mod:`kotae.indexing.query_embedder`) computes plain Transformer +
  mean-pooling models (multilingual-e5-small, all-MiniLM-L6-v2) without sentence-transformers;
- :class:`KotaeTextEmbedder` (:mod:`kotae.pipeline.text_embedder`) is sentence-transformers' embedder
  for any other model.

Each is imported when first asked for, so loading a pipeline with the first never imports
sentence-transformers (most of a cold start).
"""

from typing import Any

__all__ = ["KotaeQueryEmbedder", "KotaeTextEmbedder"]


def __getattr__(name: str) -> Any:
    if name == "KotaeQueryEmbedder":
        from kotae.indexing.query_embedder import KotaeQueryEmbedder

        return KotaeQueryEmbedder
    if name == "KotaeTextEmbedder":
        from kotae.pipeline.text_embedder import KotaeTextEmbedder

        return KotaeTextEmbedder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
