"""The ``kotae eval`` job: open-domain evaluation of a pipeline config on a SQuAD-format data set.

The imperative shell around :mod:`kotae.pipeline.evaluation` (the command line is
:mod:`kotae.pipeline.eval_cli`):

1. Read the data set's questions (answerable ones; ``--limit`` keeps the first N) and index *every*
   context of the data set with ``kotae index``'s job, incrementally, in its own index folder
   (``$KOTAE_HOME/eval/<data>-<hash>`` unless ``--index-dir``; with Milvus, a collection of its own),
   never the config's own index.
2. Build the config's pipeline once and ask every question with no context, one at a time, timing
   each: the top answer gives end-to-end EM/F1 and the time gives latency.
3. Ask the same retriever components for ``max(20, retriever.top_k)`` passages (so recall@20 and MRR
   exist even when the pipeline reads 10) and find the rank of the first hit.
4. Run the reader alone over each question's gold context (``kotae evaluate``'s code).
5. Write ``report.json``, ``report.md``, ``predictions.jsonl`` and plots to ``--out``.

Example::

    run = run_eval("configs/pipeline/bm25.yaml", "../shared/data/jaquad/dev", limit=200)
    print(run.summary["recall@5"], run.summary["f1"])
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kotae.errors import KotaeError
from kotae.pipeline.config import PipelineConfig
from kotae.pipeline.evaluation import (
    RECALL_KS,
    EvalQuestion,
    QuestionResult,
    breakdown,
    recall_curve,
    score_question,
    squad_questions,
    summarize,
)
from kotae.progress import progress as progress_of

if TYPE_CHECKING:
    from haystack import Document

    from kotae.pipeline.qa import QuestionAnswerer

JSON_KEYS = (
    "recall@1",
    "recall@5",
    "recall@20",
    "recall@5_any",
    "mrr",
    "reader_exact_match",
    "reader_f1",
    "exact_match",
    "f1",
    "latency_p50_ms",
    "latency_p95_ms",
    "questions_per_second",
    "n",
    "reader_runtime",
)
"""What ``kotae eval --json`` prints (``latency_mean_ms`` too)."""


@dataclass
class EvalRun:
    """One evaluation: the headline numbers, every question's result, the full report and where it went."""

    summary: dict[str, Any]
    results: list[QuestionResult]
    report: dict[str, Any]
    out_dir: Path
    written: list[Path]


# ------------------------------------------------------------------ data


def squad_files(data: str | Path) -> list[Path]:
    """The SQuAD ``.json`` files of ``data`` (a file, or a folder's files in name order), absolute.

    Absolute paths make the indexed document ids independent of the working directory, so a later
    run from elsewhere reuses the index.
    """
    path = Path(data).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".json")
        if not files:
            raise KotaeError(f"{path}: no SQuAD-format .json files in this folder")
    elif path.is_file():
        if path.suffix != ".json":
            raise KotaeError(f"{path}: expected a SQuAD-format .json file (or a folder of them)")
        files = [path]
    else:
        raise KotaeError(f"data not found: {path}")
    return [f.resolve() for f in files]


def load_questions(files: Sequence[Path], limit: int | None = None) -> list[EvalQuestion]:
    """The first ``limit`` answerable questions of ``files``, ids made unique (``id#2`` ...)."""
    questions: list[EvalQuestion] = []
    seen: dict[str, int] = {}
    for file in files:
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise KotaeError(f"{file}: cannot be read ({error})".splitlines()[0]) from None
        except json.JSONDecodeError as error:
            raise KotaeError(f"{file}: not valid JSON ({error.msg} at line {error.lineno})") from None
        if not isinstance(document, dict) or not isinstance(document.get("data"), list):
            raise KotaeError(f"{file}: expected SQuAD-format JSON with a top-level 'data' list")
        try:
            for question in squad_questions(document, str(file)):
                if limit is not None and len(questions) >= limit:
                    return questions
                count = seen.get(question.id, 0) + 1
                seen[question.id] = count
                if count > 1:
                    question = replace(question, id=f"{question.id}#{count}")
                questions.append(question)
        except (KeyError, TypeError, ValueError) as error:
            raise KotaeError(f"{file}: not SQuAD format (missing or bad field {error})") from None
    if not questions:
        raise KotaeError(f"{files[0].parent}: no answerable questions found")
    return questions


