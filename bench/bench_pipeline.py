"""Pipeline latency per question (p50/p95) for each shipped config, and kotae's reader vs Haystack's.

JaQuAD dev contexts are the corpus (indexed once into ``--index-dir``; re-runs only check it), and a
seeded sample of dev questions is asked through each config with the same reader. Then the two
readers — kotae's ``KotaeExtractiveReader`` and transformers-haystack's ``TransformersExtractiveReader`` —
are compared on the same model and the same questions, twice: inside the default (hybrid) pipeline,
and alone on each question's gold context; kotae's reader once per ``--runtimes`` entry (torch float32,
the int8 ONNX form, ...). F1/EM are JaQuAD's character-level scores from ``kotae.reader_training.metrics``
(the ``kotae evaluate`` implementation), for the top answer; ``kotae_vs_haystack`` gives each kotae
runtime's speed-up (Haystack's mean ms / kotae's) and F1 difference.

    .venv/bin/python bench/bench_pipeline.py                         # trained reader if prepared
    .venv/bin/python bench/bench_pipeline.py --reader runs/jaquad-small --questions 100
    .venv/bin/python bench/bench_pipeline.py --reader multilingual-e5-small   # untrained head: latency only
    .venv/bin/python bench/bench_pipeline.py --gold-only --questions 100 --threads 2   # readers only, no index

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
    started = time.perf_counter()
    evaluated = reader.loaded.predict(examples)
    seconds = time.perf_counter() - started
    same = sum(p.text == predictions[p.id] for p in evaluated)
    return {
        **scores({p.id: p.text for p in evaluated}, examples),
        "identical_predictions": f"{same}/{len(examples)}",
        "batched_ms_per_question": round(1000 * seconds / max(len(examples), 1), 1),
    }


def speedups(group: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each kotae runtime against Haystack's reader: speed-up (mean wall ms, and CPU ms) and F1 difference."""
    haystack = group.get("haystack")
    if not haystack:
        return {}
    return {
        name: {
            "speedup_wall": round(haystack["mean_ms"] / max(row["mean_ms"], 1e-9), 2),
            "speedup_cpu": round(haystack["cpu_ms_per_question"] / max(row["cpu_ms_per_question"], 1e-9), 2),
            "f1_minus_haystack": round(row["f1"] - haystack["f1"], 2),
        }
        for name, row in group.items()
        if name != "haystack"
    }


def main() -> None:
    import torch

    from kotae.indexing.job import run_index
    from kotae.pipeline.build import build_reader
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
    parser.add_argument("--configs", nargs="*", default=["default", "dense", "bm25"])
    parser.add_argument(
        "--runtimes", nargs="+", default=["torch", "onnx-int8"], help="kotae reader runtimes to compare"
    )
    parser.add_argument(
        "--gold-only", action="store_true", help="only the readers on gold contexts (no index, no pipelines)"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch and ONNX Runtime)")
    parser.add_argument(
        "--device", default=None, help="torch device for the models (default: cuda if available)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=c")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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

    index_info: dict[str, Any] = {}
    if not args.gold_only:
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
        f"cuda {torch.cuda.is_available()}, load average {os.getloadavg()[0]:.1f} at start",
        "pipeline": {},
        "readers_in_pipeline": {},
        "readers_on_gold_context": {},
    }
    retriever_top_k = config("default").retriever.top_k
    result["retriever_top_k"] = retriever_top_k

    for name in [] if args.gold_only else args.configs:
        answerer = QuestionAnswerer.from_config(config(name))
        predictions, timer = ask_all(answerer, examples)
        result["pipeline"][name] = {**latency_summary(timer), **scores(predictions, examples)}
        print(f"{name}: {result['pipeline'][name]}", file=sys.stderr)

    variants = [
        (f"kotae/{runtime}", ["reader.type=kotae", f"reader.runtime={runtime}"]) for runtime in args.runtimes
    ]
    variants.append(("haystack", ["reader.type=haystack"]))
    for label, extra in variants:
        if not args.gold_only:
            answerer = QuestionAnswerer.from_config(config("default", *extra))
            predictions, timer = ask_all(answerer, examples)
            result["readers_in_pipeline"][label] = {**latency_summary(timer), **scores(predictions, examples)}
            print(f"{label} in the pipeline: {result['readers_in_pipeline'][label]}", file=sys.stderr)
        reader = build_reader(config("default", *extra).reader)
        predictions, timer = read_gold(reader, examples)
        result["readers_on_gold_context"][label] = {**latency_summary(timer), **scores(predictions, examples)}
        print(f"{label} on gold contexts: {result['readers_on_gold_context'][label]}", file=sys.stderr)
        if label.startswith("kotae/"):
            agreement = evaluate_agreement(reader, examples, predictions)
            result.setdefault("kotae_evaluate_on_gold_context", {})[label] = agreement
            print(f"kotae evaluate ({label}): {agreement}", file=sys.stderr)
    result["kotae_vs_haystack"] = {
        group: speedups(result[group]) for group in ("readers_in_pipeline", "readers_on_gold_context")
    }

    print(json.dumps(result, ensure_ascii=False, indent=1))
    lines = ["| run | p50 ms | p95 ms | F1 | EM |", "|---|---|---|---|---|"]
    for group in ("pipeline", "readers_in_pipeline", "readers_on_gold_context"):
        for name, row in result[group].items():
            lines.append(
                f"| {group}/{name} | {row['p50_ms']} | {row['p95_ms']} | {row['f1']} | {row['exact_match']} |"
            )
    for group, rows in result["kotae_vs_haystack"].items():
        for name, row in rows.items():
            lines.append(
                f"{group}: {name} is {row['speedup_wall']}x Haystack's speed (wall; {row['speedup_cpu']}x CPU), "
                f"F1 {row['f1_minus_haystack']:+.2f}"
            )
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
