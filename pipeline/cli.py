"""``kotae ask``, ``kotae serve`` and ``kotae pipeline show``: thin typer shells over :mod:`kotae.pipeline.qa`.

Heavy imports (torch, transformers, Haystack) happen inside the commands so ``kotae --help`` stays
fast, and ``kotae ask --server`` (:mod:`kotae.pipeline.remote`) never makes them.
"""

from __future__ import annotations

import json as json_module
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from kotae.pipeline.qa import QuestionAnswerer

pipeline_app = typer.Typer(help="Inspect the Haystack pipeline a config builds.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="pipeline YAML path, or a shipped config: default, dense, bm25 (default: built-in settings)",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="override a config key, KEY=VALUE (YAML value), e.g. reader.top_k=3; repeatable"
    ),
]
IndexOption = Annotated[Path | None, typer.Option("--index-dir", help="index directory (default: index.dir)")]
PipelineOption = Annotated[
    Path | None,
    typer.Option(
        "--pipeline",
        help="a Haystack pipeline YAML (e.g. from `kotae pipeline show`) instead of --config; loaded safely",
    ),
]


def _quiet() -> None:
    """No download/weight-loading progress bars on stderr: the answer is the output."""
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from kotae.progress import quiet_third_party

    quiet_third_party()


def _answerer(
    config: Path | None, set_: list[str] | None, index_dir: Path | None, pipeline: Path | None
) -> QuestionAnswerer:
    """The warmed-up QuestionAnswerer for ``--pipeline FILE``, or for ``--config``/``--set``/``--index-dir``."""
    from kotae.pipeline.qa import QuestionAnswerer

    if pipeline is None:
        return QuestionAnswerer.from_config(_load_config(config, set_, index_dir), config_path=config)
    _only_pipeline(config, set_, index_dir)
    return QuestionAnswerer.from_pipeline_file(pipeline)


def _only_pipeline(config: Path | None, set_: list[str] | None, index_dir: Path | None) -> None:
    """Refuse (one line) --config, --set or --index-dir next to --pipeline: the file holds those settings."""
    from kotae.errors import KotaeError

    given = [
        name for name, value in (("--config", config), ("--set", set_), ("--index-dir", index_dir)) if value
    ]
    if given:
        raise KotaeError(
            f"--pipeline FILE holds the whole pipeline; drop {', '.join(given)} (edit the file instead)"
        )


def _load_config(config: Path | None, set_: list[str] | None, index_dir: Path | None = None) -> Any:
    from kotae.pipeline.config import load_pipeline_config

    overrides = list(set_ or [])
    if index_dir is not None:
        overrides.append(f"index.dir={json_module.dumps(str(index_dir))}")
    return load_pipeline_config(config, overrides)


def ask(
    questions: Annotated[
        list[str], typer.Argument(help="one or more questions, in Japanese or English", metavar="QUESTION...")
    ],
    config: ConfigOption = None,
    index_dir: IndexOption = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", "-k", min=1, max=100, help="answers to show")
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", help="print one JSON object per question (one per line)")
    ] = False,
    set_: SetOption = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="ask a running kotae serve at this URL instead of loading the models here; 'auto': the "
            "server recorded in the index folder when it serves the same config, else answer here",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="KOTAE_API_KEY", show_envvar=True, help="the --server's API key, if it needs one"
        ),
    ] = None,
    pipeline: PipelineOption = None,
) -> None:
    """Answer questions from the indexed documents: best answers with score, source and the sentence around them.

    Several questions share one pipeline load: kotae ask '富士山の高さは？' 'Who wrote Hamlet?'
    """
    from kotae.errors import KotaeError

    for question in questions:
        if not question.strip():
            raise KotaeError("a question is empty; ask something, e.g. kotae ask '富士山の高さは？'")
    url = server
    if server == "auto" and pipeline is None:
        from kotae.pipeline.remote import config_digest, recorded_server

        settings = _load_config(config, set_, index_dir)
        url = recorded_server(settings.index_dir, config_digest(settings))
    elif server is not None and pipeline is not None:
        raise KotaeError("--server asks a running kotae serve; drop --pipeline (the server has its own)")
    answers = _remote_answers(url, api_key) if url else _local_answers(config, set_, index_dir, pipeline)
    for number, question in enumerate(questions):
        records = answers(question, top_k)
        if json:
            typer.echo(json_module.dumps({"question": question, "answers": records}, ensure_ascii=False))
            continue
        if number:
            typer.echo("")
        _print_answers(question, records)


def _remote_answers(url: str, api_key: str | None) -> Any:
    """Answers from the ``kotae serve`` at ``url`` (no model is loaded here)."""
    from kotae.pipeline.remote import ask_server

    def answers(question: str, top_k: int | None) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = ask_server(url, question, top_k, api_key)["answers"]
        return records

    return answers


def _local_answers(
    config: Path | None, set_: list[str] | None, index_dir: Path | None, pipeline: Path | None
) -> Any:
    """Answers from the pipeline loaded here (``--pipeline FILE`` or the config), once for all questions."""
    _quiet()
    from kotae.pipeline.answers import answer_record

    answerer = _answerer(config, set_, index_dir, pipeline)

    def answers(question: str, top_k: int | None) -> list[dict[str, Any]]:
        return [answer_record(answer) for answer in answerer.ask(question, top_k=top_k)]

    return answers


