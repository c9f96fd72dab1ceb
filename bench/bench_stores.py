"""kotae's store and Milvus side by side: recall and latency of the same JaQuAD dev questions, one run.

    .venv/bin/python bench/bench_stores.py                      # default embedder, ../shared JaQuAD dev
    .venv/bin/python bench/bench_stores.py --limit 500 --work /tmp/kotae-bench-stores

1. The contexts are indexed into kotae's default store (``index.store: kotae``) in ``WORK/kotae``
   (incremental: a second run reuses it).
2. A Milvus Lite gRPC server is started on 127.0.0.1 and the same corpus is indexed into it by
   switching one key (``index.store: milvus``). Passages are split by the same code; their vectors
   are taken from kotae's store (same model, same texts) so the run measures the stores, not the
   embedder twice.
3. Every question is embedded once (in batches), before either store is asked; each store then
   answers every question through its pipeline components (``retriever.type: hybrid``): the
   dense retriever once, and BM25 (built from each store's own passages) joined with that dense
   result for hybrid.

Prints one JSON object: recall@1/5/20 per store and retriever, per-query latency (p50/p95, ms, query
embedding excluded; hybrid = the dense time + BM25 + join), passages, bytes on disk per passage,
the Milvus Lite server's resident memory per passage (RSS after loading the collection minus RSS
of the empty server), and seconds per step (indexing, question embedding, Milvus write, asking).
Timings on a shared machine vary; say so with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "jaquad" / "dev"


class StoredVectors:
    """A passage embedder that returns the vectors kotae's store already holds for the same texts."""

    def __init__(self, embedder: Any, vectors: dict[str, list[float]]) -> None:
        self.embedder = embedder
        self.vectors = vectors
        self.fingerprint = embedder.fingerprint
        self.max_tokens = embedder.max_tokens
        self.count_tokens = embedder.count_tokens

    def embed(self, texts: list[str]) -> Any:
        import numpy as np

        missing = [t for t in texts if t not in self.vectors]
        if missing:
            for text, vector in zip(missing, self.embedder.embed(missing), strict=True):
                self.vectors[text] = vector.tolist()
        return np.asarray([self.vectors[t] for t in texts], dtype=np.float32)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return round(float(np.percentile(values, q)), 2)


def measure(components: dict[str, Any], vectors: list[list[float]], questions: list[Any]) -> dict[str, Any]:
    """Recall and per-query latency of dense and hybrid retrieval, query embedding excluded.

    Each question's dense retrieval runs once; hybrid joins that result with BM25's, so its latency
    is the dense time plus the BM25 and joining time of the same question (the steps a hybrid
    pipeline runs one after the other).
    """
    from bench_retrieval import first_hit_rank, score

    ranks: dict[str, list[int | None]] = {"dense": [], "hybrid": []}
    seconds: dict[str, list[float]] = {"dense": [], "hybrid": []}
    for question, vector in zip(questions, vectors, strict=True):
        started = time.perf_counter()
        dense = components["dense_retriever"].run(query_embedding=vector, top_k=20)["documents"]
        dense_ms = 1000 * (time.perf_counter() - started)
        started = time.perf_counter()
        sparse = components["bm25_retriever"].run(query=question.text, top_k=20)["documents"]
        hybrid = components["joiner"].run([dense, sparse])["documents"]
        seconds["dense"].append(dense_ms)
        seconds["hybrid"].append(dense_ms + 1000 * (time.perf_counter() - started))
        ranks["dense"].append(first_hit_rank(question, dense))
        ranks["hybrid"].append(first_hit_rank(question, hybrid))
    return {
        kind: {
            **score(ranks[kind]),
            "p50_ms": percentile(seconds[kind], 50),
            "p95_ms": percentile(seconds[kind], 95),
        }
        for kind in ("dense", "hybrid")
    }


def main() -> None:
    import psutil
    from bench_retrieval import load_questions

    from kotae.indexing.embedder import load_embedder
    from kotae.indexing.job import run_index
    from kotae.indexing.milvus_testing import milvus_lite_server
    from kotae.indexing.stores import open_store
    from kotae.pipeline.build import build_components
    from kotae.pipeline.config import load_pipeline_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kotae-bench-stores"))
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    args = parser.parse_args()
    data = args.data.resolve()
    questions = load_questions(data)[: args.limit or None]
    base = [f"embedder.model={args.model}", "retriever.top_k=20"]
    configs = {
        "kotae": load_pipeline_config(None, [*base, f"index.dir={json.dumps(str(args.work / 'kotae'))}"]),
    }
    embedder = load_embedder(configs["kotae"])
    report: dict[str, Any] = {"questions": len(questions), "model": args.model, "stores": {}}

    started = time.perf_counter()
    run_index(configs["kotae"], [data], embedder=embedder)
    report["kotae_index_seconds"] = round(time.perf_counter() - started, 1)
    kotae_store = open_store(configs["kotae"])
    stored = {d.content or "": list(d.embedding or []) for d in kotae_store.filter_documents()}
    kotae_store.close()

    model = embedder.model  # the loaded sentence-transformers model
    prefix = configs["kotae"].embedder.query_prefix
    started = time.perf_counter()
    vectors = [
        v.tolist()
        for v in model.encode([prefix + q.text for q in questions], batch_size=64, normalize_embeddings=True)
    ]
    report["query_embedding_seconds"] = round(time.perf_counter() - started, 1)

    with milvus_lite_server(args.work / f"milvus-{os.getpid()}") as server:
        server_process = psutil.Process(server.process.pid)  # type: ignore[union-attr]
        empty_rss = server_process.memory_info().rss
        configs["milvus"] = load_pipeline_config(
            None,
            [
                *base,
                f"index.dir={json.dumps(str(args.work / 'milvus-local'))}",
                "index.store=milvus",
                f"index.milvus_uri={server.uri}",
                "index.milvus_collection=jaquad_dev",
            ],
        )
        started = time.perf_counter()
        run_index(configs["milvus"], [data], full=True, embedder=StoredVectors(embedder, stored))
        report["milvus_write_seconds"] = round(time.perf_counter() - started, 1)
        for name, config in configs.items():
            retriever = config.retriever.model_copy(update={"type": "hybrid"})
            components = build_components(
                config.model_copy(update={"retriever": retriever}), check_models=False
            )
            measure(components, vectors[:5], questions[:5])  # warm-up: BM25 load
            started = time.perf_counter()
            report["stores"][name] = measure(components, vectors, questions)
            report["stores"][name]["measure_seconds"] = round(time.perf_counter() - started, 1)
            store = components["dense_retriever"].document_store
            passages = store.count_documents()
            report["stores"][name]["passages"] = passages
            if name == "kotae":
                disk = folder_bytes(args.work / "kotae") - folder_bytes(args.work / "kotae" / "bm25")
            else:
                disk = folder_bytes(server.data_dir)
                rss = server_process.memory_info().rss
                report["stores"][name]["server_rss_mb"] = round(rss / 2**20, 1)
                report["stores"][name]["server_rss_bytes_per_passage"] = round((rss - empty_rss) / passages)
            report["stores"][name]["disk_bytes_per_passage"] = round(disk / passages)
    kotae, milvus = report["stores"]["kotae"], report["stores"]["milvus"]
    report["recall@5_difference"] = {
        kind: round(abs(kotae[kind]["recall@5"] - milvus[kind]["recall@5"]), 4)
        for kind in ("dense", "hybrid")
    }
    print(json.dumps(report, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
