"""Indexing throughput: JaQuAD dev contexts -> passages -> embeddings, then an unchanged re-run.

    .venv/bin/python bench/bench_index.py                       # default embedder, ../shared JaQuAD dev
    .venv/bin/python bench/bench_index.py --model all-minilm-l6-v2 --index-dir /tmp/kotae-bench-minilm

Prints one JSON object: model load time, passages, seconds, passages/s (embedding run, model already
loaded), and the wall time of an unchanged re-run (a fresh job: reads, hashes, diffs, embeds nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "jaquad" / "dev"


def main() -> None:
    from kotae.indexing.embedder import load_embedder
    from kotae.indexing.job import run_index
    from kotae.pipeline.config import load_pipeline_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--index-dir", type=Path, default=Path("/tmp/kotae-bench-index"))
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=c")
    args = parser.parse_args()
    if not args.corpus.exists():
        raise SystemExit(f"corpus not found: {args.corpus}")
    corpus = args.corpus.resolve()
    config = load_pipeline_config(None, [f"embedder.model={args.model}", *args.overrides])

    started = time.perf_counter()
    embedder = load_embedder(config)
    embedder.count_tokens("warm up")  # loads the model
    load_seconds = time.perf_counter() - started

    full = run_index(config, [corpus], args.index_dir, full=True, embedder=embedder, progress=True)
    rerun = run_index(config, [corpus], args.index_dir)  # fresh embedder: must not even load the model
    import torch

    result = {
        "model": args.model,
        "corpus": str(corpus),
        "documents": full.added,
        "passages": full.passages_added,
        "model_load_seconds": round(load_seconds, 2),
        "index_seconds": round(full.seconds, 2),
        "passages_per_second": round(full.passages_per_second, 1),
        "unchanged_rerun_seconds": round(rerun.seconds, 2),
        "unchanged_rerun": {"unchanged": rerun.unchanged, "passages_added": rerun.passages_added},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}",
        "config": config.index.model_dump(),
    }
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
