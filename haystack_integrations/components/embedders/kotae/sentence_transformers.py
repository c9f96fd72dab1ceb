"""kotae's sentence-transformers question embedder, :class:`KotaeTextEmbedder`, under the module it is
serialised as (one Haystack's deserializer trusts); the implementation is :mod:`kotae.pipeline.text_embedder`."""

from kotae.pipeline.text_embedder import KotaeTextEmbedder

__all__ = ["KotaeTextEmbedder"]
