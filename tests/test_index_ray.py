"""The Ray engine with a real Ray: same store as the local engine (documents sent as data or read by
the workers from paths), joining a running cluster (``host:port`` and Ray Client), kill -9.

Ray runs on this machine only: ``ray.init(address="local", ...)`` for the in-process tests, a
``ray start --head`` of its own (in its own process group, always killed) for the join tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from kotae.indexing.ray_engine import RAY_ENVIRONMENT
from kotae.indexing.store import SQLITE_NAME, FaissDocumentStore
from kotae.indexing.testing import build_tiny_model, store_differences
from kotae.pipeline.config import load_pipeline_config

for _key, _value in RAY_ENVIRONMENT.items():
    os.environ.setdefault(_key, _value)
os.environ["RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S"] = "120"  # a stall fails the test, never hangs CI
# Every Ray these tests start (in-process, `ray start --head`, the drivers) listens on 127.0.0.1 only:
# with this off, Ray takes the loopback address as the node's (its single-machine mode), instead of
# the machine's network address. Tests send traffic to this machine's loopback and nowhere else.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray  # noqa: E402 - after the quiet environment

from kotae.indexing import job  # noqa: E402
from kotae.indexing.job import run_index  # noqa: E402
from kotae.pipeline.testing import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "東京は日本の首都です。",
    "富士山は日本一高い山である！",
    "京都には古い寺が多い？",
    "The quick brown fox jumps over the lazy dog.",
    "Tokyo is the capital of Japan.",
]
TIMING_KEYS = ("seconds", "passages_per_second", "index_dir")


def write_mixed_corpus(folder: Path) -> None:
    """Every reader: text, Markdown, HTML, JSONL (ids, meta, a repaired byte) and SQuAD JSON."""
    write_corpus(folder, 5, seed=3)
    (folder / "page.html").write_text(
        "<html><head><title>寺</title><script>x()</script></head><body><p>京都には古い寺が多い。</p>"
        "<p>Kyoto has many old temples.</p></body></html>",
        encoding="utf-8",
    )
    lines = [
        json.dumps({"id": "a", "title": "東京", "text": "東京は日本の首都です。" * 6, "meta": {"n": 1}}),
        json.dumps({"text": "富士山は日本一高い山である！" * 3}),
        '{"id": "bad", "text": "壊れた',  # malformed: skipped by the driver and by the workers alike
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8") + b'{"id": "r", "text": "repaired \xff byte"}\n'
    (folder / "lines.jsonl").write_bytes(data)
    squad = {
        "data": [
            {"title": "日本", "paragraphs": [{"context": "東京は日本の首都です。" * 4}, {"context": "大阪"}]},
            {"title": "Fox", "paragraphs": [{"context": SENTENCES[3] * 5}]},
        ]
    }
    (folder / "squad.json").write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")


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
    differences = store_differences(left, right)
    assert differences["problems"] == [[], []]
    assert differences["same_ids"] and differences["same_texts_and_meta"] and differences["same_manifest"]
    assert differences["max_abs_vector_difference"] <= 1e-5


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


def test_ray_writes_into_milvus_what_the_local_engine_writes_into_kotae_store(
    tmp_path: Path, tiny_model: Path, local_ray: None, milvus_server: object
) -> None:
    from kotae.indexing.stores import open_store

    corpus = tmp_path / "corpus"
    write_corpus(corpus, 8)
    milvus = [
        "index.store=milvus",
        f"index.milvus_uri={milvus_server.uri}",
        "index.milvus_collection=from_ray",
    ]  # type: ignore[attr-defined]
    configs = {
        "local": load_pipeline_config(None, overrides(tiny_model)),
        "ray": load_pipeline_config(None, overrides(tiny_model, "index.engine=ray", *milvus)),
    }
    summaries = {name: run_index(config, [corpus], tmp_path / name) for name, config in configs.items()}
    assert without_timing(summaries["local"].to_json()) == without_timing(summaries["ray"].to_json())
    stores = {name: open_store(config, tmp_path / name) for name, config in configs.items()}
    try:
        assert stores["ray"].check_consistency() == []
        assert stores["local"].source_manifest() == stores["ray"].source_manifest()
        local, remote = (sorted(stores[n].filter_documents(), key=lambda d: d.id) for n in ("local", "ray"))
        assert [(d.id, d.content, d.meta) for d in local] == [(d.id, d.content, d.meta) for d in remote]
        np.testing.assert_allclose([d.embedding for d in local], [d.embedding for d in remote], atol=1e-5)
    finally:
        for store in stores.values():
            store.close()


def cli_index(corpus: Path, index: Path, model: Path, *more: str) -> dict:
    """``kotae index --json`` in this process; the summary it printed."""
    from kotae.cli import app

    args = ["index", "--corpus", str(corpus), "--index-dir", str(index), "--json", *more]
    for item in overrides(model):
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # nothing but the summary on stdout
    return json.loads(lines[0])


def test_documents_sent_as_data_or_read_from_paths_build_the_local_store(
    tmp_path: Path, tiny_model: Path, local_ray: None
) -> None:
    corpus = tmp_path / "corpus"
    write_mixed_corpus(corpus)
    runs = {
        "local": ("--engine", "local"),
        "data": ("--engine", "ray", "--ray-input", "data"),
        "paths": ("--engine", "ray", "--ray-input", "paths"),
    }
    first = {name: cli_index(corpus, tmp_path / name, tiny_model, *args) for name, args in runs.items()}
    assert first["local"]["added"] == 13 and len(first["local"]["skipped"]) == 1
    assert first["local"]["repaired"]  # the undecodable byte, read the same way by the workers
    for name in ("data", "paths"):
        assert without_timing(first[name]) == without_timing(first["local"])
        assert_same_store(tmp_path / "local", tmp_path / name)

    # One JSONL line edited: the paths workers re-read the file and embed only that document.
    lines = (corpus / "lines.jsonl").read_bytes().replace(b"repaired", b"edited", 1)
    (corpus / "lines.jsonl").write_bytes(lines)
    # (An edit through --ray-input data is test_ray_and_local_engines_build_the_same_store's.)
    again = {name: cli_index(corpus, tmp_path / name, tiny_model, *runs[name]) for name in ("local", "paths")}
    assert (again["paths"]["updated"], again["paths"]["unchanged"]) == (1, 12)
    assert without_timing(again["paths"]) == without_timing(again["local"])
    assert_same_store(tmp_path / "local", tmp_path / "paths")


def _path_rows(documents: list) -> object:
    import pyarrow as pa

    return pa.table(
        {
            "positions": [list(range(len(documents)))],
            "ids": [[d.id for d in documents]],
            "sources": [[d.source for d in documents]],
        }
    )


def test_a_paths_worker_reads_like_the_driver_and_reports_what_it_cannot_read(tmp_path: Path) -> None:
    """The worker class alone (no Ray): the driver's reader, and one-line errors for a missing file
    (no shared storage) and for a file changed between the driver's read and the worker's."""
    from kotae.errors import KotaeError
    from kotae.indexing.engine import SplitSettings, split_and_embed
    from kotae.indexing.ray_engine import _PathWorker, computed
    from kotae.indexing.readers import read_corpus
    from kotae.indexing.testing import HashEmbedder

    corpus = tmp_path / "corpus"
    write_mixed_corpus(corpus)
    documents, _ = read_corpus([corpus])
    settings = SplitSettings(max_tokens=20, overlap_tokens=4, batch_size=4)
    worker = _PathWorker(HashEmbedder(), settings, threads=1, max_chars=1_000_000)
    rows = worker(_path_rows(documents)).to_pylist()
    expected = {
        i: (p, v) for i, p, v in split_and_embed(HashEmbedder(), [d.text for d in documents], settings)
    }
    for row in rows:
        position, passages, vectors = computed(row, documents)
        assert passages == expected[position][0]
        np.testing.assert_array_equal(vectors.reshape(len(passages), -1), expected[position][1])

    (corpus / "page.html").unlink()
    (corpus / "doc001.txt").write_text("書き換えられた。", encoding="utf-8")
    rows = {documents[r["position"]].id: r for r in worker(_path_rows(documents)).to_pylist()}
    with pytest.raises(
        KotaeError, match=r"^--ray-input paths: a Ray worker could not read .*page\.html \(unreadable"
    ):
        computed(rows[str((corpus / "page.html").resolve())], documents)
    with pytest.raises(KotaeError, match=r"doc001\.txt changed while it was being indexed"):
        computed(rows[str((corpus / "doc001.txt").resolve())], documents)


@dataclass(frozen=True)
class Head:
    """A running ``ray start --head``: its GCS address, Ray Client address, temp dir and process."""

    address: str
    client_address: str
    temp: Path
    process: subprocess.Popen

    def answers(self) -> bool:
        """Still running and listening on both ports."""
        for address in (self.address, self.client_address.removeprefix("ray://")):
            host, port = address.rsplit(":", 1)
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except OSError:
                return False
        return self.process.poll() is None

    def client_server_logs(self) -> str:
        """The tails of the Ray Client servers' logs (the head's temp dir goes at teardown): what a
        failed ``ray://`` join needs to be understood."""
        tails = [
            f"\n--- {path.name}:\n" + path.read_text(errors="replace")[-1500:]
            for path in sorted(self.temp.glob("session_*/logs/ray_client_server*"))
        ]
        return "".join(tails)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    """``ray start --head --block`` (one CPU, a Ray Client server) in its own process group; the whole
    group is killed at the end, whatever happens. Not ``ray stop``: that stops every Ray of this
    user on the machine, including ones other people's jobs started."""
    temp = Path(tempfile.mkdtemp(prefix="kray", dir="/tmp"))  # short: Ray's socket paths are limited
    port, client_port = free_port(), free_port()
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus=1"]
    command += ["--include-dashboard=false", f"--port={port}", f"--ray-client-server-port={client_port}"]
    command += [f"--temp-dir={temp}", "--disable-usage-stats"]
    head = subprocess.Popen(
        command,
        # A Ray Client's server process may take over Ray's 30 s to start on a loaded CI machine.
        env=driver_env(RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S="180"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        for listening in (port, client_port):
            while True:
                assert head.poll() is None, "ray start --head exited"
                assert time.monotonic() < deadline, "ray start --head did not listen within 60 s"
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", listening), timeout=1),
                ):
                    break
                time.sleep(0.3)
        yield Head(f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}", temp, head)
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


@pytest.mark.ray_cluster
@pytest.mark.parametrize("form", ["host:port", "ray://", "auto"])
def test_join_a_running_cluster(tmp_path: Path, tiny_model: Path, ray_head: Head, form: str) -> None:
    """A driver joins the cluster (as a Ray driver, or a Ray Client), builds the local engine's store,
    and leaves the cluster running: each form runs on the cluster the one before used. ``auto`` finds
    the cluster through ``RAY_ADDRESS`` (never the machine's "current cluster" file, which may name
    someone else's Ray here)."""
    address = {"host:port": ray_head.address, "ray://": ray_head.client_address, "auto": "auto"}[form]
    env = driver_env(RAY_ADDRESS=ray_head.address) if form == "auto" else driver_env()
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 6, seed=2)
    args = [sys.executable, "-m", "kotae", "index", "--corpus", str(corpus), "--json"]
    args += ["--index-dir", str(tmp_path / "ray"), "--engine", "ray", "--ray-address", address]
    for item in overrides(tiny_model, "index.ray_workers=1"):
        args += ["--set", item]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:] + ray_head.client_server_logs()
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # nothing but the summary on stdout
    summary = json.loads(lines[0])
    assert summary["added"] == 7 and summary["passages"]["total"] > 7
    # The actors ran on the cluster's workers (their logs are in its temp dir), and it is still up.
    assert list(ray_head.temp.glob("session_*/logs/worker-*.out"))
    assert ray_head.answers()
    local = cli_index(corpus, tmp_path / "local", tiny_model, "--engine", "local")
    assert without_timing(local) == without_timing(summary)
    assert_same_store(tmp_path / "local", tmp_path / "ray")