def default_index_dir(config: PipelineConfig, files: Sequence[Path]) -> Path:
    """``$KOTAE_HOME/eval/<data>-<hash>``: one index per data set and embedder/passage settings."""
    from kotae.models import kotae_home

    key = json.dumps(
        [
            [str(f) for f in files],
            config.embedder.model,
            config.embedder.passage_prefix,
            config.index.passage_tokens,
            config.index.overlap_tokens,
            config.index.faiss_factory,
        ]
    )
    name = files[0].parent.name if len(files) > 1 else files[0].stem
    return kotae_home() / "eval" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def eval_index_overrides(config: PipelineConfig, directory: Path) -> list[str]:
    """Settings that put the data set's index in ``directory``, and with ``index.store: milvus`` in a
    collection of its own (``<collection>_eval_<hash of directory>``), never the config's collection."""
    overrides = [f"index.dir={json.dumps(str(directory))}"]
    if config.index.store == "milvus":
        digest = hashlib.sha256(str(directory).encode()).hexdigest()[:10]
        overrides.append(f"index.milvus_collection={config.index.milvus_collection}_eval_{digest}")
    return overrides


def data_name(data: str | Path) -> str:
    """A short name for the data set: ``jaquad/dev``, ``squad-dev``, ``tiny.json``."""
    path = Path(data).expanduser().resolve()
    return f"{path.parent.name}/{path.name}" if path.is_dir() else path.name


# ------------------------------------------------------------------ machine


def command_line(
    config_path: str | Path | None,
    data: str | Path,
    index_dir: str | Path | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    json_output: bool = False,
    pipeline_path: str | Path | None = None,
) -> str:
    """The ``kotae eval`` command that reproduces a run, for the report."""
    args = ["kotae", "eval"]
    if config_path is not None:
        args += ["--config", str(config_path)]
    if pipeline_path is not None:
        args += ["--pipeline", str(pipeline_path)]
    args += ["--data", str(data)]
    if index_dir is not None:
        args += ["--index-dir", str(index_dir)]
    if limit is not None:
        args += ["--limit", str(limit)]
    for item in overrides:
        args += ["--set", item]
    if out is not None:
        args += ["--out", str(out)]
    if json_output:
        args.append("--json")
    return shlex.join(args)


def describe_hardware() -> dict[str, Any]:
    """CPU model, cores, torch threads, GPU (if any) and the load when the run started."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    text = f"{cpu}, {usable} cores usable of {cores}, torch {torch.get_num_threads()} threads, GPU {gpu or 'none'}"
    if load is not None:
        text += f", load average {load:.1f} at start"
    return {
        "cpu": cpu,
        "cores": cores,
        "cores_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "load_average_1m": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "text": text,
    }


# ------------------------------------------------------------------ asking


def retrieve_deep(components: Mapping[str, Any], question: str, depth: int) -> list[Document]:
    """The pipeline's own retriever components (and joiner) asked for ``depth`` passages."""
    lists: list[list[Document]] = []
    if "dense_retriever" in components:
        embedding = components["query_embedder"].run(text=question)["embedding"]
        lists.append(components["dense_retriever"].run(query_embedding=embedding, top_k=depth)["documents"])
    if "bm25_retriever" in components:
        lists.append(components["bm25_retriever"].run(query=question, top_k=depth)["documents"])
    if "joiner" in components:
        documents: list[Document] = components["joiner"].run(documents=lists, top_k=depth)["documents"]
        return documents
    return lists[0] if lists else []


