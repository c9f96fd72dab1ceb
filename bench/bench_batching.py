"""Batched vs one-at-a-time answering in one process: the same questions, the same answers, the cost of each.

Loads the pipeline once (``--config``, an existing ``--index-dir``), then answers the questions of
``examples/questions.json`` (ja + en) one at a time (:meth:`QuestionAnswerer.run`, what ``kotae
serve`` did before batching) and in batches of ``--batch`` (:meth:`QuestionAnswerer.run_many`, what
its batcher does), each ``--rounds`` times, alternating. Reports answers per second of wall time
and per CPU second of this process (the steadier figure on a shared machine), and checks that
every batched answer equals the one-at-a-time answer.

    .venv/bin/python bench/bench_batching.py --config default --index-dir ~/.cache/kotae/index/default --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--limit", type=int, help="questions per language (default: all)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from kotae.pipeline.answers import answer_record
    from kotae.pipeline.config import load_pipeline_config
    from kotae.pipeline.qa import Question, QuestionAnswerer

    config = load_pipeline_config(args.config, [f"index.dir={json.dumps(str(args.index_dir))}"])
    qa = QuestionAnswerer.from_config(config)
    data = json.loads((ROOT / "examples" / "questions.json").read_text(encoding="utf-8"))
    questions = [
        Question(item["question"], args.top_k)
        for lang in ("ja", "en")
        for item in data.get(lang, [])[: args.limit]
    ]
    qa.run_many(questions[:2])  # warm: first forward passes

    def records(result: Any) -> list[dict[str, Any]]:
        return [answer_record(answer) for answer in result["reader"]["answers"]]

    totals = {"one at a time": [0.0, 0.0], f"batches of {args.batch}": [0.0, 0.0]}
    same = True
    for _ in range(args.rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        alone = [records(qa.run(q.text, q.top_k)) for q in questions]
        totals["one at a time"][0] += time.perf_counter() - wall
        totals["one at a time"][1] += time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        batched: list[list[dict[str, Any]]] = []
        for first in range(0, len(questions), args.batch):
            batched += [records(r) for r in qa.run_many(questions[first : first + args.batch])]
        totals[f"batches of {args.batch}"][0] += time.perf_counter() - wall
        totals[f"batches of {args.batch}"][1] += time.process_time() - cpu
        same = same and batched == alone
    answered = len(questions) * args.rounds
    result = {
        "questions": len(questions),
        "rounds": args.rounds,
        "identical_answers": same,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "modes": {
            mode: {
                "answers_per_s": round(answered / wall, 3),
                "answers_per_cpu_s": round(answered / cpu, 3),
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
            }
            for mode, (wall, cpu) in totals.items()
        },
    }
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
