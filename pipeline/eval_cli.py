"""``kotae eval``: the command line over :func:`kotae.pipeline.eval_job.run_eval` (the job) and its table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kotae.pipeline.eval_job import JSON_KEYS, command_line, run_eval


def eval_command(
    data: Annotated[
        Path,
        typer.Option("--data", "-d", help="SQuAD-format .json file, or a folder of them (e.g. JaQuAD dev)"),
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="pipeline YAML path, or a shipped config: default, dense, bm25"),
    ] = None,
    index_dir: Annotated[
        Path | None,
        typer.Option("--index-dir", help="index for the data set's contexts (default: $KOTAE_HOME/eval/...)"),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="ask only the first N questions")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="report folder (default: runs/eval/<config>-<data>)"),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="override a config key, KEY=VALUE, e.g. reader.model=runs/reader; repeatable"
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", min=1, help="CPU threads for torch and ONNX Runtime (default: torch's choice)"
        ),
    ] = None,
    pipeline: Annotated[
        Path | None,
        typer.Option(
            "--pipeline",
            help="a Haystack pipeline YAML (kotae pipeline show) instead of --config: its embedder, "
            "retrievers and reader, on an index of the data set",
        ),
    ] = None,
) -> None:
    """Measure the whole pipeline end-to-end (retrieval + reader over an index); for the reader alone on gold contexts, see `kotae evaluate`.

    Open-domain evaluation: index a SQuAD-format set's contexts, ask its questions with no context,
    report retrieval recall@1/5/20 and MRR, reader and end-to-end EM/F1, latency; write report.md,
    report.json and plots. `kotae evaluate` instead scores a reader folder on each question's own
    (gold) context, with no retrieval."""
    from kotae.pipeline.cli import _quiet

    _quiet()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from kotae.pipeline.eval_report import rounded

    def log(message: str) -> None:
        typer.echo(message, err=True)

    run = run_eval(
        config,
        data,
        index_dir=index_dir,
        limit=limit,
        out=out,
        overrides=list(set_ or []),
        progress=True,
        command=command_line(config, data, index_dir, limit, out, set_ or [], json_output, pipeline),
        log=log,
        pipeline_path=pipeline,
    )
    summary = rounded(run.summary)
    if json_output:
        typer.echo(json.dumps({k: summary[k] for k in (*JSON_KEYS, "latency_mean_ms") if k in summary}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "metric", "value", title=f"kotae eval: {run.report['config_name']} on {run.report['data_name']}"
    )
    for key in JSON_KEYS:
        if key in summary:
            table.add_row(key, str(summary[key]))
    console = Console()
    console.print(table)
    console.print(f"hardware: {run.report['hardware']['text']}")
    console.print(f"report: {run.out_dir / 'report.md'}")