def read_gold_contexts(
    config: PipelineConfig, reader_component: Any, questions: Sequence[EvalQuestion], progress: bool = False
) -> tuple[dict[str, str], float]:
    """The reader alone on each question's gold context, as ``kotae evaluate`` runs it.

    Kotae's reader reads with what it loaded (:attr:`~kotae.pipeline.reader.KotaeExtractiveReader.loaded`:
    its runtime, settings and span edges); for Haystack's reader kotae's code reads the same model in
    torch, with the model's ``reader_config.json`` and the config's explicit values on top, and the span
    edges of the model folder's ``span_edges.json``, as ``kotae evaluate`` does.
    """
    from kotae.reader_training.data import Answer, QAExample
    from kotae.reader_training.evaluate import LoadedReader, open_reader

    reader = getattr(reader_component, "loaded", None)
    if not isinstance(reader, LoadedReader):
        section = config.reader
        explicit = {
            "max_length": section.max_length,
            "stride": section.stride,
            "max_question_length": section.max_question_length,
            "max_answer_length": section.max_answer_length,
            "n_best": section.n_best,
            "batch_size": section.batch_size,
        }
        reader = open_reader(section.model, "torch", section.device, explicit)
    examples = [
        QAExample(
            id=q.id,
            question=q.question,
            context=q.context,
            answers=tuple(Answer(t, s) for t, s in zip(q.answers, q.answer_starts, strict=False)),
            title=q.title,
        )
        for q in questions
    ]
    report = reader.evaluate(examples, allow_null=False, progress=progress)
    return {p.id: p.text for p in report.predictions}, report.seconds


def reader_runtime(reader_component: Any) -> str:
    """Which runtime answered: kotae's reader says (``runtime_name``); Haystack's reader runs torch."""
    name = getattr(reader_component, "runtime_name", None)
    return str(name) if name else "torch (Haystack TransformersExtractiveReader)"


def ask_all(
    answerer: QuestionAnswerer, questions: Sequence[EvalQuestion], depth: int, progress: bool
) -> tuple[list[str], list[float], list[list[Document]]]:
    """Each question through the whole pipeline (timed), then through the retrievers ``depth`` deep."""
    components = {name: answerer.pipeline.get_component(name) for name in answerer.components}
    answerer.ask(questions[0].question)  # warm-up: lazy loads (BM25 arrays, first forward pass)
    predictions: list[str] = []
    latencies: list[float] = []
    retrieved: list[list[Document]] = []
    with progress_of("asking", len(questions), progress) as advance:
        for question in questions:
            started = time.perf_counter()
            answers = answerer.ask(question.question)
            latencies.append(time.perf_counter() - started)
            top = next((a.data for a in answers if a.data is not None), None)
            predictions.append(top or "")
            retrieved.append(retrieve_deep(components, question.question, depth))
            advance()
    return predictions, latencies, retrieved


def default_out_dir(config_name: str, data: str | Path) -> Path:
    """Where a report goes without ``--out``: ``runs/eval/<config>-<data set>``."""
    return Path("runs") / "eval" / f"{Path(config_name).stem}-{Path(data).name}"


def _with_pipeline_file(
    config_path: str | Path | None, pipeline_path: str | Path | None, overrides: Sequence[str]
) -> list[str]:
    """The overrides, after those a Haystack pipeline YAML stands for when one is given."""
    if pipeline_path is None:
        return list(overrides)
    from kotae.pipeline.haystack_yaml import read_pipeline_file

    if config_path is not None:
        raise KotaeError("give --config or --pipeline, not both")
    return [*read_pipeline_file(Path(pipeline_path)).overrides, *overrides]


# ------------------------------------------------------------------ the job


