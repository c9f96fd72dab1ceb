"""Every command in the README and docs/ runs as written (issue 22): each ``kotae ...`` line of their
shell blocks parses against the real command line (options, arguments, required values), and its
``--config``/``--set`` values validate as the command would read them (a misspelt key or a config
that does not exist fails here). Commands that only parse are not run; the cheap, side-effect-free
ones (``--version``, ``models list``) run for real."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kotae.cli import app
from kotae.config_files import resolve_config
from kotae.errors import KotaeError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "2>&1", "<"}
CHEAP = (["--version"], ["models", "list"])


def shell_lines(text: str) -> list[str]:
    """The command lines of a Markdown text's shell blocks, continuation lines joined.

    >>> shell_lines("```bash\\nkotae ask \\\\\\n  'q'   # note\\n```\\n")
    ["kotae ask   'q'   # note"]
    """
    lines: list[str] = []
    for block in SHELL_BLOCK.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines.extend(line.strip() for line in joined.splitlines() if line.strip())
    return lines


def kotae_arguments(line: str) -> list[str] | None:
    """The arguments after ``kotae`` (or ``.venv/bin/kotae``) on a shell line, up to the first shell
    operator or comment; None when the line runs something else."""
    if not re.search(r"(^|[\s/])kotae(\s|$)", line):
        return None
    words = shlex.split(line, comments=True)
    for position, word in enumerate(words):
        if Path(word).name == "kotae":
            arguments = words[position + 1 :]
            cut = next(
                (i for i, w in enumerate(arguments) if w in SHELL_OPERATORS or w.startswith(">")), None
            )
            return arguments[:cut]
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for page in PAGES:
        for line in shell_lines(page.read_text(encoding="utf-8")):
            arguments = kotae_arguments(line)
            if arguments is not None:
                found.append((f"{page.relative_to(ROOT)}: kotae {' '.join(arguments)}", arguments))
    return found


def parse(arguments: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse ``kotae ARGUMENTS`` down to its (sub)command without running it: the command's path and
    its parameters; a click usage error propagates."""
    command: Any = typer.main.get_command(app)
    context = command.make_context("kotae", list(arguments))
    path: list[str] = []
    while hasattr(command, "resolve_command"):
        rest = [*context._protected_args, *context.args]
        name, command, rest = command.resolve_command(context, rest)
        path.append(name)
        context = command.make_context(name, rest, parent=context)
    return path, context.params


def validate_config(path: list[str], params: dict[str, Any]) -> None:
    """Read the command's ``--config`` with its ``--set`` values as the command does, when it names a
    shipped config or a file in this repository (``milvus.yaml`` and the like are the reader's own)."""
    config = params.get("config")
    sets = list(params.get("set_") or params.get("set_overrides") or [])
    if path == ["train"]:
        from kotae.reader_training.config import load_train_config

        if Path(config).is_file():
            load_train_config(config, sets)
        return
    if not {"config", "set_", "set_overrides"} & set(params):
        return
    from kotae.pipeline.config import load_pipeline_config

    try:
        resolved = resolve_config(config, "pipeline") if config is not None else None
    except KotaeError:
        return
    if resolved is None or resolved.is_file():
        load_pipeline_config(resolved, sets)


COMMANDS = documented_commands()


def test_the_pages_hold_the_commands_people_need() -> None:
    seen = {tuple(parse(arguments)[0]) for _, arguments in COMMANDS}
    for command in ("index", "ask", "serve", "train", "evaluate", "eval"):
        assert (command,) in seen, command
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test" in readme  # CI runs the README's test command


@pytest.mark.parametrize(("where", "arguments"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_each_documented_command_parses_and_its_config_validates(
    where: str, arguments: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    if arguments in CHEAP:
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 0, result.output
        return
    path, params = parse(arguments)
    validate_config(path, params)


def test_a_wrong_command_fails_here() -> None:
    """The check has teeth: an unknown option, a missing value, a misspelt key all fail."""
    import click

    for arguments in (
        ["ask", "--top", "3", "q"],
        ["eval", "--config", "default"],
        ["index", "--corpuss", "x"],
    ):
        with pytest.raises((click.UsageError, typer.Exit, Exception)):
            parse(arguments)
    path, params = parse(["ask", "--config", "default", "--set", "reader.top_kk=3", "q"])
    with pytest.raises(KotaeError, match="did you mean 'top_k'"):
        validate_config(path, params)
