"""kotae (答え): offline-first, Japanese-first open-domain question answering.

One package, in layers that import only downwards (checked by ``lint-imports`` in ``make lint``):

- :mod:`kotae.cli` — the ``kotae`` console script; each job registers its commands.
- :mod:`kotae.pipeline` — retrievers + reader as a Haystack pipeline; ask, serve, eval, feedback.
- :mod:`kotae.indexing` | :mod:`kotae.reader_training` — the index job and store | reader training
  and its decoder; independent of each other.
- the core, this folder's modules: :mod:`kotae.errors`, :mod:`kotae.config_files`,
  :mod:`kotae.models` (model aliases, offline preparation), :mod:`kotae.model_files`,
  :mod:`kotae.weight_files`, :mod:`kotae.reader_weights`, :mod:`kotae.e5s1`, :mod:`kotae.lazy`,
  :mod:`kotae.terminal`, :mod:`kotae.japanese` (MeCab), :mod:`kotae.progress`,
  :mod:`kotae.cpu_features` (what the CPU computes natively).

The shipped pipeline configs are in ``kotae/configs/pipeline/`` (``--config default|dense|bm25``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kotae.lazy import lazy_exports

if TYPE_CHECKING:
    from kotae.errors import KotaeError

_EXPORTS = {
    "KotaeError": "kotae.errors",
}
__all__ = [
    "KotaeError",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
