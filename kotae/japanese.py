"""MeCab for Japanese words: one tagger (fugashi with the unidic-lite dictionary) per process.

BM25's Japanese tokens (``kotae.indexing.bm25``) and the reader's span edges
(``kotae.reader_training.edges``) both cut text into MeCab's morphemes; both get the tagger here.

Example::

    [word.surface for word in mecab()("1983年に生まれた")]   # ['1983', '年', 'に', '生まれ', 'た']
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from kotae.errors import KotaeError


@lru_cache(maxsize=1)
def mecab() -> Any:
    """The process's fugashi ``Tagger``; a one-line KotaeError when fugashi or its dictionary is missing."""
    try:
        import fugashi

        return fugashi.Tagger()
    except (ImportError, RuntimeError) as error:
        raise KotaeError(
            f"MeCab is not available ({error}); install fugashi and unidic-lite (pip install fugashi unidic-lite)"
        ) from None
