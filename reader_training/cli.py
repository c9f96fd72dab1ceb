"""``kotae train`` and ``kotae evaluate``: thin typer commands over :mod:`kotae.reader_training.train` and
:mod:`kotae.reader_training.evaluate`. Heavy imports (torch, transformers) happen inside the commands so
``kotae --help`` stays fast."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Literal, cast

import typer

from kotae.errors import KotaeError


def _log(message: str) -> None:
    typer.echo(message, err=True)


def train(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="training YAML, e.g. configs/train/jaquad-small.yaml")
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a config key, KEY=VALUE (YAML value); repeatable"),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue from the last checkpoint in output_dir")
    ] = False,
) -> None:
    """Fine-tune an extractive QA reader on SQuAD-format data; writes a model folder with scores."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from kotae.progress import quiet_third_party
    from kotae.reader_training.config import load_train_config
    from kotae.reader_training.train import run_training

    quiet_third_party()  # kotae logs loading and progress itself

    settings = load_train_config(config, set_ or [])
    command = " ".join(
        [
            "kotae train --config",
            shlex.quote(str(config)),
            *(f"--set {shlex.quote(item)}" for item in set_ or []),
        ]
    )
    outcome = run_training(settings, resume=resume, log=_log, command=command)
    for name, scores in outcome.metrics["dev"].items():
        typer.echo(f"dev {name}: EM {scores['exact_match']:.2f}  F1 {scores['f1']:.2f}  n {scores['n']}")
    typer.echo(f"model: {outcome.output_dir}")


def evaluate(
    model: Annotated[str, typer.Option("--model", "-m", help="reader folder (or alias / hub id)")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="SQuAD JSON/JSONL file, shard directory or HF dataset")
    ],
    language: Annotated[
        str, typer.Option(help="scoring: en (words), ja (characters), auto (per example)")
    ] = "auto",
    limit: Annotated[int | None, typer.Option(help="score only the first N questions", min=1)] = None,
    max_length: Annotated[
        int | None, typer.Option(help="window length in tokens (default: as trained)")
    ] = None,
    stride: Annotated[int | None, typer.Option(help="window overlap in tokens (default: as trained)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="windows per forward pass")] = None,
    max_answer_length: Annotated[int | None, typer.Option(help="longest answer in tokens")] = None,
    null_threshold: Annotated[float | None, typer.Option(help="SQuAD v2: null-score margin")] = None,
    device: Annotated[str | None, typer.Option(help="torch device, e.g. cpu or cuda")] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="CPU threads for torch and ONNX Runtime (default: torch's choice)", min=1),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="how the model runs: torch (float32), torch-bf16, onnx (float32), onnx-int8 or auto (docs/speed.md)"
        ),
    ] = "torch",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    predictions: Annotated[Path | None, typer.Option(help="also write {id: answer} JSON here")] = None,
) -> None:
    """Score the reader alone on gold contexts (EM, F1); for the whole pipeline end-to-end, see `kotae eval`.

    Reads SQuAD-format questions with their own context passages and scores a reader folder on
    them: EM, F1, count and examples/s. No index and no retrieval are involved; `kotae eval`
    measures retrieval + reader together over an index of the set's contexts."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if language not in ("auto", "en", "ja"):
        raise KotaeError(f"--language {language!r}: use auto, en or ja")
    from kotae.progress import quiet_third_party
    from kotae.reader_training.evaluate import evaluate_folder

    quiet_third_party()

    if threads:
        import torch

        torch.set_num_threads(threads)

    report = evaluate_folder(
        model,
        data,
        language=cast(Literal["auto", "en", "ja"], language),
        limit=limit,
        overrides={
            "max_length": max_length,
            "stride": stride,
            "batch_size": batch_size,
            "max_answer_length": max_answer_length,
            "null_score_threshold": null_threshold,
        },
        device=device,
        progress=True,  # a bar on a terminal, lines in a log
        runtime=runtime,
        log=_log,
    )
    if predictions is not None:
        predictions.write_text(
            json.dumps({p.id: p.text for p in report.predictions}, ensure_ascii=False, indent=1) + "\n",
            encoding="utf-8",
        )
    summary = report.summary()
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
        return
    if report.load_report is not None:
        _log(report.load_report.summary())
    typer.echo(
        f"EM {summary['exact_match']:.2f}  F1 {summary['f1']:.2f}  n {summary['n']}  "
        f"{summary['examples_per_second']:.1f} examples/s  runtime {summary['runtime']}"
    )
    if "has_ans_f1" in summary:
        typer.echo(
            f"has answer: EM {summary['has_ans_exact_match']:.2f} F1 {summary['has_ans_f1']:.2f} "
            f"n {summary['has_ans_n']}; no answer: EM {summary['no_ans_exact_match']:.2f} n {summary['no_ans_n']}"
        )
