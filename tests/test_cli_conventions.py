"""A CLI without surprises (issue 22): the same flags for the same things on every command, progress
that shows in a log as well as on a terminal, no third-party bars or escape codes in a log, "did you
mean" on misspelt config keys, and `eval` / `evaluate` telling newcomers which is which.

The log tests run the installed ``kotae`` command with stderr going to a file, as ``nohup ... > log``
does, over tiny real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kotae.cli import app
from kotae.errors import KotaeError
from kotae.pipeline.config import load_pipeline_config
from kotae.progress import ProgressLines, progress_line

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "pipeline"
KOTAE = Path(sys.executable).with_name("kotae")


def _options() -> dict[str, set[tuple[str, tuple[str, ...]]]]:
    """Every long option -> {(command, its short forms)} over all commands and subcommands."""
    seen: dict[str, set[tuple[str, tuple[str, ...]]]] = defaultdict(set)

    def walk(command: Any, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        for param in getattr(command, "params", []):
            if getattr(param, "param_type_name", "") != "option":
                continue
            shorts = tuple(sorted(o for o in param.opts if not o.startswith("--")))
            for long in (o for o in param.opts if o.startswith("--")):
                seen[long].add((" ".join(path), shorts))

    walk(typer.main.get_command(app), [])
    return seen


def test_the_same_flag_has_the_same_short_form_on_every_command() -> None:
    options = _options()
    differing = {
        long: sorted(uses) for long, uses in options.items() if len({shorts for _, shorts in uses}) > 1
    }
    assert not differing, differing
    config_commands = {command for command, _ in options["--config"]}
    assert {"index", "ask", "serve", "eval", "train", "pipeline show"} <= config_commands
    assert {shorts for _, shorts in options["--config"]} == {("-c",)}
    assert {shorts for _, shorts in options["--data"]} == {("-d",)}
    assert {command for command, _ in options["--data"]} == {"eval", "evaluate"}


def test_eval_and_evaluate_say_which_is_which() -> None:
    listing = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    lines = {line.split()[1]: line for line in listing.splitlines() if line.startswith("│ ")}
    assert "gold contexts" in lines["evaluate"] and "kotae eval" in lines["evaluate"]
    assert "end-to-end" in lines["eval"] and "kotae evaluate" in lines["eval"]
    evaluate_help = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"}).stdout
    eval_help = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).stdout
    assert "kotae eval" in evaluate_help and "no retrieval" in evaluate_help.lower()
    assert "kotae evaluate" in eval_help and "gold" in eval_help


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "hint"),
    [
        ("", ["reader.top_kk=3"], "unknown key 'reader.top_kk'; did you mean 'top_k'?"),
        ("retreiver:\n  type: bm25\n", [], "unknown key 'retreiver'; did you mean 'retriever'?"),
        ("", ["embeder.model=x"], "did you mean 'embedder'?"),
    ],
)
def test_misspelt_pipeline_keys_suggest_the_nearest(
    tmp_path: Path, yaml_text: str, overrides: list[str], hint: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    with pytest.raises(KotaeError) as error:
        load_pipeline_config(path, overrides)
    assert hint in str(error.value) and "\n" not in str(error.value)


def test_progress_lines_come_at_a_steady_interval() -> None:
    now = [0.0]
    lines = ProgressLines("reading", 100, interval=10, clock=lambda: now[0])
    printed = []
    for _ in range(100):
        now[0] += 0.5  # one step every half second: a line every 20 steps
        printed.append(lines.advance(1, "x"))
    shown = [line for line in printed if line]
    assert len(shown) == 5 and shown[-1].startswith("reading: 100/100 (100%)")
    assert shown[0] == "reading: 20/100 (20%), x, 10s elapsed, about 40s left"
    resumed = ProgressLines("steps", 100, interval=0, clock=lambda: now[0], initial=50)
    now[0] += 30
    assert resumed.advance(10) == "steps: 60/100 (60%), 30s elapsed, about 2m00s left"
    assert progress_line("asking", 3, None, 3725) == "asking: 3, 1h02m elapsed"


def _run(args: list[str], log: Path, cwd: Path) -> str:
    """``kotae ARGS 2> log``: stdout returned, stderr in the file, as in a background job."""
    env = {**os.environ, "KOTAE_PROGRESS_SECONDS": "0", "HF_HUB_OFFLINE": "1", "COLUMNS": "100"}
    env.pop("FORCE_COLOR", None)
    with log.open("wb") as stderr:
        done = subprocess.run(
            [str(KOTAE), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, timeout=600
        )
    assert done.returncode == 0, log.read_text(errors="replace")[-3000:]
    return done.stdout.decode()


def _clean(log: Path) -> str:
    text = log.read_bytes()
    assert b"\x1b" not in text and b"\r" not in text, text[:2000]
    assert b"Loading weights" not in text and b"LOAD REPORT" not in text
    return text.decode()


@pytest.fixture(scope="module")
def reader_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kotae.reader_training.testing import tiny_reader, tiny_tokenizer

    root = tmp_path_factory.mktemp("logs")
    context = "Alice met Bob in Paris on a rainy Tuesday in spring. 奈良は八世紀に日本の首都であった。"
    qas = [("Where did Alice meet Bob?", "Paris"), ("Who met Bob?", "Alice"), ("八世紀の首都は？", "奈良")]
    squad = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": f"q{i}",
                                "question": q,
                                "answers": [{"text": a, "answer_start": context.index(a)}],
                            }
                            for i, (q, a) in enumerate(qas)
                        ],
                    }
                ],
            }
        ]
    }
    (root / "train.json").write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    tokenizer = tiny_tokenizer([context, *(q for q, _ in qas)])
    tiny_reader(tokenizer).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    return root


def test_train_and_evaluate_log_plain_progress_lines(reader_workspace: Path) -> None:
    root = reader_workspace
    config = root / "train.yaml"
    config.write_text(  # run_qa.py's names; the data files are read beside the config
        f"model_name_or_path: {root / 'base'}\noutput_dir: {root / 'run'}\n"
        "train_file: train.json\nvalidation_file: train.json\n"
        "max_seq_length: 48\ndoc_stride: 8\nmax_question_length: 12\nper_device_train_batch_size: 2\n"
        "max_steps: 4\nlogging_steps: 1\nsave_steps: 2\ntorch_threads: 1\n",
        encoding="utf-8",
    )
    _run(["train", "-c", str(config)], root / "train.log", cwd=root.parent)
    trained = _clean(root / "train.log")
    assert "training steps: 4/4 (100%)" in trained and "loss " in trained, trained
    assert "training steps: 1/4 (25%)" in trained

    out = _run(["evaluate", "-m", str(root / "run"), "-d", str(root / "train.json")], root / "eval.log", root)
    evaluated = _clean(root / "eval.log")
    assert "reading batches: 1/1 (100%)" in evaluated and "EM " in out


def test_index_and_eval_log_plain_progress_lines(tmp_path: Path) -> None:
    from kotae.pipeline.testing import build_tiny_setup

    setup = build_tiny_setup(tmp_path / "tiny", index=False)
    sets = [item for override in setup.overrides for item in ("--set", override)]
    _run(
        ["index", "-c", str(CONFIGS / "default.yaml"), "--corpus", str(setup.corpus), *sets],
        tmp_path / "i.log",
        tmp_path,
    )
    indexed = _clean(tmp_path / "i.log")
    assert "embedding documents: 4/4 (100%)" in indexed and " passages" in indexed, indexed

    context = setup.texts["tokyo.txt"]
    squad = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "What is the capital of Japan?", "answers": [{"text": "Tokyo", "answer_start": 0}]},
        {"id": "q2", "question": "When did it become the capital?",
         "answers": [{"text": "1868", "answer_start": context.index("1868")}]},
    ]}]}]}  # fmt: skip
    data = tmp_path / "squad.json"
    data.write_text(json.dumps(squad), encoding="utf-8")
    args = [
        "eval",
        "-c",
        str(CONFIGS / "bm25.yaml"),
        "-d",
        str(data),
        "--index-dir",
        str(tmp_path / "eval-index"),
    ]
    _run([*args, "-o", str(tmp_path / "report"), "--json", *sets], tmp_path / "e.log", tmp_path)
    evaluated = _clean(tmp_path / "e.log")
    assert "asking: 2/2 (100%)" in evaluated and "reading batches: " in evaluated, evaluated
