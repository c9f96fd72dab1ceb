"""Reader training throughput on the real e5-small base: sequences/s with and without frozen word
embeddings, and with and without length-grouped batches; or (``--compile``) kotae's setup (frozen,
grouped) run eagerly and under ``torch.compile`` (``trainer_args: {torch_compile: true}``).

Each variant trains a fresh ``AutoModelForQuestionAnswering`` from ``multilingual-e5-small`` for
``--steps`` optimizer steps on the same JaQuAD windows through transformers' ``Trainer`` (as
``kotae train`` does) and times the steps after the first (warm-up) one; ``median_step_seconds`` is
the steady pace once compiling (again, for each new batch shape, until shapes turn dynamic) is over.
``--bf16`` trains under bf16 autocast, as ``precision: auto`` does on a CPU with AVX-512 BF16. Not run in CI.

Measured 2026-12-03 (2-core AMD EPYC with AVX-512 BF16, training paused; ``--compile --bf16
--batch-size 32 --steps 20 --threads 2 --questions 1000``, mean padded length 232): eager 2.79
sequences/s, median step 13.23 s; compiled 1.98 sequences/s over the 20 steps (recompiling for new
shapes), median step 12.17 s (8 % faster once compiled). kotae's configs therefore leave
``torch_compile`` off.

    .venv/bin/python bench/bench_train_throughput.py --questions 400 --steps 10 --batch-size 16
    .venv/bin/python bench/bench_train_throughput.py --compile --bf16 --batch-size 32 --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="multilingual-e5-small", help="alias or folder")
    parser.add_argument("--data", default=str(SHARED / "data" / "jaquad" / "train"))
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (after 1 warm-up)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--stride", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (a CPU with native bf16)")
    parser.add_argument(
        "--compile", action="store_true", help="frozen + grouped only, eager against torch.compile"
    )
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import torch
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from kotae.reader_training.data import load_examples
    from kotae.reader_training.evaluate import resolve_reference
    from kotae.reader_training.features import prepare_train_features
    from kotae.reader_training.train import freeze

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = resolve_reference(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    examples = load_examples(args.data, args.questions).examples
    features = prepare_train_features(tokenizer, examples, args.max_length, args.stride)
    dataset = datasets.Dataset.from_dict(features.columns)
    collator = DataCollatorWithPadding(tokenizer)

    padded_lengths: list[int] = []

    def collate(rows: list[dict[str, Any]]) -> Any:
        batch = collator([{k: v for k, v in row.items() if k != "length"} for row in rows])
        padded_lengths.append(int(batch["input_ids"].shape[1]))
        return batch

    class Timer(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.marks: list[float] = []
            self.tokens = 0

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            self.marks.append(time.perf_counter())

    if args.compile:
        variants = [(True, True, False), (True, True, True)]
    else:
        variants = [(frozen, grouped, False) for frozen in (True, False) for grouped in (True, False)]
    results = []
    for frozen, grouped, compiled in variants:
        padded_lengths.clear()
        model = AutoModelForQuestionAnswering.from_pretrained(
            folder, use_safetensors=True, trust_remote_code=False
        )
        freeze(model, frozen, 0)
        timer = Timer()
        with tempfile.TemporaryDirectory() as out:
            trainer = Trainer(
                model=model,
                args=TrainingArguments(
                    output_dir=out,
                    per_device_train_batch_size=args.batch_size,
                    max_steps=args.steps + 1,
                    learning_rate=5e-5,
                    save_strategy="no",
                    report_to="none",
                    disable_tqdm=True,
                    logging_strategy="no",
                    train_sampling_strategy="group_by_length" if grouped else "random",
                    length_column_name="length",
                    remove_unused_columns=False,
                    dataloader_pin_memory=torch.cuda.is_available(),
                    seed=0,
                    bf16=args.bf16,
                    use_cpu=not torch.cuda.is_available(),
                    torch_compile=compiled,
                ),
                train_dataset=dataset,
                data_collator=collate,
                processing_class=tokenizer,
                callbacks=[timer],
            )
            trainer.train()
        seconds = timer.marks[-1] - timer.marks[0]
        steps = sorted(b - a for a, b in zip(timer.marks, timer.marks[1:], strict=False))
        row = {
            "freeze_word_embeddings": frozen,
            "group_by_length": grouped,
            "torch_compile": compiled,
            "bf16": args.bf16,
            "steps_timed": args.steps,
            "sequences_per_second": round(args.steps * args.batch_size / seconds, 3),
            "median_step_seconds": round(steps[len(steps) // 2], 2),
            "mean_padded_length": round(sum(padded_lengths) / max(len(padded_lengths), 1), 1),
        }
        print(json.dumps(row), flush=True)
        results.append(row)
    summary = {
        "model": str(args.model),
        "windows": len(dataset),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "results": results,
    }
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
