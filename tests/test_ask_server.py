"""``kotae ask --server``: the real CLI asks a real ``kotae serve`` on 127.0.0.1, imports no model
library to do so, respects the server's API key, and finds a running server through the index folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kotae.pipeline.answers import answer_record
from kotae.pipeline.guards import ServerAccess
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.remote import RECORD_FILE
from kotae.pipeline.server import create_app
from kotae.pipeline.testing import QUESTIONS, ServedApp, TinySetup, build_tiny_setup, free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "pipeline" / "bm25.yaml"
KOTAE = Path(sys.executable).with_name("kotae")
HEAVY = (
    "torch",
    "transformers",
    "haystack",
    "sentence_transformers",
    "fastapi",
    "uvicorn",
    "ray",
    "pymilvus",
)
RUN_CLI = f"""
import json, sys
sys.argv = ["kotae", *json.loads(sys.argv[1])]
import kotae.cli
try:
    kotae.cli.main()
except SystemExit as exit:
    code = exit.code
else:
    code = 0
heavy = sorted(name for name in {HEAVY!r} if name in sys.modules)
print(json.dumps({{"heavy": heavy, "code": code}}), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("ask-server"))


@pytest.fixture(scope="module")
def qa(setup: TinySetup) -> QuestionAnswerer:
    return QuestionAnswerer.from_config(setup.config(CONFIG))


def _sets(setup: TinySetup) -> list[str]:
    return [item for override in setup.overrides for item in ("--set", override)]


def _kotae(
    arguments: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict]:
    """The real CLI in a fresh interpreter; its result and which heavy modules it imported."""
    completed = subprocess.run(
        [sys.executable, "-c", RUN_CLI, json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        cwd=ROOT,
    )
    report = json.loads(completed.stderr.strip().splitlines()[-1])
    return completed, report


def _answers(stdout: str) -> list[list[dict]]:
    return [json.loads(line)["answers"] for line in stdout.splitlines() if line.strip()]


def test_ask_uses_the_server_and_loads_no_model(setup: TinySetup, qa: QuestionAnswerer) -> None:
    with ServedApp(create_app(setup.config(CONFIG), answerer=qa)) as served:
        completed, report = _kotae(["ask", "--server", served.url, "--json", "--top-k", "2", *QUESTIONS])
    assert report["code"] == 0, completed.stderr
    assert report["heavy"] == []
    expected = [[answer_record(a) for a in qa.ask(q, top_k=2)] for q in QUESTIONS]
    got = _answers(completed.stdout)
    assert [[{**a, "score": None} for a in answers] for answers in got] == [
        [{**a, "score": None} for a in answers] for answers in expected
    ]


def test_arg_parsing_and_help_import_no_model_library() -> None:
    completed, report = _kotae(["ask", "--help"])
    assert report["code"] == 0 and "--server" in completed.stdout
    assert report["heavy"] == []


def test_a_keyed_server_needs_the_key(setup: TinySetup, qa: QuestionAnswerer) -> None:
    access = ServerAccess(api_key="s3cret-key")
    with ServedApp(create_app(setup.config(CONFIG), answerer=qa, access=access)) as served:
        refused, report = _kotae(["ask", "--server", served.url, QUESTIONS[0]], env={"KOTAE_API_KEY": ""})
        assert (
            report["code"] == 2
            and "needs its API key" in refused.stderr
            and "Traceback" not in refused.stderr
        )
        keyed, report = _kotae(
            ["ask", "--server", served.url, "--json", QUESTIONS[0]], env={"KOTAE_API_KEY": "s3cret-key"}
        )
        assert report["code"] == 0 and _answers(keyed.stdout)[0]


def test_no_server_there_is_one_line(setup: TinySetup) -> None:
    completed, report = _kotae(["ask", "--server", f"http://127.0.0.1:{free_port()}", QUESTIONS[0]])
    assert report["code"] == 2 and "no kotae serve answers at" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.fixture
def serving(setup: TinySetup) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [str(KOTAE), "serve", "--config", str(CONFIG), "--port", str(port), *_sets(setup)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("kotae serve did not become healthy")
    yield url, process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def test_auto_finds_the_server_of_the_same_index_and_config(
    setup: TinySetup, serving: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, process = serving
    record = json.loads((setup.index_dir / RECORD_FILE).read_text(encoding="utf-8"))
    assert record["url"] == url and record["pid"] == process.pid and record["api_key_required"] is False
    asked = ["ask", "--server", "auto", "--config", str(CONFIG), "--json", QUESTIONS[1], *_sets(setup)]
    completed, report = _kotae(asked)
    assert report["code"] == 0 and report["heavy"] == [] and _answers(completed.stdout)[0]
    # another config (here: another answer count) is not what that server answers: asked in-process
    other, report = _kotae([*asked, "--set", "reader.top_k=1"])
    assert report["code"] == 0 and "torch" in report["heavy"] and len(_answers(other.stdout)[0]) == 1
    process.send_signal(signal.SIGINT)
    process.wait(30)
    assert not (setup.index_dir / RECORD_FILE).exists()


def test_asking_in_process_skips_sentence_transformers(setup: TinySetup) -> None:
    config = ROOT / "configs" / "pipeline" / "default.yaml"  # hybrid: the question is embedded
    completed, report = _kotae(["ask", "--config", str(config), "--json", QUESTIONS[0], *_sets(setup)])
    assert report["code"] == 0, completed.stderr
    assert _answers(completed.stdout)[0]
    assert "torch" in report["heavy"] and "sentence_transformers" not in report["heavy"]
