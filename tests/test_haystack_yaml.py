"""Haystack pipeline YAML as a first-class config: ``kotae pipeline show`` writes a portable file that
``kotae ask/serve/eval --pipeline`` and a real hayhooks server run, and read-only commands write nothing.

Tiny untrained models over a small real index (built offline in seconds): answers are arbitrary spans,
so "the expected answer" is what ``kotae ask --config`` answers, compared exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from kotae.cli import app
from kotae.errors import KotaeError
from kotae.pipeline.testing import QUESTIONS, TinySetup, build_tiny_setup, free_port

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("yaml"))


def _invoke(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def _shown(setup: TinySetup, config: str, path: Path) -> Path:
    args = ["pipeline", "show", "--config", str(CONFIGS / config), *(f"--set={o}" for o in setup.overrides)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    path.write_text(result.stdout, encoding="utf-8")
    return path


def _listing(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def _ask_json(*args: str) -> list[dict]:
    result = CliRunner().invoke(app, ["ask", *QUESTIONS[:2], "--json", "-k", "2", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_pipeline_show_is_portable_with_hayhooks_inputs_and_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOTAE_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["pipeline", "show"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert str(tmp_path) not in text and str(Path.home()) not in text and "/.cache/" not in text
    data = yaml.safe_load(text)
    components = data["components"]
    assert components["query_embedder"]["init_parameters"]["model"] == "multilingual-e5-small"
    assert components["reader"]["init_parameters"]["model"] == "reader-e5-small-ja-en"
    for name in ("dense_retriever", "bm25_retriever"):
        store = components[name]["init_parameters"]["document_store"]
        assert store["init_parameters"]["path"] == "$KOTAE_HOME/index/default"
    devices = [spec["init_parameters"].get("device", "absent") for spec in components.values()]
    assert devices.count(None) == 2 and "cpu" not in text  # embedder and reader: chosen where it runs
    assert data["inputs"] == {"query": ["query_embedder.text", "bm25_retriever.query", "reader.query"]}
    assert data["outputs"] == {"answers": "reader.answers"}
    shown = CliRunner().invoke(app, ["pipeline", "show", "--index-dir", "my-index", "-c", "bm25"])
    store = yaml.safe_load(shown.stdout)["components"]["bm25_retriever"]["init_parameters"]["document_store"]
    assert store["init_parameters"]["path"] == "my-index"  # the folder as given


def test_read_only_commands_create_nothing(
    setup: TinySetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("KOTAE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    pipeline_file = tmp_path / "pipeline.yaml"
    pipeline_file.write_text(CliRunner().invoke(app, ["pipeline", "show"]).stdout, encoding="utf-8")
    before = _listing(tmp_path)
    assert _invoke("pipeline", "show").exit_code == 0  # type: ignore[attr-defined]
    assert _invoke("pipeline", "show", "--index-dir", "somewhere").exit_code == 0  # type: ignore[attr-defined]
    for args in (["ask", "x"], ["ask", "x", "--pipeline", str(pipeline_file)], ["ask", "x", "-c", "bm25"]):
        missing = CliRunner().invoke(app, args)
        assert isinstance(missing.exception, KotaeError), missing.output
        message = str(missing.exception)
        assert message.startswith(f"no index at {home / 'index' / 'default'}") and "\n" not in message
    assert _listing(tmp_path) == before  # no folder, no empty store.sqlite3


def test_ask_with_a_pipeline_file_answers_as_the_config_does(setup: TinySetup, tmp_path: Path) -> None:
    for config in ("default.yaml", "bm25.yaml", "dense.yaml"):
        pipeline_file = _shown(setup, config, tmp_path / f"{config}.pipeline.yaml")
        expected = _ask_json("--config", str(CONFIGS / config), *(f"--set={o}" for o in setup.overrides))
        assert _ask_json("--pipeline", str(pipeline_file)) == expected, config
    both = CliRunner().invoke(app, ["ask", "x", "--pipeline", str(pipeline_file), "--set", "reader.top_k=1"])
    assert isinstance(both.exception, KotaeError) and "--set" in str(both.exception)


def test_a_pipeline_file_is_loaded_safely(setup: TinySetup, tmp_path: Path) -> None:
    good = yaml.safe_load(_shown(setup, "default.yaml", tmp_path / "good.yaml").read_text(encoding="utf-8"))
    unsafe = json.loads(json.dumps(good))
    unsafe["components"]["query_embedder"]["init_parameters"]["trust_remote_code"] = True
    foreign = json.loads(json.dumps(good))
    foreign["components"]["reader"]["type"] = "os.system"
    for data, key in ((unsafe, "trust_remote_code"), (foreign, "allow-list")):
        path = tmp_path / "edited.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        refused = CliRunner().invoke(app, ["ask", "x", "--pipeline", str(path)])
        assert isinstance(refused.exception, KotaeError) and key in str(refused.exception)
        assert "\n" not in str(refused.exception)
    left_out = json.loads(json.dumps(good))
    del left_out["components"]["query_embedder"]["init_parameters"]["model_kwargs"]
    path = tmp_path / "left-out.yaml"
    path.write_text(yaml.safe_dump(left_out), encoding="utf-8")
    from kotae.pipeline.qa import QuestionAnswerer

    answerer = QuestionAnswerer.from_pipeline_file(path, warm_up=False)
    embedder = answerer.pipeline.get_component("query_embedder")
    assert embedder.model_kwargs["use_safetensors"] is True and embedder.trust_remote_code is False


@contextmanager
def _server(command: list[str], cwd: Path, ready: Callable[[], bool]) -> Iterator[None]:
    """A real server process on 127.0.0.1, until ``ready()``; terminated afterwards."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HAYSTACK_TELEMETRY_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    env.pop("KOTAE_API_KEY", None)
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if ready():
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, f"{command[0]} did not start"
            time.sleep(1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_and_eval_take_a_pipeline_file(setup: TinySetup, tmp_path: Path) -> None:
    from kotae.pipeline.eval_job import run_eval

    pipeline_file = _shown(setup, "default.yaml", tmp_path / "pipeline.yaml")
    expected = _ask_json("--config", str(CONFIGS / "default.yaml"), *(f"--set={o}" for o in setup.overrides))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    kotae = Path(sys.executable).with_name("kotae")
    serve = [str(kotae), "serve", "--pipeline", str(pipeline_file), "--port", str(port)]
    with _server(serve, tmp_path, lambda: httpx.get(f"{url}/health", timeout=5).status_code == 200):
        answers = httpx.post(f"{url}/ask", json={"question": QUESTIONS[1], "top_k": 2}, timeout=60).json()
        health = httpx.get(f"{url}/health").json()
    assert [a["answer"] for a in answers["answers"]] == [a["answer"] for a in expected[1]["answers"]]
    assert health["retriever"] == "hybrid" and health["passages"] > 0

    data = tmp_path / "squad.json"
    context = setup.texts["tokyo.txt"]
    qa = {"id": "q1", "question": QUESTIONS[1], "answers": [{"text": "Tokyo", "answer_start": 0}]}
    data.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}]}))
    run = run_eval(
        None, data, index_dir=tmp_path / "eval-index", out=tmp_path / "report", pipeline_path=pipeline_file
    )
    assert run.summary["n"] == 1 and run.summary["recall@20"] == 1.0
    assert run.report["settings"]["retriever_type"] == "hybrid"
    assert run.report["settings"]["reader_model"] == str(setup.reader)


