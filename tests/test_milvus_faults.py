"""kill -9 against the Milvus store: the indexing job killed mid-commit, and the Milvus Lite server killed.

The same three scenarios as tests/test_faults.py (a first index, an incremental re-index with
updates, deletions and additions, a ``--full`` rebuild), run against a Milvus Lite gRPC server on
127.0.0.1. The job runs in a forked process and gets SIGKILL after a seeded random delay, again and
again, each run resuming from what the last one left. After every kill, *before* any writer has
recovered anything (what a ``kotae serve`` replica reads at that moment):

- every document is wholly at its last committed version or wholly at the new one, the stored
  passages are exactly the manifest's, none listed twice;

and when a run finishes, the collection equals the uninterrupted run's. Milvus gives per-request
atomicity and durability (a WAL record per request in Milvus Lite); the journal in
:mod:`indexing.milvus_store` makes each commit of many requests atomic for readers and lets the next
writer roll it back or forward.

Every Milvus connection is made in a forked child (gRPC channels do not survive a fork), so the
parent only forks, waits and kills. ``KOTAE_MILVUS_KILLS`` (default 6) kills per scenario.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("milvus_lite", reason="the Milvus tests need kotae[milvus]")

from test_faults import SEED, Snapshot, _check_committed, _config, _corpora, _same, _write

from kotae.indexing.milvus_testing import MilvusLiteServer

KILLS = int(os.environ.get("KOTAE_MILVUS_KILLS", "6"))
CONTEXT = multiprocessing.get_context("fork")


def _settings(uri: str, collection: str) -> list[str]:
    return ["index.store=milvus", f"index.milvus_uri={uri}", f"index.milvus_collection={collection}"]


def _job(uri: str, collection: str, local: str, corpus: str, full: bool) -> None:  # in a forked child
    from kotae.indexing.job import run_index
    from kotae.indexing.testing import HashEmbedder, private_progress_lock
    from kotae.pipeline.config import load_pipeline_config

    private_progress_lock()  # a kill inside a progress bar must not leave the parent's lock taken
    config = load_pipeline_config(None, [*_overrides(), *_settings(uri, collection)])
    run_index(config, [Path(corpus)], index_dir=Path(local), full=full, embedder=HashEmbedder())
    os._exit(0)


def _overrides() -> list[str]:
    base = _config()
    return [
        f"index.passage_tokens={base.index.passage_tokens}",
        f"index.overlap_tokens={base.index.overlap_tokens}",
        "index.commit_documents=4",
        f"index.bm25_tokenizer={base.index.bm25_tokenizer}",
    ]


def _read(uri: str, collection: str, local: str, connection: Any) -> None:  # in a forked child
    """Send back what a reader sees now (no recovery), and the store's own consistency problems."""
    from kotae.indexing.milvus_store import MilvusDocumentStore

    try:
        store = MilvusDocumentStore(local, uri=uri, collection=collection)
        documents = store.filter_documents()
        snapshot = Snapshot(
            store.source_manifest(),
            {d.id: (d.content or "", d.meta.get("start"), d.meta.get("end")) for d in documents},
            {d.id: np.asarray(d.embedding) for d in documents},
        )
        connection.send((snapshot, store.check_consistency(), store.generation))
        store.close()
    except BaseException as error:
        connection.send(error)
    os._exit(0)


def _in_child(target: Any, *args: Any, timeout: float = 120) -> int | None:
    child = CONTEXT.Process(target=target, args=args)
    child.start()
    child.join(timeout)
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(10)
        pytest.fail(f"{target.__name__} hung for {timeout:.0f} s")
    return child.exitcode


def read(uri: str, collection: str, local: Path) -> tuple[Snapshot, list[str], int]:
    parent, child = CONTEXT.Pipe()
    _in_child(_read, uri, collection, str(local), child)
    result = parent.recv()
    if isinstance(result, BaseException):
        raise result
    return result


