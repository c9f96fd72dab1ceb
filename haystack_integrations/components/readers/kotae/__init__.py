"""kotae's extractive reader as a Haystack integration (the decoder ``kotae evaluate`` scores).

Its serialised ``type`` is this module, which Haystack's deserializer trusts. The implementation
lives in :mod:`kotae.pipeline.reader`.
"""

from kotae.pipeline.reader import KotaeExtractiveReader

__all__ = ["KotaeExtractiveReader"]