def test_hayhooks_deploys_the_shown_yaml_and_answers_over_http(setup: TinySetup, tmp_path: Path) -> None:
    pytest.importorskip("hayhooks")
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    _shown(setup, "default.yaml", pipelines / "kotae.yml")
    expected = _ask_json("--config", str(CONFIGS / "default.yaml"), *(f"--set={o}" for o in setup.overrides))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hayhooks = Path(sys.executable).with_name("hayhooks")
    run = [str(hayhooks), "run", "--host", "127.0.0.1", "--port", str(port)]
    run += ["--pipelines-dir", str(pipelines)]
    with _server(run, tmp_path, lambda: "kotae" in httpx.get(f"{url}/status", timeout=5).json()["pipelines"]):
        response = httpx.post(f"{url}/kotae/run", json={"query": QUESTIONS[1]}, timeout=120)
    assert response.status_code == 200, response.text
    answers = response.json()["result"]["reader"]["answers"]
    found = [answer["data"] for answer in answers if answer["data"] is not None][:2]
    assert found == [answer["answer"] for answer in expected[1]["answers"]]
    first = answers[0]
    source = setup.texts[Path(first["document"]["meta"]["source"]).name]
    assert source[first["meta"]["source_start"] : first["meta"]["source_end"]] == first["data"]
