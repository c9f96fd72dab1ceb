"""kotae's question embedder as a Haystack integration: a kotae model alias or folder, device chosen on load.

Its serialised ``type`` is this module, which Haystack's deserializer trusts. The implementation
lives in :mod:`kotae.pipeline.text_embedder`.
"""

from kotae.pipeline.text_embedder import KotaeTextEmbedder

__all__ = ["KotaeTextEmbedder"]
