"""The ``kotae`` console script: one typer app; each job registers its own commands."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402

from kotae.errors import KotaeError  # noqa: E402

app = typer.Typer(
    name="kotae",
    help="kotae (答え): offline-first, Japanese-first open-domain question answering.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Entry point: run the app, turning KotaeError into one line on stderr and exit code 2."""
    try:
        app()
    except KotaeError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
