"""The feedback gain curve (issue 13): what N users' corrections on a team's own documents buy.

A team's documents are simulated by SQuADShifts ``amazon`` (product reviews), which the base reader
never saw (``configs/train/reader-no-amazon-cpu.yaml``). For each N in ``--sizes``:

1. Amazon is split by product: held-out products (at least ``--heldout`` questions) only measure;
   the other products' questions, shuffled, are what the team asks (the first N for size N, so the
   sizes are nested).
2. The base reader answers each of those questions on its review, and a simulated user gives the
   verdict a person would: ``correct`` when the answer shown matches a reference answer exactly
   (SQuAD normalisation), otherwise ``wrong`` with the first reference answer selected as the
   corrected span. The labels are appended to a ``FeedbackStore`` -- the SQLite file that the page
   and ``POST /feedback`` append to (the HTTP path itself is tested in tests/test_feedback_loop.py;
   here no index is built, so the export counts every label as stale and still exports it) -- and
   ``kotae feedback export`` writes them as SQuAD v2.0.
3. ``kotae train`` adapts the base reader with configs/train/adapt.yaml's settings, on the export
   plus a replay sample of the base's own training data (JaQuAD train, new_wiki, reddit: no amazon,
   as the base never saw it). N = 0 is the control: the same replay, no labels.
4. ``kotae evaluate --json`` scores the base and every adapted reader on the held-out amazon
   questions and on the first ``--dev-limit`` questions of JaQuAD dev and squad-dev.

Every step is skipped when its output exists, so an interrupted run continues where it stopped.
The settings those outputs depend on are kept in ``OUT/settings.json``; a rerun into the same
``--out`` with other settings stops with one line naming them (``--sizes`` may change freely).
Prints a table (and writes ``OUT/results.json``) with EM/F1 per set and the CPU minutes of each
adaptation (user + system time of the ``kotae train`` process)::

    kotae train --config configs/train/reader-no-amazon-cpu.yaml          # the base, ~35 min
    python bench/feedback_gain_curve.py --base runs/reader-no-amazon --out runs/gain
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kotae.pipeline.feedback import FeedbackStore, Label  # noqa: E402
from kotae.reader_training.data import QAExample, examples_from_squad  # noqa: E402
from kotae.reader_training.metrics import exact_match_score  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
AMAZON = DATA / "squadshifts" / "amazon.json"
REPLAY = [
    DATA / "jaquad" / "train",
    DATA / "squadshifts" / "new_wiki.json",
    DATA / "squadshifts" / "reddit.json",
]
DEV = {"jaquad-dev": DATA / "jaquad" / "dev", "squad-dev": DATA / "squad-dev"}


# ------------------------------------------------------------------------------------------ core


def split_by_product(
    document: dict[str, Any], heldout_questions: int, seed: int
) -> tuple[dict[str, Any], list[QAExample]]:
    """(held-out SQuAD JSON of whole products with >= ``heldout_questions`` questions, the shuffled pool)."""
    articles = list(document["data"])
    random.Random(seed).shuffle(articles)
    heldout: list[dict[str, Any]] = []
    count = 0
    while count < heldout_questions and articles:
        article = articles.pop()
        heldout.append(article)
        count += sum(len(p["qas"]) for p in article["paragraphs"])
    pool = list(examples_from_squad({"data": articles}))
    random.Random(seed + 1).shuffle(pool)
    return {"version": "1.1", "data": heldout}, pool


def simulated_label(example: QAExample, shown: tuple[int, int], reader: str) -> Label:
    """The verdict a user gives on the answer ``shown`` (a span of the review) to ``example``."""
    start, end = shown
    right = any(exact_match_score(example.context[start:end], a.text) for a in example.answers)
    reference = example.answers[0]
    passage = f"amazon/{example.title}/{example.id}"
    return Label(
        question=example.question,
        verdict="correct" if right else "wrong",
        document_id=passage,
        passage_id=passage,
        passage_text=example.context,
        passage_start=0,
        answer_start=start,
        answer_end=end,
        corrected_start=None if right else reference.start,
        corrected_end=None if right else reference.start + len(reference.text),
        title=example.title,
        reader_model=reader,
    )


def adapt_config(
    base: str, labels: Path | None, output_dir: Path, replay_weight: float, epochs: float
) -> dict[str, Any]:
    """configs/train/adapt.yaml for this base, labels and replay; no dev sets (scored separately)."""
    config = yaml.safe_load((ROOT / "configs" / "train" / "adapt.yaml").read_text(encoding="utf-8"))
    label_source = config["train_data"][0]
    sources = [{**label_source, "path": str(labels)}] if labels else []
    config.update(
        base_model=base,
        output_dir=str(output_dir),
        train_data=sources + [{"path": str(path), "weight": replay_weight} for path in REPLAY],
        dev_data=[],
        num_train_epochs=epochs,
    )
    return config


CACHE_KEYS = ("base", "heldout", "dev_limit", "replay_weight", "epochs", "learning_rate", "precision", "seed")


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The cache-relevant settings whose value differs between a folder's saved run and this one."""
    return [key for key in CACHE_KEYS if key in saved and saved[key] != current.get(key)]


# ----------------------------------------------------------------------------------------- shell


