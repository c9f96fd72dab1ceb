"""Where the reader's Japanese answers miss exactly: EM misses classified, and decoding variants
re-scored from cached logits.

The expensive part (one forward pass over every window of a dev set) runs once and is cached in
``--cache`` as an ``.npz`` of window logits and offsets; every later run re-decodes from the cache in
seconds, so decoding changes (span-edge refinement) are measured on whole dev sets without a model.

    python bench/span_edges.py --model reader-e5-small-ja-en --data ../shared/data/jaquad/dev \\
        --cache runs/edges/jaquad-dev.npz
    python bench/span_edges.py --model reader-e5-small-ja-en --data ../shared/data/squad-dev \\
        --cache runs/edges/squad-dev.npz

Prints EM/F1 as ``kotae evaluate`` scores them (same decoder, same metric), then the EM misses of
Japanese questions by class, each with its share of all questions and a few examples. It reads the
folder's settings and span-edge table itself rather than through ``open_reader``, so that a run from
the cache loads no model, and decodes in its own loop to compare decoding variants on one cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kotae.reader_training.data import QAExample, load_examples
from kotae.reader_training.decode import WindowLogits, choose_answer, decode
from kotae.reader_training.edges import (
    EdgeRefiner,
    classify_miss,
    edge_refiner_from_folder,
    has_japanese,
    load_edge_table,
)
from kotae.reader_training.evaluate import DecodeSettings, load_reader, saved_settings, window_logits
from kotae.reader_training.features import prepare_eval_features
from kotae.reader_training.metrics import evaluate_predictions, resolve_language


def compute_logits(
    model_ref: str, examples: Sequence[QAExample], settings: DecodeSettings
) -> dict[str, np.ndarray]:
    model, tokenizer, _ = load_reader(model_ref)
    windows = prepare_eval_features(
        tokenizer, examples, settings.max_length, settings.stride, settings.max_question_length
    )
    logits = window_logits(model, tokenizer, windows, settings.batch_size, progress=True)
    lengths = np.array([len(start) for start, _ in logits], dtype=np.int64)
    return {
        "example_index": np.array([w.example_index for w in windows], dtype=np.int64),
        "cls_index": np.array([w.cls_index for w in windows], dtype=np.int64),
        "lengths": lengths,
        "start": np.concatenate([s for s, _ in logits]).astype(np.float32),
        "end": np.concatenate([e for _, e in logits]).astype(np.float32),
        "offsets": np.concatenate(
            [np.asarray(w.offsets)[: len(s)] for w, (s, _) in zip(windows, logits, strict=True)]
        ),
    }


def windows_per_example(cache: dict[str, np.ndarray], count: int) -> list[list[WindowLogits]]:
    per_example: list[list[WindowLogits]] = [[] for _ in range(count)]
    bounds = np.concatenate([[0], np.cumsum(cache["lengths"])])
    for i, example_index in enumerate(cache["example_index"]):
        cut = slice(bounds[i], bounds[i + 1])
        per_example[int(example_index)].append(
            WindowLogits(
                cache["start"][cut], cache["end"][cut], cache["offsets"][cut], int(cache["cls_index"][i])
            )
        )
    return per_example


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="reader-e5-small-ja-en")
    parser.add_argument("--data", required=True)
    parser.add_argument(
        "--cache", type=Path, required=True, help=".npz of window logits (written when missing)"
    )
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--examples", type=int, default=3, help="examples printed per miss class")
    parser.add_argument(
        "--table",
        type=Path,
        default=None,
        help="folder holding the span_edges.json to use (default: the reader folder)",
    )
    parser.add_argument(
        "--japanese-contexts",
        action="store_true",
        help="only questions whose context holds a Japanese character (edges elsewhere never move)",
    )
    args = parser.parse_args(argv)

    examples = load_examples(args.data, max_examples=args.limit).examples
    if args.japanese_contexts:
        kept = [e for e in examples if has_japanese(e.context)]
        print(f"{len(kept)} of {len(examples)} questions have a Japanese character in their context")
        examples = kept
    folder_settings = saved_settings(load_reader_folder(args.model))
    settings = DecodeSettings(**folder_settings)
    if args.cache.is_file():
        cache = dict(np.load(args.cache))
    else:
        started = time.perf_counter()
        cache = compute_logits(args.model, examples, settings)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.cache, **cache)
        print(
            f"logits: {len(cache['lengths'])} windows in {time.perf_counter() - started:.0f} s -> {args.cache}"
        )
    per_example = windows_per_example(cache, len(examples))

    table = load_edge_table(args.table) if args.table else None
    refiner = EdgeRefiner(table) if table else edge_refiner_from_folder(load_reader_folder(args.model))
    variants: dict[str, EdgeRefiner | None] = {"plain": None}
    if refiner is not None:
        variants["edges"] = refiner
    else:
        print("no span_edges.json: decoding at token edges only")
    results = {}
    for name, refiner in variants.items():
        predictions = {}
        for example, windows in zip(examples, per_example, strict=True):
            decoded = decode(
                windows, [example.context], settings.n_best, settings.max_answer_length, refine=refiner
            )
            best = choose_answer(decoded)
            predictions[example.id] = (best.text, best.start, best.end) if best else ("", -1, -1)
        scores = evaluate_predictions(
            {k: v[0] for k, v in predictions.items()},
            {e.id: e.answer_texts for e in examples},
            "auto",
            texts={e.id: e.question for e in examples},
        )
        results[name] = (scores, predictions)
        print(json.dumps({"decoding": name, **scores}, ensure_ascii=False))

    for name, (_, predictions) in results.items():
        classes: Counter[str] = Counter()
        shown: dict[str, list[str]] = {}
        japanese = 0
        for example in examples:
            if resolve_language("auto", example.question) != "ja":
                continue
            japanese += 1
            text, start, end = predictions[example.id]
            label = classify_miss(example.context, (start, end), [(a.start, a.end) for a in example.answers])
            if label is None:
                continue
            classes[label] += 1
            gold = example.answers[0].text
            shown.setdefault(label, []).append(f"{text!r} vs {gold!r}")
        if not japanese:
            continue
        misses = sum(classes.values())
        print(
            f"\n[{name}] Japanese questions: {japanese}; EM misses: {misses} ({100 * misses / japanese:.1f} %)"
        )
        for label, count in classes.most_common():
            print(f"  {label:28s} {count:5d}  {100 * count / japanese:5.1f} % of questions")
            for line in shown[label][: args.examples]:
                print(f"      {line}")
    return 0


def load_reader_folder(model_ref: str) -> Path:
    from kotae.reader_training.evaluate import resolve_reference

    return resolve_reference(model_ref)


if __name__ == "__main__":
    sys.exit(main())