def index(uri: str, collection: str, local: Path, corpus: Path, full: bool) -> float:
    started = time.perf_counter()
    assert _in_child(_job, uri, collection, str(local), str(corpus), full) == 0
    return time.perf_counter() - started


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server, both corpus versions and the uninterrupted results (first index, incremental, full)."""
    root = tmp_path_factory.mktemp("milvus-faults")
    first, second = _corpora(SEED)
    _write(root / "v1", first)
    _write(root / "v2", second)
    server = MilvusLiteServer(root / "milvus")
    server.start()
    timings, references = {}, {}
    for name, start, corpus, full in (
        ("first", False, "v1", False),
        ("incremental", True, "v2", False),
        ("full", True, "v2", True),
    ):
        if start:
            index(server.uri, f"ref_{name}", root / f"ref-{name}", root / "v1", False)
        timings[name] = index(server.uri, f"ref_{name}", root / f"ref-{name}", root / corpus, full)
        snapshot, problems, _ = read(server.uri, f"ref_{name}", root / f"ref-{name}")
        assert problems == []
        references[name] = snapshot
    yield {"root": root, "server": server, "timings": timings, "references": references}
    server.stop()


@pytest.mark.parametrize("scenario", ["first", "incremental", "full"])
def test_kill_9_of_the_job_leaves_every_reader_a_committed_state(world: Any, scenario: str) -> None:
    root, server = world["root"], world["server"]
    before = Snapshot({}, {}, {}) if scenario == "first" else world["references"]["first"]
    after = world["references"][scenario]
    corpus = root / ("v1" if scenario == "first" else "v2")
    rng = random.Random(f"{SEED}-milvus-{scenario}")
    longest = max(world["timings"][scenario] * 1.2, 0.1)
    kills = attempts = completed = 0
    collection = f"kill_{scenario}_0"

    def reset(number: int) -> str:
        name = f"kill_{scenario}_{number}"
        if scenario != "first":
            index(server.uri, name, root / name, root / "v1", False)
        return name

    collection = reset(0)
    while kills < KILLS:
        attempts += 1
        assert attempts <= 4 * KILLS + 10, f"only {kills} kills landed in {attempts} runs"
        child = CONTEXT.Process(
            target=_job,
            args=(server.uri, collection, str(root / collection), str(corpus), scenario == "full"),
        )
        child.start()
        child.join(rng.uniform(0.0, longest))
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(60)
        killed = child.exitcode == -signal.SIGKILL
        kills += killed
        where = f"{scenario}, run {attempts} ({'killed' if killed else 'finished'})"
        snapshot, problems, _ = read(server.uri, collection, root / collection)
        assert problems == [], where
        _check_committed(snapshot, before, after, where)
        if child.exitcode == 0:
            _same(snapshot, after)
            completed += 1
            collection = reset(attempts)
        else:
            assert killed, where
    index(server.uri, collection, root / collection, corpus, scenario == "full")
    snapshot, problems, _ = read(server.uri, collection, root / collection)
    assert problems == []
    _same(snapshot, after)  # the next run completes to exactly the uninterrupted state
    print(f"milvus kill -9 {scenario}: {kills} kills survived in {attempts} runs ({completed} finished)")


def test_kill_9_of_the_milvus_lite_server_mid_reindex(world: Any) -> None:
    """The server dies mid-run: the job stops, and after a restart readers see a committed state
    (what the server acknowledged survived) and the next run completes the re-index."""
    root = world["root"]
    before, after = world["references"]["first"], world["references"]["incremental"]
    server = MilvusLiteServer(root / "milvus-killed")
    server.start()
    try:
        index(server.uri, "killed", root / "killed", root / "v1", False)
        rng = random.Random(f"{SEED}-server")
        for attempt in range(3):
            child = CONTEXT.Process(
                target=_job, args=(server.uri, "killed", str(root / "killed"), str(root / "v2"), False)
            )
            child.start()
            time.sleep(rng.uniform(0.05, world["timings"]["incremental"] * 0.8))
            server.kill()
            child.join(120)
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
                child.join(10)
            server.start()
            snapshot, problems, _ = read(server.uri, "killed", root / "killed")
            assert problems == [], f"attempt {attempt}"
            _check_committed(snapshot, before, after, f"server killed, attempt {attempt}")
        index(server.uri, "killed", root / "killed", root / "v2", False)
        snapshot, problems, _ = read(server.uri, "killed", root / "killed")
        assert problems == []
        _same(snapshot, after)
    finally:
        server.stop()
