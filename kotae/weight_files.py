"""Weight files kotae writes and reads back: size-capped shards, checksums, the tensor names they share.

The one sharding rule (:func:`shard`) serves the shipped reader delta (:mod:`kotae.reader_weights`)
and the remote-GPU training run's returned weights (:mod:`kotae.reader_training.device.train`), so
every weight file kotae writes stays under :data:`MAX_FILE_BYTES`. Standard library only: the
device scripts import it on a machine without kotae's dependencies.

>>> [list(group) for group in shard({"a": 6, "b": 6, "c": 2}, limit=10, nbytes=lambda n: n)]
[['a'], ['b', 'c']]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["HF_WORD_EMBEDDINGS", "MAX_FILE_BYTES", "sha256", "shard"]

HF_WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
"""The word-embedding matrix's name in a ``BertForQuestionAnswering`` state dict."""

MAX_FILE_BYTES = 15 * 1024 * 1024
"""Each file at most 15 MiB: the device tool brings back files of up to 16 MiB, and headers need room."""

T = TypeVar("T")


def sha256(path: Path) -> str:
    """The file's SHA-256, hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _nbytes(value: Any) -> int:
    return int(value.nbytes)


def shard(
    tensors: Mapping[str, T], limit: int = MAX_FILE_BYTES, nbytes: Callable[[T], int] = _nbytes
) -> list[dict[str, T]]:
    """Tensors split, in order, into groups of at most ``limit`` bytes (a bigger tensor alone).

    ``nbytes`` measures one tensor (numpy's ``.nbytes`` by default; a torch tensor's is
    ``numel() * element_size()``).
    """
    groups: list[dict[str, T]] = [{}]
    size = 0
    for name, value in tensors.items():
        n = nbytes(value)
        if groups[-1] and size + n > limit:
            groups.append({})
            size = 0
        groups[-1][name] = value
        size += n
    return groups
