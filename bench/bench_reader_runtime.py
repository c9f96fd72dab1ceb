"""Seconds per batch of real reader windows for each reader runtime, and how far its logits are from torch's.

Real JaQuAD dev questions and contexts are windowed by the product's own code
(``tokenize_windows``, the reader's settings) and read by each runtime of
:mod:`kotae.reader_training.runtime`, each opened by ``open_reader`` as ``kotae evaluate`` and the
pipeline open it, best of ``--repeat`` after one warm-up. Wall seconds and this process's CPU seconds are both
printed: on a shared machine the CPU seconds are the steadier figure.

    .venv/bin/python bench/bench_reader_runtime.py --windows 10 --threads 2
    .venv/bin/python bench/bench_reader_runtime.py --runtimes torch onnx-int8 --windows 32

Prints one JSON object. Needs ../shared/data/jaquad/dev and a prepared reader (kotae models prepare).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "jaquad" / "dev"


def main() -> None:
    import numpy as np
    import torch

    from kotae.reader_training.data import load_examples
    from kotae.reader_training.evaluate import open_reader
    from kotae.reader_training.features import tokenize_windows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", default="reader-e5-small-ja-en")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--runtimes", nargs="+", default=["torch", "torch-bf16", "onnx-int8"])
    parser.add_argument("--windows", type=int, default=10, help="windows read in one batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    examples = load_examples(str(args.data), max_examples=args.windows * 4).examples
    result: dict[str, object] = {"reader": args.reader, "threads": args.threads, "runtimes": {}}
    reference: list[np.ndarray] | None = None
    for name in args.runtimes:
        reader = open_reader(args.reader, name, "cpu")
        runtime, tokenizer, settings = reader.runtime, reader.tokenizer, reader.settings
        windows = tokenize_windows(
            tokenizer,
            [e.question for e in examples],
            [e.context for e in examples],
            settings.max_length,
            settings.stride,
            settings.max_question_length,
        )
        windows = sorted(windows, key=lambda w: -len(w.input_ids))[: args.windows]
        runtime.window_logits(windows, args.windows)  # warm-up
        wall, cpu = [], []
        for _ in range(args.repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            logits = runtime.window_logits(windows, args.windows)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        starts = [start for start, _ in logits]
        if reference is None:
            reference = starts
        row = {
            "answered_by": runtime.name,
            "seconds": round(min(wall), 3),
            "cpu_seconds": round(min(cpu), 3),
            "window_tokens": [len(windows[0].input_ids), len(windows[-1].input_ids)],
            "max_start_logit_difference_vs_first": round(
                max(float(np.abs(a - b).max()) for a, b in zip(starts, reference, strict=True)), 4
            ),
        }
        result["runtimes"][name] = row  # type: ignore[index]
        print(name, row, flush=True, file=sys.stderr)
    result["load_average"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
