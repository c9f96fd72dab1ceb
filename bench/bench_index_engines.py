"""Local engine vs Ray engine on JaQuAD train contexts: passages/s, start-up overhead, peak memory.

    .venv/bin/python bench/bench_index_engines.py --documents 300                       # e5-small
    .venv/bin/python bench/bench_index_engines.py --documents 9713 --model tiny          # engine overhead

Each engine runs in a fresh process (``--child``) on a fresh index, so imports, Ray start-up and the
model load are all counted; the parent samples the PSS (proportional set size, so shared pages such
as Ray's object store are not counted twice) of the child's whole process tree, Ray's included.

- ``seconds``: the whole ``run_index`` call (read, diff, Ray start, actors, split, embed, commit, BM25).
- ``first_result_seconds``: from the call to the first document's passages and vectors.
- ``steady_passages_per_second``: passages after the first result / time from first to last result.
- ``overhead_seconds``: the same engine on one document (start-up cost alone).

``--model tiny`` uses kotae.indexing.testing's 16-d one-layer model: it measures the engine, not the model.
Prints one JSON object per engine and writes them to ``--out``. ``--compare`` runs nothing: it
compares the stores the engines left in ``--work`` (same passage ids, texts, metadata and manifest;
the largest vector difference), e.g. after separate runs per engine::

    .venv/bin/python bench/bench_index_engines.py --compare --engines local ray
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "jaquad" / "train"


def write_subset(source: Path, documents: int, target: Path) -> Path:
    """The first ``documents`` distinct contexts of a SQuAD-style folder, as one JSONL file."""
    out = target / f"jaquad-train-{documents}.jsonl"
    if out.exists():
        return out
    target.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    lines: list[str] = []
    for path in sorted(source.glob("*.json")):
        for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                if paragraph["context"] in seen or len(lines) >= documents:
                    continue
                seen.add(paragraph["context"])
                lines.append(
                    json.dumps({"text": paragraph["context"], "title": article["title"]}, ensure_ascii=False)
                )
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def child(args: argparse.Namespace) -> None:
    from kotae.indexing import engine as engines
    from kotae.indexing.job import run_index
    from kotae.pipeline.config import load_pipeline_config

    marks: list[tuple[float, int]] = []
    original = engines.make_engine

    def timed_engine(*a, **k):  # type: ignore[no-untyped-def]
        inner = original(*a, **k)

        class Timed:
            def run(self, texts, settings):  # type: ignore[no-untyped-def]
                for item in inner.run(texts, settings):
                    marks.append((time.perf_counter(), len(item[1])))
                    yield item

        return Timed()

    import kotae.indexing.job

    kotae.indexing.job.make_engine = timed_engine  # type: ignore[assignment]
    config = load_pipeline_config(None, [f"embedder.model={args.model}", *args.overrides])
    shutil.rmtree(args.index_dir, ignore_errors=True)
    started = time.perf_counter()
    summary = run_index(config, [args.corpus], args.index_dir)
    result: dict[str, float | None] = {
        "documents": summary.added,
        "passages": summary.passages_added,
        "seconds": round(summary.seconds, 2),
        "passages_per_second": round(summary.passages_per_second, 2),
    }
    if marks:
        first, last = marks[0][0], marks[-1][0]
        later = sum(n for _, n in marks[1:])
        result["first_result_seconds"] = round(first - started, 2)
        result["steady_passages_per_second"] = round(later / (last - first), 2) if last > first else None
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)


def tree_pss(pid: int) -> int:
    import psutil

    total = 0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_full_info().pss
    return total


def measure(corpus: Path, engine: str, args: argparse.Namespace, index_dir: Path) -> dict:
    overrides = [f"index.engine={engine}", *args.overrides]
    command = [sys.executable, __file__, "--child", "--corpus", str(corpus), "--model", args.model]
    command += ["--index-dir", str(index_dir)] + [f"--set={o}" for o in overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_pss(process.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{engine}: child failed with {process.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_pss_mb"] = round(peak[0] / 2**20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kotae-bench-engines"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=c")
    parser.add_argument("--compare", action="store_true", help="compare the stores in --work; run nothing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--index-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.compare:
        first, *others = args.engines
        from kotae.indexing.testing import store_differences

        for other in others:
            result = store_differences(args.work / f"index-{first}", args.work / f"index-{other}")
            print(json.dumps({"engines": [first, other], **result}), flush=True)
        return
    if args.model == "tiny":
        from kotae.indexing.testing import build_tiny_model

        folder = args.work / "tiny"
        args.model = str(folder / "model") if (folder / "model").exists() else str(build_tiny_model(folder))
    corpus = write_subset(args.data, args.documents, args.work)
    one = write_subset(args.data, 1, args.work)
    results = []
    for engine in args.engines:
        overhead = measure(one, engine, args, args.work / f"index-{engine}-1")
        result = measure(corpus, engine, args, args.work / f"index-{engine}")
        result.update(engine=engine, overhead_seconds=overhead["seconds"], model=Path(args.model).name)
        result["load_average"] = round(os.getloadavg()[0], 1)
        result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
        result["settings"] = args.overrides
        print(json.dumps(result, ensure_ascii=False), flush=True)
        results.append(result)
    if args.out:
        args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