def run_eval(
    config_path: str | Path | None,
    data: str | Path,
    index_dir: str | Path | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
    command: str | None = None,
    log: Callable[[str], None] = lambda message: None,
    pipeline_path: str | Path | None = None,
) -> EvalRun:
    """Index ``data``'s contexts, ask its questions with no context, score, and write the report.

    ``pipeline_path`` (instead of ``config_path``) takes the settings from a Haystack pipeline YAML
    (:func:`kotae.pipeline.haystack_yaml.read_pipeline_file`: embedder, retrievers, reader), with
    ``overrides`` on top; the index is the data set's, as with a config.
    """
    from kotae.indexing.job import run_index
    from kotae.pipeline.config import load_pipeline_config
    from kotae.pipeline.eval_report import write_report
    from kotae.pipeline.qa import QuestionAnswerer

    overrides = _with_pipeline_file(config_path, pipeline_path, overrides)
    config = load_pipeline_config(config_path, list(overrides))
    files = squad_files(data)
    questions = load_questions(files, limit)
    directory = Path(index_dir).expanduser() if index_dir is not None else default_index_dir(config, files)
    config = load_pipeline_config(config_path, [*overrides, *eval_index_overrides(config, directory)])
    config_name = Path(source).name if (source := config_path or pipeline_path) else "built-in defaults"
    out_dir = Path(out) if out is not None else default_out_dir(config_name, data)
    hardware = describe_hardware()

    log(f"indexing {len(files)} file(s) into {directory} (incremental)")
    index = run_index(config, files, progress=progress)
    for line in index.lines()[1:3]:
        log(line)
    index_json = {**index.to_json(), "documents": index.added + index.updated + index.unchanged}

    answerer = QuestionAnswerer.from_config(config, config_path)
    depth = max(max(RECALL_KS), config.retriever.top_k)
    log(
        f"asking {len(questions)} questions ({config.retriever.type} retrieval, {depth} passages deep for recall)"
    )
    started = time.perf_counter()
    predictions, latencies, retrieved = ask_all(answerer, questions, depth, progress)
    asking_seconds = time.perf_counter() - started

    log("reader alone on the gold contexts")
    reader = answerer.pipeline.get_component("reader")
    reader_predictions, reader_seconds = read_gold_contexts(config, reader, questions, progress)

    passages = [[(d.content or "", (d.meta or {}).get("document_id")) for d in found] for found in retrieved]
    results = [
        score_question(question, prediction, reader_predictions.get(question.id, ""), latency, found)
        for question, prediction, latency, found in zip(
            questions, predictions, latencies, passages, strict=True
        )
    ]
    ids = [[source for _, source in found] for found in passages]
    summary: dict[str, Any] = {**summarize(results, depth), "reader_runtime": reader_runtime(reader)}
    ranks = [r.rank for r in results]
    report: dict[str, Any] = {
        "summary": summary,
        "command": command or command_line(config_path, data, index_dir, limit, out, overrides),
        "config": str(config_path) if config_path else None,
        "config_name": config_name,
        "data": str(data),
        "data_name": data_name(data),
        "files": [str(f) for f in files],
        "index_dir": str(directory),
        "index": index_json,
        "settings": {
            "retriever_type": config.retriever.type,
            "retriever_top_k": config.retriever.top_k,
            "retrieval_depth": depth,
            "reader_type": config.reader.type,
            "reader_model": config.reader.model,
            "reader_runtime": summary["reader_runtime"],
            "reader_top_k": config.reader.top_k,
            "limit": limit,
        },
        "hardware": hardware,
        "recall_curve": {
            "own": recall_curve(ranks, depth),
            "any": recall_curve([r.rank_any for r in results], depth),
        },
        "by_question_type": breakdown(results, "question_type"),
        "by_language": breakdown(results, "language"),
        "seconds": {"asking": round(asking_seconds, 2), "reader_alone": round(reader_seconds, 2)},
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    written = write_report(out_dir, report, results, questions, ids)
    return EvalRun(summary, results, report, out_dir, written)
