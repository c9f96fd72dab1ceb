"""The Ray engine with a real Ray: same store as the local engine, joining a running cluster, kill -9.

Ray runs on this machine only: ``ray.init(address="local", ...)`` for the in-process tests, a
``ray start --head`` of its own (in its own process group, always killed) for the join test.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from indexing.ray_engine import RAY_ENVIRONMENT
from indexing.store import SQLITE_NAME, FaissDocumentStore
from indexing.testing import build_tiny_model
from pipeline.config import load_pipeline_config

for _key, _value in RAY_ENVIRONMENT.items():
    os.environ.setdefault(_key, _value)
os.environ["RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S"] = "120"  # a stall fails the test, never hangs CI

import ray  # noqa: E402 - after the quiet environment

from indexing import job  # noqa: E402
from indexing.job import run_index  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "東京は日本の首都です。",
    "富士山は日本一高い山である！",
    "京都には古い寺が多い？",
    "The quick brown fox jumps over the lazy dog.",
    "Tokyo is the capital of Japan.",
]
TIMING_KEYS = ("seconds", "passages_per_second", "index_dir")


def write_corpus(folder: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = "".join(rng.choice(SENTENCES) for _ in range(rng.randint(2, 14)))
        (folder / f"doc{i:03d}.txt").write_text(f"文書{i}。{body}", encoding="utf-8")
    (folder / "english.md").write_text("# Notes\n\n" + " ".join(SENTENCES[3:] * 6), encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 << 20,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


def overrides(model: Path, *more: str) -> list[str]:
    return [
        f"embedder.model={model}",
        "embedder.batch_size=8",
        "index.passage_tokens=30",
        "index.overlap_tokens=5",
        "index.commit_documents=4",
        "index.ray_batch_size=3",
        *more,
    ]


def store_contents(index: Path) -> dict[str, tuple[str, dict, np.ndarray]]:
    store = FaissDocumentStore(index)
    try:
        assert store.check_consistency() == []
        return {
            d.id: (d.content or "", d.meta, np.asarray(d.embedding, dtype=np.float32))
            for d in store.filter_documents()
        }
    finally:
        store.close()


def assert_same_store(left: Path, right: Path) -> None:
    a, b = store_contents(left), store_contents(right)
    assert sorted(a) == sorted(b)
    for key, (content, meta, vector) in a.items():
        assert (content, meta) == b[key][:2]
        np.testing.assert_allclose(vector, b[key][2], atol=1e-5)
    manifests = []
    for index in (left, right):
        store = FaissDocumentStore(index)
        manifests.append({k: (v[0], sorted(v[1])) for k, v in store.source_manifest().items()})
        store.close()
    assert manifests[0] == manifests[1]


def without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


@contextlib.contextmanager
def record_progress(calls: list) -> Iterator[Callable[[int, int], None]]:
    yield lambda documents, passages: calls.append((documents, passages))


def test_ray_and_local_engines_build_the_same_store(
    tmp_path: Path, tiny_model: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kotae.cli import app

    corpus = tmp_path / "corpus"
    write_corpus(corpus, 14)
    runs = {}
    for engine in ("local", "ray"):
        calls: list = []
        totals: list = []

        def progress(enabled: bool, total: int, calls: list = calls, totals: list = totals):
            totals.append((enabled, total))
            return record_progress(calls)

        monkeypatch.setattr(job, "_progress", progress)
        config = load_pipeline_config(
            None, overrides(tiny_model, f"index.engine={engine}", "index.ray_workers=2")
        )
        summary = run_index(config, [corpus], tmp_path / engine, progress=True)
        runs[engine] = (summary, totals, sorted(calls))
    (local, local_totals, local_calls), (remote, remote_totals, remote_calls) = runs["local"], runs["ray"]
    assert local.added == 15 and local.passages_added > 30
    assert without_timing(local.to_json()) == without_timing(remote.to_json())
    assert local.lines()[1:3] == remote.lines()[1:3]
    assert local_totals == remote_totals == [(True, 15)] and local_calls == remote_calls
    assert_same_store(tmp_path / "local", tmp_path / "ray")
    monkeypatch.undo()

    def cli(engine: str, *more: str) -> dict:
        args = ["index", "--corpus", str(corpus), "--index-dir", str(tmp_path / engine), "--engine", engine]
        for item in overrides(tiny_model):
            args += ["--set", item]
        result = CliRunner().invoke(app, [*args, *more])
        assert result.exit_code == 0, result.output
        if "--json" not in more:
            return {"text": result.stdout}
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1  # nothing but the summary on stdout
        return json.loads(lines[0])

    # An unchanged re-run through Ray does no work (no Ray job at all: nothing to embed).
    again = cli("ray", "--json")
    assert (again["added"], again["updated"], again["unchanged"], again["passages"]["added"]) == (0, 0, 15, 0)
    assert "0 added, 0 updated, 0 removed, 15 unchanged" in cli("ray")["text"]

    # A changed file re-embeds only itself, and both engines still agree.
    (corpus / "doc004.txt").write_text("編集された文書です。Edited in English too.", encoding="utf-8")
    changed = {engine: cli(engine, "--json") for engine in ("ray", "local")}
    assert (changed["ray"]["updated"], changed["ray"]["unchanged"], changed["ray"]["passages"]["added"]) == (
        1,
        14,
        1,
    )
    assert without_timing(changed["ray"]) == without_timing(changed["local"])
    assert_same_store(tmp_path / "local", tmp_path / "ray")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, Path]]:
    """``ray start --head --block`` in its own process group; the whole group is killed at the end,
    whatever happens (``ray stop --force`` would also stop every other Ray of this user here)."""
    temp = Path(tempfile.mkdtemp(prefix="kray", dir="/tmp"))  # short: Ray's socket paths are limited
    port = _free_port()
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus=2"]
    command += ["--include-dashboard=false", f"--port={port}", f"--temp-dir={temp}", "--disable-usage-stats"]
    head = subprocess.Popen(
        command,
        env=driver_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "ray start --head did not listen within 60 s"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.3)
        yield f"127.0.0.1:{port}", temp
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def driver_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}
    if "RAY_ADDRESS" not in extra:
        env.pop("RAY_ADDRESS", None)
    return env


def test_join_a_running_cluster(tmp_path: Path, tiny_model: Path, ray_head: tuple[str, Path]) -> None:
    address, temp = ray_head
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 6, seed=2)
    args = [sys.executable, "-m", "kotae", "index", "--corpus", str(corpus), "--json"]
    args += ["--index-dir", str(tmp_path / "index"), "--engine", "ray", "--ray-address", address]
    for item in overrides(tiny_model, "index.ray_workers=1"):
        args += ["--set", item]
    result = subprocess.run(args, cwd=ROOT, env=driver_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # nothing but the summary on stdout
    summary = json.loads(lines[0])
    assert summary["added"] == 7 and summary["passages"]["total"] > 7
    # The actors ran on the cluster's workers (their logs are in its temp dir), and it is still up.
    assert list(temp.glob("session_*/logs/worker-*.out"))
    with socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), timeout=5):
        pass
    assert len(store_contents(tmp_path / "index")) == summary["passages"]["total"]


def _generation(index: Path) -> int:
    try:
        with sqlite3.connect(f"file:{index / SQLITE_NAME}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def test_kill_9_of_the_driver_during_a_ray_run(
    tmp_path: Path, tiny_model: Path, ray_head: tuple[str, Path]
) -> None:
    """Killed while running on a Ray it started itself; finished by a run joining the cluster."""
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    write_corpus(corpus, 40, seed=1)
    settings = {
        "embedder": {"model": str(tiny_model), "batch_size": 8},
        "index": {
            "passage_tokens": 24,
            "overlap_tokens": 4,
            "commit_documents": 3,
            "engine": "ray",
            "ray_workers": 1,
            "ray_batch_size": 2,
        },
    }
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    command = [sys.executable, "-m", "indexing.job", str(config_path), str(index), str(corpus)]
    driver = subprocess.Popen(
        command,
        cwd=ROOT,
        env=driver_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while driver.poll() is None and _generation(index) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert driver.poll() is None, "the run ended before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):  # the local Ray it started
            os.killpg(driver.pid, signal.SIGKILL)
    store = FaissDocumentStore(index)
    count, problems, manifest = store.count_documents(), store.check_consistency(), store.source_manifest()
    store.close()
    assert problems == [] and count == sum(len(p) for _, p in manifest.values())
    done_before = len(manifest)
    assert 0 < done_before < 41

    env = driver_env(RAY_ADDRESS=ray_head[0])
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert final.returncode == 0, final.stderr[-3000:]
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    assert summary["unchanged"] == done_before and summary["added"] == 41 - done_before
    assert len(store_contents(index)) == summary["passages"]["total"]


def test_a_missing_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from indexing.ray_engine import import_ray
    from kotae.errors import KotaeError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(KotaeError, match=r"^the Ray engine needs Ray: pip install 'kotae\[ray\]'$"):
        import_ray()


def test_the_driver_progress_bar_counts_documents_and_passages() -> None:
    with job._progress(True, 2) as advance:  # the bar both engines drive, rendered for real
        advance(1, 3)
        advance(1, 1)


def test_an_address_where_nothing_listens_fails_in_one_line() -> None:
    from indexing.ray_engine import check_address
    from kotae.errors import KotaeError

    with pytest.raises(KotaeError, match=r"^no Ray cluster answers at 127\.0\.0\.1:\d+ .*ray start --head"):
        check_address(f"127.0.0.1:{_free_port()}", timeout=2)
    check_address("auto")  # left to Ray
