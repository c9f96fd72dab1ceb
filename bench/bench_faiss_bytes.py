"""Bytes per vector of the store's FAISS indexes, measured with ``faiss.serialize_index``.

    .venv/bin/python bench/bench_faiss_bytes.py --n 100000

Builds each factory with the store's own code (kotae.indexing.faiss_index.build_faiss_index: IDMap2 around
non-IVF indexes, inner product) on ``n`` and ``n/2`` random normalised 384-d vectors, serialises it,
and reports bytes/vector as the slope between the two sizes (the fixed part, e.g. IVF centroids and
PQ codebooks, as the intercept). IVF indexes are trained on ``--train`` vectors only: the size does
not depend on how many were used for training. Prints one JSON object per factory.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def serialized_bytes(factory: str, vectors: np.ndarray, train: int) -> tuple[int, float]:
    import faiss

    from kotae.indexing.faiss_index import build_faiss_index

    started = time.perf_counter()
    dim = vectors.shape[1]
    if "IVF" in factory or "PQ" in factory:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[:train])
        index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    else:
        index, _ = build_faiss_index(factory, dim, np.arange(len(vectors)), vectors)
    size = len(faiss.serialize_index(index))
    return size, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--factories", nargs="+", default=["Flat", "HNSW32", "IVF1024,PQ48", "IVF1024,PQ96"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for factory in args.factories:
        half, _ = serialized_bytes(factory, vectors[: args.n // 2], args.train)
        full, seconds = serialized_bytes(factory, vectors, args.train)
        slope = (full - half) / (args.n - args.n // 2)
        print(
            json.dumps(
                {
                    "factory": factory,
                    "n": args.n,
                    "dim": args.dim,
                    "bytes": full,
                    "bytes_per_vector": round(slope, 1),
                    "fixed_bytes": round(full - slope * args.n),
                    "build_seconds": round(seconds, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