def run(command: list[str], log: Path) -> float:
    """Run a kotae command (its output to ``log``); returns its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("w", encoding="utf-8") as out:
        completed = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode:
        sys.exit(f"{' '.join(command)} failed (exit {completed.returncode}); see {log}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def kotae(*args: str) -> list[str]:
    return [sys.executable, "-m", "kotae", *args]


def scores(model: str, out: Path, heldout: Path, dev_limit: int) -> dict[str, Any]:
    """EM/F1 of ``model`` on held-out amazon and the dev slices, cached in ``out/scores.json``."""
    cached = out / "scores.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    result = {}
    for name, data, limit in [
        ("amazon-heldout", heldout, None),
        *((n, p, dev_limit) for n, p in DEV.items()),
    ]:
        log = out / f"evaluate-{name}.log"
        args = ["evaluate", "--model", model, "--data", str(data), "--json", "--threads", "2"]
        run(kotae(*args, *(["--limit", str(limit)] if limit else [])), log)
        summary = json.loads(log.read_text().strip().splitlines()[-1])
        result[name] = {"exact_match": summary["exact_match"], "f1": summary["f1"], "n": summary["n"]}
    cached.write_text(json.dumps(result, indent=1) + "\n")
    return result


def shown_answers(base: str, pool: list[QAExample], cache: Path) -> list[tuple[int, int]]:
    """The base reader's answer span for each pool question (what the user sees), cached."""
    if cache.is_file():
        spans = [tuple(span) for span in json.loads(cache.read_text())]
        if len(spans) >= len(pool):  # a later run may ask more questions (a larger --sizes)
            return spans[: len(pool)]  # type: ignore[return-value]
    from kotae.reader_training.evaluate import open_reader

    predictions = open_reader(base).predict(pool, progress=True)
    spans = [(p.start, p.end) for p in predictions]
    cache.write_text(json.dumps(spans))
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="runs/reader-no-amazon", help="reader that never saw amazon")
    parser.add_argument("--out", type=Path, default=Path("runs/gain"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 100, 300, 1000])
    parser.add_argument(
        "--heldout", type=int, default=1000, help="held-out amazon questions (whole products)"
    )
    parser.add_argument("--dev-limit", type=int, default=300, help="first N questions of each dev set")
    parser.add_argument("--replay-weight", type=float, default=0.02, help="sample of each replay set")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, help="default: configs/train/adapt.yaml's")
    parser.add_argument("--precision", default="bf16", help="bf16 needs AVX-512 BF16; else fp32")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = {key: getattr(args, key) for key in CACHE_KEYS}
    saved_path = out / "settings.json"
    if saved_path.is_file():
        changed = changed_settings(json.loads(saved_path.read_text()), settings)
        if changed:
            sys.exit(f"{out} holds a run with other {', '.join(changed)}; choose another --out")
    saved_path.write_text(json.dumps(settings, indent=1) + "\n")

    heldout, pool = split_by_product(json.loads(AMAZON.read_text(encoding="utf-8")), args.heldout, args.seed)
    heldout_path = out / "amazon-heldout.json"
    heldout_path.write_text(json.dumps(heldout, ensure_ascii=False))
    asked = pool[: max(args.sizes)]
    # with span edges; an older shown.json held token-edge spans
    spans = shown_answers(args.base, asked, out / "shown-edges.json")
    labels = [simulated_label(e, s, args.base) for e, s in zip(asked, spans, strict=True)]

    (out / "base").mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = [
        {"corrections": "base", **scores(args.base, out / "base", heldout_path, args.dev_limit)}
    ]
    for size in args.sizes:
        folder = out / f"n{size}"
        folder.mkdir(exist_ok=True)
        export = None
        if size:
            export = folder / "labels.json"
            if not export.is_file():
                feedback_dir = folder / "index"
                if not (feedback_dir / "feedback.sqlite3").is_file():
                    store = FeedbackStore(feedback_dir)
                    for label in labels[:size]:
                        store.add(label)
                    store.close()
                run(
                    kotae("feedback", "export", "--index-dir", str(feedback_dir), "--out", str(export)),
                    folder / "export.log",
                )
        model = folder / "reader"
        timing = folder / "train_cpu_seconds.json"
        if not timing.is_file():
            config = adapt_config(args.base, export, model, args.replay_weight, args.epochs)
            config["precision"] = args.precision
            if args.learning_rate:
                config["learning_rate"] = args.learning_rate
            (folder / "adapt.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            started = time.perf_counter()
            cpu = run(kotae("train", "--config", str(folder / "adapt.yaml")), folder / "train.log")
            timing.write_text(json.dumps({"cpu_seconds": cpu, "wall_seconds": time.perf_counter() - started}))
        cost = json.loads(timing.read_text())
        verdicts = {v: sum(1 for label in labels[:size] if label.verdict == v) for v in ("correct", "wrong")}
        rows.append(
            {
                "corrections": size,
                **verdicts,
                **cost,
                **scores(str(model), folder, heldout_path, args.dev_limit),
            }
        )

    (out / "results.json").write_text(
        json.dumps({"settings": vars(args) | {"out": str(out)}, "rows": rows}, indent=1, default=str) + "\n"
    )
    print(
        f"{'corrections':>11} | {'amazon held-out EM/F1':>21} | {'JaQuAD dev EM/F1':>16} | {'squad-dev EM/F1':>15} | CPU min"
    )
    for row in rows:
        cells = [
            f"{row[k]['exact_match']:.1f} / {row[k]['f1']:.1f}"
            for k in ("amazon-heldout", "jaquad-dev", "squad-dev")
        ]
        minutes = f"{row['cpu_seconds'] / 60:.1f}" if "cpu_seconds" in row else "-"
        print(f"{row['corrections']!s:>11} | {cells[0]:>21} | {cells[1]:>16} | {cells[2]:>15} | {minutes}")


if __name__ == "__main__":
    main()