def _print_answers(question: str, records: list[dict[str, Any]]) -> None:
    """The answers for people; every piece of question or corpus text goes through :func:`printable`."""
    from rich.console import Console
    from rich.text import Text

    from kotae.terminal import printable

    console = Console(highlight=False)
    console.print(Text(f"Q: {printable(question)}", style="bold"))
    if not records:
        console.print("no answer found in the index")
        return
    for rank, record in enumerate(records, 1):
        if record["answer"] is None:
            console.print(Text(f"{rank}. (no answer)  score {record['score']:.3f}", style="dim"))
            continue
        head = Text(f"{rank}. ")
        head.append(printable(record["answer"]), style="bold green")
        head.append(f"  score {record['score']:.3f}", style="cyan")
        console.print(head)
        where = printable(record["source"] or record["document_id"])
        title = f" ({printable(record['title'])})" if record["title"] else ""
        page = f"  page {record['page']}" if record.get("page") else ""
        console.print(Text(f"   {where}{title}{page}  chars {record['start']}-{record['end']}", style="dim"))
        text, start, end = record["context"], record["context_start"], record["context_end"]
        context = Text("   ")
        context.append(printable(text[:start]))
        context.append(printable(text[start:end]), style="bold reverse")
        context.append(printable(text[end:]))
        console.print(context)


def serve(
    config: ConfigOption = None,
    host: Annotated[
        str, typer.Option(help="address to bind; 0.0.0.0 exposes the service to the network")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8000,
    index_dir: IndexOption = None,
    set_: SetOption = None,
    max_body_bytes: Annotated[int, typer.Option(min=256, help="largest request body accepted")] = 16_384,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="KOTAE_API_KEY",
            show_envvar=True,
            help="key every route but /health, / and /static needs (Bearer or X-API-Key); required off loopback",
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="allow a non-loopback --host without an API key")
    ] = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="origin allowed to call the API from a browser; repeatable"),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="another Host name (or address) to answer, e.g. the name a proxy or DNS gives this "
            "server; repeatable; '*' answers any (not recommended: DNS rebinding)",
        ),
    ] = None,
    client_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="seconds a client may take to send a request's headers, and again its body; "
            "slower clients get 408 and are disconnected",
        ),
    ] = 10.0,
    max_batch: Annotated[
        int,
        typer.Option(min=1, max=256, help="questions read together in one batch at most (1: one at a time)"),
    ] = 8,
    batch_wait_ms: Annotated[
        float,
        typer.Option(min=0, max=1000, help="milliseconds a question waits for others to join its batch"),
    ] = 5.0,
    pipeline: PipelineOption = None,
) -> None:
    """Serve the pipeline over HTTP: the page at /, POST /ask, GET /health, /openapi.json (loads the models once).

    Questions that arrive together are read in one batch. While it runs, the server is recorded in
    the index folder (serve.json), for `kotae ask --server auto`.

    Only requests for the bound address's names (localhost, 127.0.0.1 and ::1 on loopback; any IP
    address and this machine's name on 0.0.0.0) and --allowed-host names are answered; others get 400.
    """
    _quiet()
    import uvicorn

    from kotae.errors import KotaeError
    from kotae.pipeline.batcher import BatchSettings
    from kotae.pipeline.guards import ServerAccess, check_bind, uvicorn_config
    from kotae.pipeline.remote import config_digest, local_url, remove_record, write_record
    from kotae.pipeline.server import ServerLimits, create_app

    api_key = api_key or None
    check_bind(host, api_key, insecure)
    try:
        access = ServerAccess(
            api_key=api_key,
            cors_origins=tuple(cors_origin or ()),
            body_seconds=client_timeout,
            header_seconds=client_timeout,
            bind_host=host,
            allowed_hosts=tuple(allowed_host or ()),
        )
    except ValueError as error:
        raise KotaeError(str(error)) from None
    answerer = _answerer(config, set_, index_dir, pipeline)
    assert answerer.config is not None  # both ways of loading keep the settings
    app = create_app(
        answerer.config,
        config_path=config,
        limits=ServerLimits(max_body_bytes=max_body_bytes),
        access=access,
        answerer=answerer,
        batching=BatchSettings(max_batch=max_batch, max_wait_ms=batch_wait_ms),
    )
    keyed = "API key required" if api_key else "no API key"
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"kotae: serving on http://{shown}:{port} (docs at /docs; {keyed})", err=True)
    settings = answerer.config
    record = write_record(settings.index_dir, local_url(host, port), config_digest(settings), bool(api_key))
    try:
        uvicorn.Server(uvicorn_config(app, host, port, access)).run()
    finally:
        remove_record(record)


@pipeline_app.command("show")
def show(config: ConfigOption = None, set_: SetOption = None, index_dir: IndexOption = None) -> None:
    """Print the Haystack pipeline YAML the config builds, portable: model aliases and the index folder as
    written, devices chosen where it runs, and hayhooks' inputs/outputs. Opens and creates nothing.

    Save it and use it: kotae pipeline show > pipeline.yaml; kotae ask --pipeline pipeline.yaml '...'
    """
    _quiet()
    from kotae.pipeline.haystack_yaml import portable_yaml

    typer.echo(portable_yaml(_load_config(config, set_, index_dir)), nl=False)
