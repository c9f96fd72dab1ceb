"""Pipeline latency per question (p50/p95) for each shipped config, and kotae's reader vs Haystack's.

JaQuAD dev contexts are the corpus (indexed once into ``--index-dir``; re-runs only check it), and a
seeded sample of dev questions is asked through each config with the same reader. Then the two
readers — kotae's ``KotaeExtractiveReader`` and transformers-haystack's ``TransformersExtractiveReader`` —
are compared on the same model and the same questions, twice: inside the default (hybrid) pipeline,
and alone on each question's gold context. F1/EM are JaQuAD's character-level scores from
``kotae.reader_training.metrics`` (the ``kotae evaluate`` implementation), for the top answer.

    .venv/bin/python bench/bench_pipeline.py                         # trained reader if prepared
    .venv/bin/python bench/bench_pipeline.py --reader runs/jaquad-small --questions 100
    .venv/bin/python bench/bench_pipeline.py --reader multilingual-e5-small   # untrained head: latency only

Prints one JSON object (and a Markdown table on stderr). Needs ../shared/data/jaquad/dev.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "jaquad" / "dev"
CONFIGS = ROOT / "configs" / "pipeline"
TRAINED_READER = "reader-e5-small-ja-en"


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else 0.0


class Timer:
    """Wall-clock seconds per call, and this process's CPU seconds (all threads) over all calls."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu = 0.0

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds.append(time.perf_counter() - self._wall)
        self.cpu += time.process_time() - self._cpu


def latency_summary(timer: Timer) -> dict[str, float]:
    """p50/p95/mean wall latency, and mean CPU time per question (steadier on a shared machine)."""
    seconds = timer.seconds
    n = max(len(seconds), 1)
    return {
        "p50_ms": round(1000 * percentile(seconds, 50), 1),
        "p95_ms": round(1000 * percentile(seconds, 95), 1),
        "mean_ms": round(1000 * sum(seconds) / n, 1),
        "cpu_ms_per_question": round(1000 * timer.cpu / n, 1),
    }


def scores(predictions: dict[str, str], examples: list[Any]) -> dict[str, float]:
    from kotae.reader_training.metrics import evaluate_predictions

    result = evaluate_predictions(
        predictions,
        {e.id: e.answer_texts for e in examples},
        "auto",
        texts={e.id: e.question for e in examples},
        version_2=False,
    )
    return {"f1": round(float(result["f1"]), 2), "exact_match": round(float(result["exact_match"]), 2)}


def default_reader() -> str:
    from kotae.models import ALIASES

    if TRAINED_READER in ALIASES:
        return TRAINED_READER
    print(
        f"note: the trained reader alias {TRAINED_READER!r} does not exist yet; using the untrained "
        "multilingual-e5-small base (random QA head): latencies are real, F1 is meaningless",
        file=sys.stderr,
    )
    return "multilingual-e5-small"


def ask_all(answerer: Any, examples: list[Any], warm: int = 2) -> tuple[dict[str, str], Timer]:
    for example in examples[:warm]:  # first calls load lazily-built indexes and allocate buffers
        answerer.ask(example.question)
    predictions: dict[str, str] = {}
    timer = Timer()
    for example in examples:
        with timer:
            answers = answerer.ask(example.question)
        predictions[example.id] = next((a.data for a in answers if a.data is not None), "")
    return predictions, timer


def read_gold(reader: Any, examples: list[Any]) -> tuple[dict[str, str], Timer]:
    from haystack import Document

    reader.warm_up()
    for example in examples[:2]:
        reader.run(query=example.question, documents=[Document(content=example.context)])
    predictions: dict[str, str] = {}
    timer = Timer()
    for example in examples:
        with timer:
            answers = reader.run(query=example.question, documents=[Document(content=example.context)])[
                "answers"
            ]
        predictions[example.id] = next((a.data for a in answers if a.data is not None), "")
    return predictions, timer


