"""The single writer's ceiling: seconds per indexing commit as the store grows (384-d vectors).

    .venv/bin/python bench/bench_store_commit.py --passages 50000 --commit 500

Commits ``--commit`` passages at a time (Japanese text of about 300 characters, the job's metadata,
a random normalised 384-d vector) through ``FaissDocumentStore.apply`` exactly as the indexing job
does: one SQLite transaction, then the FAISS index rewritten whole and swapped in. Prints one JSON
line per tenth of the run: store size, seconds for that commit, passages/s of that commit, and
the size of ``vectors.faiss``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from haystack import Document
    from haystack.document_stores.types import DuplicatePolicy

    from kotae.indexing.store import FAISS_NAME, FaissDocumentStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=50_000)
    parser.add_argument("--commit", type=int, default=500)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--factory", default="Flat")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/kotae-bench-store"))
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    store = FaissDocumentStore(args.dir, faiss_factory=args.factory)
    rng = np.random.default_rng(0)
    text = "東京は日本の首都であり、最大の都市である。" * 14  # about 300 characters
    commits = args.passages // args.commit
    report_every = max(1, commits // 10)
    started = time.perf_counter()
    for number in range(commits):
        vectors = rng.standard_normal((args.commit, args.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        documents = [
            Document(
                id=f"d{number}-{k}",
                content=text,
                embedding=vector.tolist(),
                meta={
                    "source": f"/corpus/d{number}.txt",
                    "title": "東京",
                    "document_id": f"d{number}",
                    "passage_index": k,
                    "start": 0,
                    "end": len(text),
                },
            )
            for k, vector in enumerate(vectors)
        ]
        began = time.perf_counter()
        store.apply(
            write=documents,
            policy=DuplicatePolicy.OVERWRITE,
            set_sources={f"d{number}": ("digest", [d.id for d in documents])},
            set_state={"fingerprint": "bench"},
        )
        seconds = time.perf_counter() - began
        if (number + 1) % report_every == 0 or number == commits - 1:
            print(
                json.dumps(
                    {
                        "passages_in_store": (number + 1) * args.commit,
                        "commit_seconds": round(seconds, 3),
                        "commit_passages_per_second": round(args.commit / seconds, 1),
                        "faiss_mb": round((args.dir / FAISS_NAME).stat().st_size / 2**20, 1),
                        "sqlite_mb": round((args.dir / "store.sqlite3").stat().st_size / 2**20, 1),
                        "elapsed_seconds": round(time.perf_counter() - started, 1),
                    }
                ),
                flush=True,
            )
    store.close()


if __name__ == "__main__":
    main()
