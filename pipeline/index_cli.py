"""``kotae index``: the command-line shell around :func:`kotae.indexing.job.run_index` (heavy imports inside)."""

from __future__ import annotations

import json as json_module
from pathlib import Path

import typer


def index(
    corpus: list[Path] = typer.Option(
        [], "--corpus", help="Files or folders to index: --corpus PATH [PATH...]."
    ),
    more: list[Path] | None = typer.Argument(None, help="More corpus paths.", show_default=False),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Pipeline YAML path or shipped config (default, dense, bm25); its embedder and index sections.",
    ),
    index_dir: Path | None = typer.Option(None, "--index-dir", help="Index directory (default: index.dir)."),
    full: bool = typer.Option(False, "--full", help="Rebuild from scratch instead of updating."),
    json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    set_overrides: list[str] = typer.Option(
        [], "--set", help="Override a config key, e.g. --set index.passage_tokens=150."
    ),
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="Accept a corpus with no documents (the index is emptied to match)."
    ),
    engine: str | None = typer.Option(
        None,
        "--engine",
        help="Where passages are split and embedded: local or ray. Default: the config's index.engine (local).",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        envvar="RAY_ADDRESS",
        help="Join this Ray cluster (auto, host:port, ray://host:10001); default: start Ray here.",
    ),
    follow_symlinks: bool = typer.Option(
        False,
        "--follow-symlinks",
        help="Also read symbolic links that lead out of a corpus folder (skipped and listed by default).",
    ),
    ray_input: str | None = typer.Option(
        None,
        "--ray-input",
        help="How documents reach Ray's workers: data (sent by this process) or paths (workers read "
        "the files themselves; needs the corpus at the same path on every node). Default: "
        "index.ray_input (data).",
    ),
) -> None:
    """Index a corpus into passages, embeddings (FAISS) and BM25; re-runs only embed what changed."""
    from kotae.errors import KotaeError
    from kotae.indexing.job import run_index
    from kotae.pipeline.config import load_pipeline_config
    from kotae.progress import quiet_third_party

    corpus = [*corpus, *(more or [])]
    if not corpus:
        raise KotaeError("no corpus given; pass --corpus PATH [PATH...] (files or folders)")
    if engine is not None and engine not in ("local", "ray"):
        raise KotaeError(f"--engine {engine!r}: expected local or ray")
    if ray_input is not None and ray_input not in ("data", "paths"):
        raise KotaeError(f"--ray-input {ray_input!r}: expected data or paths")
    overrides = list(set_overrides)
    if engine is not None:
        overrides.append(f"index.engine={engine}")
    settings = load_pipeline_config(config, overrides)
    if ray_address:
        settings.index.ray_address = ray_address
    quiet_third_party()  # kotae shows its own progress: a bar on a terminal, lines in a log
    summary = run_index(
        settings,
        list(corpus),
        index_dir=index_dir,
        full=full,
        progress=True,
        ray_input=ray_input,
        allow_empty=allow_empty,
        follow_symlinks=follow_symlinks,
    )
    if json:
        typer.echo(json_module.dumps(summary.to_json(), ensure_ascii=False))
        return
    from kotae.terminal import printable

    for line in summary.lines():  # file names and reasons come from the corpus
        typer.secho(printable(line), fg=typer.colors.YELLOW if line.startswith(("warning", "  ")) else None)
