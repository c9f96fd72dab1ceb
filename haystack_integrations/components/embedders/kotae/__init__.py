"""kotae's question embedders as a Haystack integration: a kotae model alias or folder, device chosen on load.

- :class:`KotaeQueryEmbedder` (:mod:`kotae.indexing.query_embedder`; serialised under this module)
  computes plain Transformer + mean-pooling models (multilingual-e5-small, all-MiniLM-L6-v2, the
  shipped ones) without sentence-transformers, whose import is most of a cold start;
- :class:`KotaeTextEmbedder` (:mod:`kotae.pipeline.text_embedder`) is sentence-transformers' embedder
  for any other model. It is serialised under
  :mod:`haystack_integrations.components.embedders.kotae.sentence_transformers`, so a pipeline
  that does not use it never imports sentence-transformers; importing it from here works too.

Both modules are ones Haystack's deserializer trusts.
"""

from typing import Any

from kotae.indexing.query_embedder import KotaeQueryEmbedder

__all__ = ["KotaeQueryEmbedder", "KotaeTextEmbedder"]


def __getattr__(name: str) -> Any:
    if name == "KotaeTextEmbedder":  # imported on first use: it imports sentence-transformers
        from kotae.pipeline.text_embedder import KotaeTextEmbedder

        return KotaeTextEmbedder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
