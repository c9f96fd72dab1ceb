"""Retrieval quality on JaQuAD dev: recall@1/5/20 and MRR@20 for dense, BM25 and their RRF fusion.

Build the index first (contexts as the corpus), then run the questions against it:

    .venv/bin/python bench/bench_index.py --index-dir /tmp/kotae-bench-index
    .venv/bin/python bench/bench_retrieval.py --index-dir /tmp/kotae-bench-index --tokenizers bigram fugashi

A question is answered by a passage of its own context whose [start, end) span contains the gold
answer span. BM25 indexes are built in memory per tokenizer from the store's passages. Fusion is
Haystack's DocumentJoiner in reciprocal_rank_fusion mode, as the hybrid pipeline uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "jaquad" / "dev"
CUTOFFS = (1, 5, 20)


@dataclass(frozen=True)
class Question:
    text: str
    document_id: str
    answer_start: int
    answer_end: int


def load_questions(data: Path) -> list[Question]:
    """Questions with their context's document id, as kotae.indexing.readers names SQuAD paragraphs."""
    from kotae.indexing.readers import ReadReport, iter_files

    questions = []
    for path in iter_files([data], ReadReport()):
        if path.suffix != ".json":
            continue
        for a, article in enumerate(json.loads(path.read_text(encoding="utf-8"))["data"]):
            for p, paragraph in enumerate(article["paragraphs"]):
                for qa in paragraph["qas"]:
                    answer = qa["answers"][0]
                    start = int(answer["answer_start"])
                    questions.append(
                        Question(qa["question"], f"{path}#{a}.{p}", start, start + len(answer["text"]))
                    )
    return questions


def first_hit_rank(question: Question, documents: list) -> int | None:
    """1-based rank of the first passage that contains the answer span, or None."""
    for rank, document in enumerate(documents, start=1):
        meta = document.meta
        if (
            meta.get("document_id") == question.document_id
            and meta["start"] <= question.answer_start
            and question.answer_end <= meta["end"]
        ):
            return rank
    return None


def score(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks)
    result = {f"recall@{k}": round(sum(1 for r in ranks if r is not None and r <= k) / n, 4) for k in CUTOFFS}
    result["mrr@20"] = round(sum(1 / r for r in ranks if r is not None and r <= 20) / n, 4)
    return result


def main() -> None:
    import numpy as np
    from haystack.components.joiners import DocumentJoiner

    from kotae.indexing.bm25 import BM25Index
    from kotae.indexing.embedder import resolve_embedder_dir
    from kotae.indexing.store import FaissDocumentStore
    from kotae.model_files import load_sentence_transformer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", type=Path, default=Path("/tmp/kotae-bench-index"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--query-prefix", default="query: ")
    parser.add_argument("--tokenizers", nargs="+", default=["bigram"])
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    args = parser.parse_args()

    questions = load_questions(args.data.resolve())
    if args.limit:
        questions = questions[: args.limit]
    store = FaissDocumentStore(args.index_dir)
    top = max(CUTOFFS)
    results: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}

    started = time.perf_counter()
    model = load_sentence_transformer(resolve_embedder_dir(args.model))  # safetensors only
    vectors = model.encode(
        [args.query_prefix + q.text for q in questions],
        batch_size=64,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    timings["query_embedding_seconds"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    dense = [store.embedding_retrieval(np.asarray(v).tolist(), top_k=top) for v in vectors]
    timings["dense_search_ms_per_query"] = round(1000 * (time.perf_counter() - started) / len(questions), 3)
    results["dense"] = score([first_hit_rank(q, d) for q, d in zip(questions, dense, strict=True)])

    pairs = list(store.iter_contents())
    joiner = DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=top)
    for name in args.tokenizers:
        started = time.perf_counter()
        index = BM25Index.build([i for i, _ in pairs], [t for _, t in pairs], name, store.generation)
        timings[f"bm25_{name}_build_seconds"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        hits = [index.search(q.text, top_k=top) for q in questions]
        timings[f"bm25_{name}_ms_per_query"] = round(
            1000 * (time.perf_counter() - started) / len(questions), 3
        )
        sparse = []
        for found in hits:
            documents = store.get_documents_by_id([i for i, _ in found])
            sparse.append([replace(d, score=v) for d, (_, v) in zip(documents, found, strict=True)])
        results[f"bm25_{name}"] = score(
            [first_hit_rank(q, d) for q, d in zip(questions, sparse, strict=True)]
        )
        fused = [joiner.run([d, s])["documents"] for d, s in zip(dense, sparse, strict=True)]
        results[f"rrf_dense_bm25_{name}"] = score(
            [first_hit_rank(q, d) for q, d in zip(questions, fused, strict=True)]
        )

    print(
        json.dumps(
            {
                "questions": len(questions),
                "passages": store.count_documents(),
                "model": args.model,
                "results": results,
                "timings": timings,
            },
            ensure_ascii=False,
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
