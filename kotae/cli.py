"""The ``kotae`` console script: one typer app; each job registers its own commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer

from kotae.errors import KotaeError
from kotae.terminal import printable

app = typer.Typer(
    name="kotae",
    help="kotae (答え): offline-first, Japanese-first open-domain question answering.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    """``kotae --version``: the installed package's version, then exit."""
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"kotae {version('kotae')}")
        except PackageNotFoundError:  # a checkout run without installing it
            typer.echo("kotae (not installed: run `pip install -e .` for its version)")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False, "--version", help="Print kotae's version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """kotae (答え): offline-first, Japanese-first open-domain question answering."""


def disk_full_message(error: BaseException) -> str | None:
    """One line for a full disk (ENOSPC, or SQLite's "database or disk is full"), else None."""
    import errno
    import sqlite3

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" while writing {error.filename}" if error.filename else ""
    elif isinstance(error, sqlite3.OperationalError) and "full" in str(error).lower():
        where = " while writing the index database (store.sqlite3)"
    else:
        return None
    return (
        f"the disk is full{where}; everything committed before is kept. "
        "Free some space and run the same command again (it resumes from the last commit)"
    )


def main() -> None:
    """Entry point: run the app, turning KotaeError (and a full disk) into one line on stderr and exit code 2."""
    try:
        app()
    except KotaeError as error:
        typer.secho(f"error: {printable(str(error))}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Exception as error:
        cause: BaseException | None = error
        message = None
        while cause is not None and message is None:  # also when wrapped by another error
            message = disk_full_message(cause)
            cause = cause.__cause__ or cause.__context__
        if message is None:
            raise
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(2)


models_app = typer.Typer(help="Prepare and inspect the built-in offline models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def models_prepare(
    aliases: list[str] = typer.Argument(None, help="Aliases to prepare (default: all)."),
) -> None:
    """Materialise model aliases into $KOTAE_HOME/models (idempotent; safe to interrupt); a reader
    also gets its ONNX forms (float32, int8) in $KOTAE_HOME/runtime when onnxruntime is installed."""
    from kotae import models
    from kotae.progress import quiet_third_party

    quiet_third_party()

    def log(message: str) -> None:
        typer.echo(message, err=True)

    for name in aliases or list(models.ALIASES):
        path, did_work = models.prepare(name, log=log)
        state = "prepared" if did_work else "already prepared, nothing to do"
        typer.echo(f"{name}: {state} ({path})")
        if name in models.READERS:
            _prepare_reader_runtime(name, path, log)


def _prepare_reader_runtime(name: str, folder: Path, log: Callable[[str], None]) -> None:
    """The reader's ONNX forms (reader runtimes ``onnx``, ``onnx-int8``, ``auto``), unless onnxruntime is missing."""
    from kotae.reader_training.evaluate import load_model
    from kotae.reader_training.onnx_form import is_onnx_prepared, onnxruntime_version, prepare_onnx

    if onnxruntime_version() is None:
        typer.echo(
            f"{name} ONNX forms (float32, int8): skipped, onnxruntime is not installed (the reader runs on torch)"
        )
        return
    done = is_onnx_prepared(folder)
    path = prepare_onnx(folder, lambda: load_model(folder), log)
    state = "already prepared, nothing to do" if done else "prepared"
    typer.echo(f"{name} ONNX forms (float32, int8): {state} ({path})")


@models_app.command("list")
def models_list() -> None:
    """Show each alias, whether it is prepared, its path and size."""
    from rich.console import Console
    from rich.table import Table

    from kotae import models

    table = Table("alias", "prepared", "size", "path")
    for name in models.ALIASES:
        path = models.alias_path(name)
        prepared = models.is_prepared(name)
        size = f"{models.folder_size(path) / 1e6:.0f} MB" if prepared else "-"
        table.add_row(name, "yes" if prepared else "no", size, str(path))
    Console().print(table)


@models_app.command("check")
def models_check(
    alias: str = typer.Argument("multilingual-e5-small", help="Model alias or directory to load."),
) -> None:
    """Load a sentence embedder (preparing it if needed) and embed a Japanese and an English sentence."""
    from kotae.model_files import load_sentence_transformer
    from kotae.models import resolve_model
    from kotae.progress import quiet_third_party

    quiet_third_party()

    path = resolve_model(alias)
    model = load_sentence_transformer(path)
    pairs = [
        ("日本の首都はどこですか？", "東京は日本の首都であり、最大の都市である。"),
        ("What is the capital of Japan?", "Tokyo is the capital and largest city of Japan."),
    ]
    prompts = {k: v or "" for k, v in (model.prompts or {}).items()}
    for question, passage in pairs:
        q = model.encode(prompts.get("query", "") + question, normalize_embeddings=True)
        p = model.encode(prompts.get("passage", "") + passage, normalize_embeddings=True)
        typer.echo(f"{question} ↔ {passage}\n  dim={q.shape[0]} cosine={float(q @ p):.3f}")


from kotae.reader_training.cli import evaluate as _evaluate  # noqa: E402
from kotae.reader_training.cli import train as _train  # noqa: E402

app.command("train")(_train)
app.command("evaluate")(_evaluate)

from kotae.pipeline.index_cli import index as _index  # noqa: E402

app.command("index")(_index)

from kotae.pipeline.cli import ask as _ask  # noqa: E402
from kotae.pipeline.cli import pipeline_app as _pipeline_app  # noqa: E402
from kotae.pipeline.cli import serve as _serve  # noqa: E402

app.command("ask")(_ask)
app.command("serve")(_serve)
app.add_typer(_pipeline_app, name="pipeline")

from kotae.pipeline.eval_cli import eval_command as _eval  # noqa: E402

app.command("eval")(_eval)

from kotae.pipeline.feedback_cli import feedback_app as _feedback_app  # noqa: E402

app.add_typer(_feedback_app, name="feedback")
