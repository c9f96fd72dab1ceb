"""One reader training step on a CPU in fp32 and in bf16 autocast: sequences/s for each.

The timing behind ``precision: bf16`` in configs/train/default-reader-cpu.yaml: e5-small as a QA
model with frozen word embeddings, batch 16 x 256 random tokens, AdamW, 3 timed steps after one
warm-up, 2 threads. Measured on this project's 2-core AMD EPYC (Zen 4, AVX-512 BF16): fp32 3.17,
bf16 5.74 sequences/s. Not run in CI.

    .venv/bin/python bench/bench_bf16_step.py                  # both
    .venv/bin/python bench/bench_bf16_step.py --modes bf16
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="multilingual-e5-small", help="alias or folder")
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
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
        started = 0.0
        for step in range(args.steps + 1):
            if step == 1:
                started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                output = model(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    start_positions=positions,
                    end_positions=positions,
                )
            output.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        seconds = (time.perf_counter() - started) / args.steps
        print(f"{mode}: {args.batch_size / seconds:.2f} sequences/s", flush=True)


if __name__ == "__main__":
    main()
