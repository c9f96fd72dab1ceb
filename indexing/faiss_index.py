"""FAISS indexes for the store: built from a factory string over normalised vectors with int64 ids.

Pure helpers around FAISS, no files: :func:`build_faiss_index` (training once enough vectors exist,
an exact flat index meanwhile), :func:`check_factory` (one-line error for an unusable factory),
:func:`set_search_parameters` (IVF ``nprobe``, HNSW ``efSearch``). The store
(:mod:`kotae.indexing.store`) and the FAISS benches use them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from haystack.document_stores.errors import DocumentStoreError

__all__ = ["build_faiss_index", "check_factory", "min_training_vectors", "normalise", "set_search_parameters"]


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as contiguous float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms == 0.0, 1.0, norms), dtype=np.float32)


def min_training_vectors(factory: str, dim: int) -> int:
    """How many ``dim``-d vectors a factory index needs before it is trained (0 when none)."""
    import faiss

    probe = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if probe.is_trained:
        return 0
    needed = 256 if "PQ" in factory or "SQ" in factory else 1
    ivf = faiss.try_extract_index_ivf(probe)
    if ivf is not None:
        needed = max(needed, 39 * int(ivf.nlist))
    return needed


def build_faiss_index(
    factory: str, dim: int, ids: np.ndarray, vectors: np.ndarray, nprobe: int = 16, ef_search: int = 64
) -> tuple[Any, bool]:
    """A FAISS inner-product index over normalised ``vectors`` with int64 ``ids``.

    Returns ``(index, staging)``; ``staging`` is True when the factory index needs more vectors to be
    trained, and the vectors are held in an exact flat index meanwhile.
    """
    import faiss

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vectors = normalise(vectors.reshape(-1, dim)) if len(ids) else np.zeros((0, dim), np.float32)
    needed = min_training_vectors(factory, dim)
    index: Any
    if needed and len(ids) < needed:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        staging = True
    else:
        try:
            inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise DocumentStoreError(f"FAISS factory string {factory!r} is not usable: {error}") from None
        if not inner.is_trained:
            rng = np.random.default_rng(0)
            sample = vectors if len(vectors) <= 200_000 else vectors[rng.choice(len(vectors), 200_000, False)]
            inner.train(sample)
        if faiss.try_extract_index_ivf(inner) is not None or isinstance(inner, faiss.IndexIDMap):
            index = inner
        else:
            index = faiss.IndexIDMap2(inner)
        staging = False
    if len(ids):
        index.add_with_ids(vectors, ids)
    set_search_parameters(index, nprobe=nprobe, ef_search=ef_search)
    return index, staging


def check_factory(factory: str, dim: int) -> None:
    """Raise a one-line DocumentStoreError when ``factory`` cannot index ``dim``-d vectors."""
    import faiss

    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise DocumentStoreError(
            f"FAISS factory {factory!r} cannot index {dim}-d vectors ({reason}); "
            "check index.faiss_factory (e.g. Flat, HNSW32, IVF256,Flat, IVF256,PQ16 with 16 dividing the dimension)"
        ) from None


def set_search_parameters(index: Any, nprobe: int, ef_search: int) -> None:
    """Set IVF ``nprobe`` and HNSW ``efSearch`` wherever they apply inside ``index``."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = nprobe
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = ef_search
