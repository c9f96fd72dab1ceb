"""One reader training step on a CPU in fp32, in bf16 autocast, and in fp32 under ``torch.compile``:
sequences/s for each (and, for compile, the first step's seconds, which include compiling).

The timing behind ``precision: bf16`` in configs/train/default-reader-cpu.yaml: e5-small as a QA
model with frozen word embeddings, batch 16 x 256 random tokens, AdamW, 3 timed steps after one
warm-up, 2 threads. Measured on this project's 2-core AMD EPYC (Zen 4, AVX-512 BF16): fp32 3.17,
bf16 5.74 sequences/s. On the AVX2-only AMD EPYC of later sessions (no native bf16), batch 32 x 256:
fp32 1.87 sequences/s (17.09 s a step), compile 2.03 (15.77 s, 8 % faster) after an 86 s first
step (inductor's kernel cache was warm; more when it is cold, and training's length-grouped
batches change shape, which compiles again), bf16 14x slower than fp32; so the full run stays plain fp32
(training paused, session 9). On an AVX-512 BF16 EPYC (session 12, training paused), batch
32 x 256: bf16 2.28, bf16-compile 2.92 sequences/s (+28 %, after a 91 s first step) at this one fixed
shape; with real length-grouped batches (bench/bench_train_throughput.py --compile --bf16) the
steady step was only 8 % faster and recompiles ate the gain, so the full run stays eager. Not run in CI.

    .venv/bin/python bench/bench_bf16_step.py                  # both
    .venv/bin/python bench/bench_bf16_step.py --modes bf16
    .venv/bin/python bench/bench_bf16_step.py --modes fp32 compile --batch-size 32
    .venv/bin/python bench/bench_bf16_step.py --modes bf16 bf16-compile --batch-size 32
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="multilingual-e5-small", help="alias or folder")
    parser.add_argument(
        "--modes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "compile", "bf16-compile"]
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForQuestionAnswering

    from kotae.reader_training.evaluate import resolve_reference

    torch.set_num_threads(args.threads)
    model = AutoModelForQuestionAnswering.from_pretrained(resolve_reference(args.model), use_safetensors=True)
    model.get_input_embeddings().weight.requires_grad_(False)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(5, 1000, (args.batch_size, args.length))
    positions = torch.randint(0, args.length, (args.batch_size,))
    for mode in args.modes:
        forward = torch.compile(model) if mode.endswith("compile") else model
        started, first = time.perf_counter(), 0.0
        for step in range(args.steps + 1):
            if step == 1:
                first = time.perf_counter() - started
                started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.startswith("bf16")):
                output = forward(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    start_positions=positions,
                    end_positions=positions,
                )
            output.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        seconds = (time.perf_counter() - started) / args.steps
        print(
            f"{mode}: {args.batch_size / seconds:.2f} sequences/s ({seconds:.2f} s a step; first step {first:.1f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
