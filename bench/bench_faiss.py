"""FAISS search latency (p50/p95, one query at a time) and recall@10 against exact search.

    .venv/bin/python bench/bench_faiss.py --n 100000
    .venv/bin/python bench/bench_faiss.py --n 1000000 --factories Flat IVF4096,PQ48

Vectors and queries are random normal 384-d vectors, L2-normalised (inner product = cosine), built
with the same code the store uses (kotae.indexing.faiss_index.build_faiss_index: IDMap2, training, nprobe and
efSearch). ``IVF,PQ`` without a list count picks about 4*sqrt(n) lists. Random high-dimensional data
has no cluster structure, so approximate indexes score lower here than on real embeddings.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np


def main() -> None:
    import faiss

    from kotae.indexing.faiss_index import build_faiss_index, set_search_parameters

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--factories", nargs="+", default=["Flat", "HNSW32", "IVF,PQ48"])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads while searching")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = np.arange(args.n, dtype=np.int64)
    exact = (queries @ data.T).argsort(axis=1)[:, ::-1][:, :10] if args.n <= 200_000 else None

    results = []
    for factory in args.factories:
        if factory.startswith("IVF,"):
            factory = f"IVF{2 ** round(math.log2(4 * math.sqrt(args.n)))},{factory[4:]}"
        faiss.omp_set_num_threads(2)
        started = time.perf_counter()
        index, staging = build_faiss_index(factory, args.dim, ids, data)
        build = time.perf_counter() - started
        faiss.omp_set_num_threads(args.threads)
        if "HNSW" in factory:
            settings = [{"ef_search": ef} for ef in args.ef_search]
        elif "IVF" in factory and not staging:
            settings = [{"nprobe": nprobe} for nprobe in args.nprobe]
        else:
            settings = [{}]
        for setting in settings:
            set_search_parameters(
                index, nprobe=setting.get("nprobe", 1), ef_search=setting.get("ef_search", 16)
            )
            latencies = []
            found = np.zeros((args.queries, 10), dtype=np.int64)
            for i in range(args.queries):
                t = time.perf_counter()
                _, labels = index.search(queries[i : i + 1], 10)
                latencies.append(time.perf_counter() - t)
                found[i] = labels[0]
            if exact is None and factory == "Flat":
                exact = found.copy()
            recall = None
            if exact is not None:
                recall = float(
                    np.mean([len(set(found[i]) & set(exact[i])) / 10 for i in range(args.queries)])
                )
            results.append(
                {
                    "factory": factory + (" (untrained: exact staging index)" if staging else ""),
                    **setting,
                    "build_seconds": round(build, 1),
                    "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 3),
                    "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 3),
                    "recall@10": None if recall is None else round(recall, 4),
                }
            )
            print(json.dumps(results[-1]), flush=True)
        del index
    print(
        json.dumps(
            {
                "n": args.n,
                "dim": args.dim,
                "queries": args.queries,
                "threads": args.threads,
                "nprobe": args.nprobe,
                "ef_search": args.ef_search,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
