"""Faults: kill -9 loops over three indexing scenarios, a full disk, damaged index files.

**Kill -9 loop.** For a first index, an incremental re-index (updates, deletes, additions) and a
``--full`` rebuild of a changed corpus, the job runs in a forked process (the parent has paid for
the imports, so a start costs milliseconds) and gets SIGKILL after a seeded random delay, again
and again, each run resuming from what the last one left, until ``KOTAE_KILLS`` (default 20)
kills have landed inside a run. After every kill:

- the store opens; SQLite and FAISS hold the same ids (and the FAISS file carries SQLite's
  generation); the manifest lists exactly the passages stored, none twice;
- every document is either wholly at its last committed version or wholly at the new one
  (never half-updated), with exactly that version's passages and texts;
- when a run finishes, the store equals the uninterrupted run's (manifest, passage texts and
  offsets, embeddings).

``KOTAE_KILLS=200 pytest tests/test_faults.py -k kill`` is the longer soak.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kotae.indexing.job import run_index
from kotae.indexing.store import FAISS_NAME, SQLITE_NAME, FaissDocumentStore
from kotae.indexing.testing import HashEmbedder, private_progress_lock
from kotae.pipeline.config import PipelineConfig, load_pipeline_config

ROOT = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("KOTAE_KILLS", "20"))
SEED = int(os.environ.get("KOTAE_KILL_SEED", "12"))
SENTENCES = [
    "東京は日本の首都です。",
    "富士山は日本一高い山である！",
    "京都には古い寺が多い？",
    "The quick brown fox jumps over the lazy dog.",
    "Tokyo is the capital of Japan.",
    "信濃川は日本で一番長い川です。",
]
KILLS_SURVIVED: dict[str, int] = {}


def _config() -> PipelineConfig:
    return load_pipeline_config(
        None,
        [
            "index.passage_tokens=24",
            "index.overlap_tokens=4",
            "index.commit_documents=2",
            "index.bm25_tokenizer=bigram",
        ],
    )


def _write(folder: Path, docs: dict[str, str]) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, text in docs.items():
        (folder / name).write_text(text, encoding="utf-8")


def _corpora(seed: int) -> tuple[dict[str, str], dict[str, str]]:
    """Version 1 (80 documents) and version 2: 15 updated, 10 deleted, 10 added."""
    rng = random.Random(seed)

    def body(i: int) -> str:
        return f"文書{i}。" + "".join(rng.choice(SENTENCES) for _ in range(rng.randint(3, 14)))

    first = {f"doc{i:03d}.txt": body(i) for i in range(80)}
    second = dict(first)
    names = sorted(first)
    for name in names[:15]:
        second[name] = body(1000) + "（改訂）"
    for name in names[15:25]:
        del second[name]
    for i in range(80, 90):
        second[f"doc{i:03d}.txt"] = body(i)
    return first, second


@dataclass
class Snapshot:
    manifest: dict[str, tuple[str, list[str]]]
    passages: dict[str, tuple[str, Any, Any]]  # id -> (text, start, end)
    embeddings: dict[str, np.ndarray]


def _snapshot(index: Path) -> Snapshot:
    store = FaissDocumentStore(index)
    try:
        documents = store.filter_documents()
        return Snapshot(
            store.source_manifest(),
            {
                d.id: (d.content or "", (d.meta or {}).get("start"), (d.meta or {}).get("end"))
                for d in documents
            },
            {d.id: np.asarray(d.embedding) for d in documents},
        )
    finally:
        store.close()


def _check_store(index: Path) -> Snapshot:
    """The store opens and both sides agree; returns what it holds."""
    import faiss

    store = FaissDocumentStore(index)
    try:
        assert store.check_consistency() == []
        vids = sorted(
            v for (v,) in store._conn.execute("SELECT vid FROM documents WHERE embedding IS NOT NULL")
        )
        index_ids = (
            [] if store._index is None else sorted(faiss.vector_to_array(store._index.id_map).tolist())
        )
        assert index_ids == vids, "FAISS and SQLite hold different ids"
    finally:
        store.close()
    return _snapshot(index)


def _check_committed(snapshot: Snapshot, before: Snapshot, after: Snapshot, where: str) -> None:
    """Every document wholly at one committed version; the passages are exactly the manifest's."""
    listed: list[str] = []
    for key, entry in snapshot.manifest.items():
        assert entry in (before.manifest.get(key), after.manifest.get(key)), f"{where}: {key} half-updated"
        listed.extend(entry[1])
    assert len(listed) == len(set(listed)), f"{where}: a passage is listed twice"
    assert set(listed) == set(snapshot.passages), f"{where}: stored passages differ from the manifest"
    for pid, passage in snapshot.passages.items():
        assert passage in (before.passages.get(pid), after.passages.get(pid)), (
            f"{where}: passage {pid} changed"
        )


