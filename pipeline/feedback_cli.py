"""``kotae feedback list|export``: the labels users gave on the page or through ``POST /feedback``.

``export`` writes SQuAD v2.0 JSON that ``kotae train`` reads (configs/train/adapt.yaml), and with
``--holdout`` a second file of held-out questions for ``kotae evaluate``. Both print the counts per
verdict and how many labels are stale (their passage changed or left the index since).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from kotae.errors import KotaeError
from kotae.pipeline.cli import ConfigOption, IndexOption, SetOption, _load_config

feedback_app = typer.Typer(
    help="Users' verdicts on answers: list them, export them as SQuAD v2.0 for `kotae train`.",
    no_args_is_help=True,
)

SinceOption = Annotated[
    str | None, typer.Option("--since", help="only labels given at or after this ISO date/time (UTC)")
]


def _labels(config: Path | None, set_: list[str] | None, index_dir: Path | None, since: str | None) -> Any:
    """The labels (oldest first) and the ids of the stale ones."""
    from kotae.pipeline.feedback import FEEDBACK_NAME, open_feedback, parse_since, stale_labels, store_lookup

    settings = _load_config(config, set_, index_dir)
    folder = settings.index_dir
    if not (folder / FEEDBACK_NAME).is_file():
        raise KotaeError(
            f"no feedback labels in {folder} yet: mark answers on the page (kotae serve) or POST /feedback"
        )
    feedback = open_feedback(folder)
    try:
        labels = feedback.labels(parse_since(since) if since else None)
    finally:
        feedback.close()
    if settings.index.store == "milvus" or (folder / "store.sqlite3").is_file():
        from kotae.indexing.stores import open_store

        store = open_store(settings)
        try:
            stale = stale_labels(labels, store_lookup(store))
        finally:
            store.close()
    else:
        stale = {label.id for label in labels if label.id is not None}
    return labels, stale


@feedback_app.command("list")
def list_labels(
    config: ConfigOption = None,
    set_: SetOption = None,
    index_dir: IndexOption = None,
    since: SinceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Show every label: when, verdict, question, the answer shown and the correction; then counts.

    Control characters in the posted text are shown as escapes (``\\x1b``, ``\\n``); ``--json`` is unchanged.
    """
    from kotae.pipeline.feedback import squad_export
    from kotae.terminal import printable

    labels, stale = _labels(config, set_, index_dir, since)
    for label in labels:
        if as_json:
            typer.echo(json.dumps(label.record(stale=label.id in stale), ensure_ascii=False))
            continue
        flag = " STALE" if label.id in stale else ""
        shown = label.answer_text if label.answer_text is not None else "-"
        question = printable(label.question)  # posted by anyone who reaches the page: no escapes, no rows
        line = f"{label.id}\t{label.created}\t{label.verdict}{flag}\t{question}\tshown: {printable(shown)}"
        if label.corrected_text is not None:
            line += f"\tcorrected: {printable(label.corrected_text)}"
        typer.echo(line)
    typer.echo(squad_export(labels, stale)[2].summary(), err=as_json)


@feedback_app.command("export")
def export_labels(
    out: Annotated[Path, typer.Option("--out", "-o", help="SQuAD v2.0 JSON to write, e.g. labels.json")],
    config: ConfigOption = None,
    set_: SetOption = None,
    index_dir: IndexOption = None,
    since: SinceOption = None,
    holdout: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="fraction of the questions held out for measuring (written to --heldout-out)",
        ),
    ] = 0.0,
    heldout_out: Annotated[
        Path | None, typer.Option(help="where the held-out questions go (default: OUT with .heldout.json)")
    ] = None,
    skip_stale: Annotated[
        bool, typer.Option("--skip-stale", help="leave out labels whose passage changed since")
    ] = False,
    seed: Annotated[int, typer.Option(help="seed of the held-out choice")] = 13,
) -> None:
    """Write the labels as SQuAD v2.0: corrections and confirmations as answers, no_answer as unanswerable."""
    from kotae.pipeline.feedback import squad_export

    labels, stale = _labels(config, set_, index_dir, since)
    data, heldout, counts = squad_export(labels, stale, skip_stale, holdout, seed)
    _write(out, data)
    typer.echo(f"wrote {out}")
    if heldout is not None:
        target = heldout_out or out.with_name(out.name.removesuffix(".json") + ".heldout.json")
        _write(target, heldout)
        typer.echo(f"wrote {target}")
    typer.echo(counts.summary())


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    temporary.replace(path)