def test_a_run_without_address_shuts_its_own_ray_down(tmp_path: Path, tiny_model: Path) -> None:
    """Ray started for the run (``address="local"``) is gone when the run returns: not initialised,
    and none of its processes (GCS, raylet, workers) left under the driver."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 3, seed=4)
    script = f"""
import json, sys, time
from pathlib import Path
import psutil, ray
from kotae.indexing.job import run_index
from kotae.pipeline.config import load_pipeline_config
config = load_pipeline_config(None, {overrides(tiny_model, "index.engine=ray", "index.ray_workers=1")!r})
summary = run_index(config, [Path({str(corpus)!r})], Path({str(tmp_path / "index")!r}))
deadline = time.monotonic() + 30
while psutil.Process().children(recursive=True) and time.monotonic() < deadline:
    time.sleep(0.2)
left = [child.name() for child in psutil.Process().children(recursive=True)]
print(json.dumps({{"added": summary.added, "initialized": ray.is_initialized(), "left": left}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=driver_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"added": 4, "initialized": False, "left": []}


def _generation(index: Path) -> int:
    try:
        with sqlite3.connect(f"file:{index / SQLITE_NAME}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


@pytest.mark.ray_cluster
def test_kill_9_of_the_driver_during_a_ray_run(tmp_path: Path, tiny_model: Path, ray_head: Head) -> None:
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
    command = [sys.executable, "-m", "kotae", "index", "--json", "--corpus", str(corpus)]
    command += ["--config", str(config_path), "--index-dir", str(index)]  # the real CLI, killed at random
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

    env = driver_env(RAY_ADDRESS=ray_head.address)
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert final.returncode == 0, final.stderr[-3000:]
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    assert summary["unchanged"] == done_before and summary["added"] == 41 - done_before
    assert len(store_contents(index)) == summary["passages"]["total"]


def test_a_missing_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from kotae.errors import KotaeError
    from kotae.indexing.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(KotaeError, match=r"^the Ray engine needs Ray: pip install 'kotae\[ray\]'$"):
        import_ray()

    from kotae.indexing.ray_engine import check_address

    monkeypatch.setitem(sys.modules, "grpc", None)  # ray[client] missing
    with pytest.raises(
        KotaeError, match=r"^--ray-address ray://h:10001 needs Ray Client: pip install 'kotae\[ray\]'"
    ):
        check_address("ray://h:10001")


def test_a_client_server_that_failed_to_start_is_tried_once_more(capsys: pytest.CaptureFixture[str]) -> None:
    """Ray Client's proxy could not start the server process for this client (seen in CI under load):
    the second connection gets a fresh one. Ray here is a stand-in whose ``init`` fails as Ray's does."""
    from kotae.errors import KotaeError
    from kotae.indexing.ray_engine import CLIENT_SERVER_FAILED, connect_ray

    class Ray:
        def __init__(self, failures: list[Exception]) -> None:
            self.failures, self.calls = failures, 0

        def init(self, **kwargs: object) -> None:
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)

    failed = ConnectionAbortedError(
        f"Initialization failure from server:\nRuntimeError: {CLIENT_SERVER_FAILED}. See x.err"
    )
    once = Ray([failed])
    connect_ray(once, "ray://127.0.0.1:1")
    assert once.calls == 2 and "connecting again" in capsys.readouterr().err
    with pytest.raises(
        KotaeError, match=rf"^could not start or reach Ray at ray://127.0.0.1:1: .*{CLIENT_SERVER_FAILED}"
    ):
        connect_ray(Ray([failed, failed]), "ray://127.0.0.1:1")
    other = Ray([ConnectionError("refused")])
    with pytest.raises(KotaeError, match=r"^could not start or reach Ray at 127\.0\.0\.1:1: refused$"):
        connect_ray(other, "127.0.0.1:1")
    assert other.calls == 1  # only that failure is tried again


def test_the_driver_progress_bar_counts_documents_and_passages() -> None:
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with job._progress(True, 2, console) as advance:  # the bar both engines drive, rendered for real
        advance(1, 3)
        advance(1, 1)
    shown = _plain(screen.getvalue())
    assert "embedding documents" in shown and "2/2" in shown and "4 passages" in shown


def _plain(text: str) -> str:
    """Terminal output without its control sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_an_address_where_nothing_listens_fails_in_one_line() -> None:
    from kotae.errors import KotaeError
    from kotae.indexing.ray_engine import check_address

    with pytest.raises(KotaeError, match=r"^no Ray cluster answers at 127\.0\.0\.1:\d+ .*ray start --head"):
        check_address(f"127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(
        KotaeError, match=r"^no Ray cluster answers at ray://127\.0\.0\.1:\d+ .*--ray-client-server-port"
    ):
        check_address(f"ray://127.0.0.1:{free_port()}", timeout=2)
    check_address("auto")  # left to Ray


def test_ray_input_is_a_config_key_and_the_flag_overrides_it() -> None:
    from kotae.indexing.engine import make_engine
    from kotae.pipeline.config import load_pipeline_config

    config = load_pipeline_config(None, ["index.engine=ray", "index.ray_input=paths"])
    assert make_engine(config.index, embedder=None).input == "paths"  # type: ignore[arg-type,attr-defined]
    assert make_engine(config.index, embedder=None, ray_input="data").input == "data"  # type: ignore[arg-type,attr-defined]
    from kotae.errors import KotaeError

    with pytest.raises(KotaeError, match="ray_input"):
        load_pipeline_config(None, ["index.ray_input=disk"])