def _same(a: Snapshot, b: Snapshot) -> None:
    assert a.manifest == b.manifest and a.passages == b.passages
    assert a.embeddings.keys() == b.embeddings.keys()
    for pid, vector in a.embeddings.items():
        np.testing.assert_allclose(vector, b.embeddings[pid], rtol=0, atol=1e-6)


def _job(index: str, corpus: str, full: bool) -> None:  # runs in the forked child
    import faiss

    private_progress_lock()  # a kill inside a progress bar must not leave the parent's lock taken
    faiss.omp_set_num_threads(1)
    run_index(_config(), [Path(corpus)], index_dir=Path(index), full=full, embedder=HashEmbedder())
    os._exit(0)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both corpus versions and the uninterrupted results: first index, incremental, full."""
    import faiss

    faiss.omp_set_num_threads(1)
    root = tmp_path_factory.mktemp("faults")
    first, second = _corpora(SEED)
    _write(root / "v1", first)
    _write(root / "v2", second)
    # one untimed run first: the timings below calibrate when children are killed, and a cold first
    # run (imports, first-use set-up) would stretch them so far that most children finish unkilled
    run_index(_config(), [root / "v1"], index_dir=root / "warm-up", embedder=HashEmbedder())
    timings = {}
    references = {}
    for name, start, corpus, full in (
        ("first", None, "v1", False),
        ("incremental", "first", "v2", False),
        ("full", "first", "v2", True),
    ):
        index = root / f"ref-{name}"
        if start:
            shutil.copytree(root / f"ref-{start}", index)
        started = time.perf_counter()
        run_index(_config(), [root / corpus], index_dir=index, full=full, embedder=HashEmbedder())
        timings[name] = time.perf_counter() - started
        references[name] = _check_store(index)
    empty = Snapshot({}, {}, {})
    return {"root": root, "timings": timings, "references": references, "empty": empty}


@pytest.mark.parametrize("scenario", ["first", "incremental", "full"])
def test_kill_9_loop(corpora: dict[str, Any], scenario: str, tmp_path: Path) -> None:
    root: Path = corpora["root"]
    references: dict[str, Snapshot] = corpora["references"]
    before = corpora["empty"] if scenario == "first" else references["first"]
    after = references[scenario]
    corpus = root / ("v1" if scenario == "first" else "v2")
    index = tmp_path / "index"

    def reset() -> None:
        shutil.rmtree(index, ignore_errors=True)
        if scenario != "first":
            shutil.copytree(root / "ref-first", index)

    reset()
    rng = random.Random(f"{SEED}-{scenario}")
    context = multiprocessing.get_context("fork")
    longest = max(corpora["timings"][scenario] * 1.3, 0.05)
    kills = completed = attempts = 0
    while kills < KILLS:
        attempts += 1
        assert attempts <= 4 * KILLS + 10, f"only {kills} kills landed in {attempts} runs"
        child = context.Process(target=_job, args=(str(index), str(corpus), scenario == "full"))
        child.start()
        child.join(rng.uniform(0.0, longest))
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(60)
        if child.exitcode is None:  # never leave a hung child behind
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
            child.join(10)
            pytest.fail(f"{scenario}: the job hung for 60 s (run {attempts})")
        kills += child.exitcode == -signal.SIGKILL  # not when it finished just before the signal
        where = (
            f"{scenario}, run {attempts} ({'killed' if child.exitcode == -signal.SIGKILL else 'finished'})"
        )
        snapshot = _check_store(index)
        _check_committed(snapshot, before, after, where)
        if child.exitcode == 0:
            _same(snapshot, after)
            completed += 1
            reset()
        else:
            assert child.exitcode == -signal.SIGKILL, where
    run_index(_config(), [corpus], index_dir=index, full=scenario == "full", embedder=HashEmbedder())
    _same(_check_store(index), after)  # the next run completes to exactly the uninterrupted state
    KILLS_SURVIVED[scenario] = kills
    print(f"kill -9 {scenario}: {kills} kills survived in {attempts} runs ({completed} finished)")


# ------------------------------------------------------------------------------------------ disk full


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or shutil.which("mount") is None or os.environ.get("KOTAE_NO_TMPFS"):
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MiB tmpfs where this machine lets us mount one (root in a container), else None."""
    folder = tmp_path / "disk"
    if not _mount_tmpfs(folder, "16m"):
        yield None
        return
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_disk_full_stops_with_one_line_and_keeps_the_last_commit(
    corpora: dict[str, Any], small_disk: Path | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root: Path = corpora["root"]
    big = tmp_path / "big"
    _write(big, {f"big{i:03d}.txt": (SENTENCES[i % 6] * 40) + f"番号{i}。" for i in range(300)})
    if small_disk is not None:  # a real full disk: the `kotae index` CLI on a nearly full tmpfs
        index = small_disk / "index"
        (small_disk / "filler").write_bytes(b"\0" * (15 * 1024 * 1024 + 256 * 1024))
        embedder = _tiny_embedder(tmp_path)
        config = tmp_path / "pipeline.yaml"
        config.write_text("index:\n  commit_documents: 4\n  bm25_tokenizer: bigram\n", encoding="utf-8")
        command = [
            str(Path(sys.executable).with_name("kotae")),
            "index",
            "--config",
            str(config),
            "--index-dir",
            str(index),
            "--corpus",
            str(big),
            "--set",
            f"embedder.model={embedder}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2, result.stderr[-3000:]
        assert len(lines) == 1 and "disk is full" in lines[0] and "run the same command again" in lines[0], (
            lines
        )
        (small_disk / "filler").unlink()
        kept = _check_store(index)
        assert kept.manifest, "nothing was committed before the disk filled up"
        _check_committed(kept, Snapshot({}, {}, {}), kept, "after ENOSPC")
        settings = load_pipeline_config(config, [f"embedder.model={embedder}"])
        resumed = run_index(settings, [big], index_dir=index)  # the same job, in process: resumes
        assert resumed.unchanged == len(kept.manifest) and len(_check_store(index).manifest) == 300
        return
    # No tmpfs here: inject ENOSPC into the FAISS file write of the fifth commit.
    index = tmp_path / "index"
    real_open = open
    calls = {"n": 0}

    def failing_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(".tmp") and FAISS_NAME in str(file) and "w" in mode:
            calls["n"] += 1
            if calls["n"] >= 5:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OSError) as raised:
        run_index(_config(), [big], index_dir=index, embedder=HashEmbedder())
    monkeypatch.undo()
    from kotae.cli import disk_full_message

    message = disk_full_message(raised.value)
    assert message is not None and "\n" not in message and FAISS_NAME in message
    kept = _check_store(index)
    assert kept.manifest
    _check_committed(kept, Snapshot({}, {}, {}), kept, "after ENOSPC")
    run_index(_config(), [big], index_dir=index, embedder=HashEmbedder())
    assert len(_check_store(index).manifest) == 300
    del root


def _tiny_embedder(tmp_path: Path) -> Path:
    from kotae.indexing.testing import build_tiny_model

    return build_tiny_model(tmp_path / "tiny-embedder")


def test_disk_full_messages() -> None:
    from kotae.cli import disk_full_message

    assert disk_full_message(OSError(errno.ENOSPC, "No space left on device", "/x/vectors.faiss.1.tmp"))
    assert "store.sqlite3" in (disk_full_message(sqlite3.OperationalError("database or disk is full")) or "")
    assert disk_full_message(OSError(errno.EACCES, "denied")) is None
    assert disk_full_message(ValueError("full")) is None


# ------------------------------------------------------------------------------------------ damaged files

FAISS_DAMAGE = {
    "cut in half": lambda data: data[: len(data) // 2],
    "cut to 5 bytes": lambda data: data[:5],
    "empty": lambda data: b"",
    "bits flipped in the vectors": lambda data: (
        data[:300] + bytes(b ^ 0xFF for b in data[300:600]) + data[600:]
    ),
    "bits flipped in the ids": lambda data: data[:-64] + bytes(b ^ 0x55 for b in data[-64:]),
    "random payload": lambda data: data[:30] + random.Random(0).randbytes(len(data) - 30),
    "older format": lambda data: b"KOTAEFX1" + data[8:],
}
SQLITE_DAMAGE = {
    "cut in half": lambda data: data[: len(data) // 2],
    "cut to 50 bytes": lambda data: data[:50],
    "random header": lambda data: random.Random(1).randbytes(100) + data[100:],
    "random pages": lambda data: data[:4096] + random.Random(2).randbytes(len(data) - 4096),
}


def _copy_with(source: Path, target: Path, name: str, damage: Any) -> Path:
    shutil.copytree(source, target)
    path = target / name
    path.write_bytes(damage(path.read_bytes()))
    return target


def _top_ids(index: Path, queries: list[np.ndarray]) -> list[list[str]]:
    store = FaissDocumentStore(index)
    try:
        return [[d.id for d in store.embedding_retrieval(q.tolist(), top_k=5)] for q in queries]
    finally:
        store.close()


@pytest.mark.parametrize("damage", list(FAISS_DAMAGE))
def test_a_damaged_faiss_file_is_rebuilt_from_sqlite_never_searched(
    corpora: dict[str, Any], tmp_path: Path, damage: str
) -> None:
    source = corpora["root"] / "ref-first"
    queries = list(HashEmbedder().embed([*SENTENCES, "文書3。"]))
    expected = _top_ids(source, queries)
    index = _copy_with(source, tmp_path / "index", FAISS_NAME, FAISS_DAMAGE[damage])
    assert _top_ids(index, queries) == expected  # the same answers as before the damage
    _same(_check_store(index), corpora["references"]["first"])
    header = (index / FAISS_NAME).read_bytes()[:16]
    assert header.startswith(b"KOTAEFX2")  # rewritten whole, with its checksum


@pytest.mark.parametrize("damage", list(SQLITE_DAMAGE))
def test_a_damaged_sqlite_file_is_named_with_the_command_that_rebuilds_it(
    corpora: dict[str, Any], tmp_path: Path, damage: str
) -> None:
    from haystack.document_stores.errors import DocumentStoreError

    from kotae.errors import KotaeError
    from kotae.pipeline.build import require_index

    index = _copy_with(corpora["root"] / "ref-first", tmp_path / "index", SQLITE_NAME, SQLITE_DAMAGE[damage])
    with pytest.raises(DocumentStoreError) as opened:
        FaissDocumentStore(index)
    message = str(opened.value)
    assert str(index / SQLITE_NAME) in message and "kotae index --full" in message and "\n" not in message
    with pytest.raises(KotaeError) as job:
        run_index(_config(), [corpora["root"] / "v1"], index_dir=index, embedder=HashEmbedder())
    assert SQLITE_NAME in str(job.value) and "--full" in str(job.value)
    try:
        require_index(index)  # what kotae ask / serve check first
    except KotaeError as error:
        assert "--full" in str(error) and "\n" not in str(error)
    rebuilt = run_index(
        _config(), [corpora["root"] / "v1"], index_dir=index, full=True, embedder=HashEmbedder()
    )
    assert rebuilt.added == 80
    _same(_check_store(index), corpora["references"]["first"])
    assert [p.name for p in index.glob(f"{SQLITE_NAME}.damaged-*")], "the damaged file is kept aside"