def evaluate_agreement(reader: Any, examples: list[Any], predictions: dict[str, str]) -> dict[str, Any]:
    """``kotae evaluate``'s predictions with the settings the pipeline reader resolved, and how many agree."""
    from kotae.reader_training.evaluate import predict

    started = time.perf_counter()
    evaluated = predict(reader._model, reader._tokenizer, examples, reader.settings)
    seconds = time.perf_counter() - started
    same = sum(p.text == predictions[p.id] for p in evaluated)
    return {
        **scores({p.id: p.text for p in evaluated}, examples),
        "identical_predictions": f"{same}/{len(examples)}",
        "batched_ms_per_question": round(1000 * seconds / max(len(examples), 1), 1),
    }


def main() -> None:
    import torch

    from kotae.indexing.job import run_index
    from kotae.pipeline.build import build_components
    from kotae.pipeline.config import load_pipeline_config
    from kotae.pipeline.qa import QuestionAnswerer
    from kotae.reader_training.data import load_examples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--index-dir", type=Path, default=Path("/tmp/kotae-bench-pipeline-index"))
    parser.add_argument(
        "--reader", default=None, help=f"reader model (default: {TRAINED_READER} if prepared)"
    )
    parser.add_argument("--questions", type=int, default=50, help="sampled dev questions (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", default=["default", "dense", "bm25"])
    parser.add_argument(
        "--device", default=None, help="torch device for the models (default: cuda if available)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=c")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"data not found: {args.data}")
    reader_ref = args.reader or default_reader()
    overrides = [
        f"index.dir={json.dumps(str(args.index_dir))}",
        f"reader.model={json.dumps(reader_ref)}",
        *([f"reader.device={args.device}", f"embedder.device={args.device}"] if args.device else []),
        *args.overrides,
    ]

    def config(name: str, *extra: str) -> Any:
        return load_pipeline_config(CONFIGS / f"{name}.yaml", [*overrides, *extra])

    started = time.perf_counter()
    summary = run_index(config("default"), [args.data.resolve()], progress=sys.stderr.isatty())
    index_info = {"passages": summary.passages_total, "seconds": round(time.perf_counter() - started, 1)}

    examples = list(load_examples(str(args.data)).examples)
    random.Random(args.seed).shuffle(examples)
    examples = examples[: args.questions]

    result: dict[str, Any] = {
        "reader": reader_ref,
        "questions": len(examples),
        "index": index_info,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"cuda {torch.cuda.is_available()}",
        "pipeline": {},
        "readers_in_pipeline": {},
        "readers_on_gold_context": {},
    }
    retriever_top_k = config("default").retriever.top_k
    result["retriever_top_k"] = retriever_top_k

    for name in args.configs:
        answerer = QuestionAnswerer.from_config(config(name))
        predictions, timer = ask_all(answerer, examples)
        result["pipeline"][name] = {**latency_summary(timer), **scores(predictions, examples)}
        if name == "default":
            result["readers_in_pipeline"]["kotae"] = result["pipeline"][name]
        print(f"{name}: {result['pipeline'][name]}", file=sys.stderr)

    for reader_type in ("kotae", "haystack"):
        if reader_type not in result["readers_in_pipeline"]:
            answerer = QuestionAnswerer.from_config(config("default", f"reader.type={reader_type}"))
            predictions, timer = ask_all(answerer, examples)
            result["readers_in_pipeline"][reader_type] = {
                **latency_summary(timer),
                **scores(predictions, examples),
            }
        reader = build_components(config("bm25", f"reader.type={reader_type}"))["reader"]
        predictions, timer = read_gold(reader, examples)
        result["readers_on_gold_context"][reader_type] = {
            **latency_summary(timer),
            **scores(predictions, examples),
        }
        print(f"{reader_type}: {result['readers_on_gold_context'][reader_type]}", file=sys.stderr)
        if reader_type == "kotae":
            agreement = evaluate_agreement(reader, examples, predictions)
            result["kotae_evaluate_on_gold_context"] = agreement
            print(f"kotae evaluate: {agreement}", file=sys.stderr)

    print(json.dumps(result, ensure_ascii=False, indent=1))
    lines = ["| run | p50 ms | p95 ms | F1 | EM |", "|---|---|---|---|---|"]
    for group in ("pipeline", "readers_in_pipeline", "readers_on_gold_context"):
        for name, row in result[group].items():
            lines.append(
                f"| {group}/{name} | {row['p50_ms']} | {row['p95_ms']} | {row['f1']} | {row['exact_match']} |"
            )
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
