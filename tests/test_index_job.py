"""The indexing job: incremental re-runs, --full, summaries, the CLI, and kill -9 safety."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kotae.errors import KotaeError
from kotae.indexing.bm25 import load_bm25
from kotae.indexing.job import index_lock, run_index
from kotae.indexing.store import SQLITE_NAME, FaissDocumentStore
from kotae.indexing.testing import HashEmbedder, build_tiny_model
from kotae.pipeline.config import load_pipeline_config

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "東京は日本の首都です。",
    "富士山は日本一高い山である！",
    "京都には古い寺が多い？",
    "The quick brown fox jumps over the lazy dog.",
    "Tokyo is the capital of Japan.",
]


def write_corpus(folder: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = "".join(rng.choice(SENTENCES) for _ in range(rng.randint(2, 12)))
        (folder / f"doc{i:03d}.txt").write_text(f"文書{i}。{body}", encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def config(*overrides: str):
    return load_pipeline_config(None, ["index.passage_tokens=30", "index.overlap_tokens=5", *overrides])


def store_state(index: Path) -> tuple[int, list[str], dict[str, tuple[str, list[str]]]]:
    store = FaissDocumentStore(index)
    try:
        return store.count_documents(), store.check_consistency(), store.source_manifest()
    finally:
        store.close()


def test_incremental_runs(tmp_path: Path) -> None:
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    write_corpus(corpus, 12)
    (corpus / "skip.xls").write_bytes(b"\xd0\xcf\x11\xe0")  # a format kotae does not read
    embedder = HashEmbedder()

    first = run_index(config(), [corpus], index, embedder=embedder)
    assert (first.added, first.updated, first.removed, first.unchanged) == (12, 0, 0, 0)
    assert first.passages_added == len(embedder.embedded) == first.passages_total > 12
    assert [p.reason for p in first.skipped] == ["unsupported extension '.xls'"]
    out = first.to_json()
    assert {"added", "updated", "removed", "unchanged", "passages", "skipped", "seconds"} <= out.keys()
    json.dumps(out)

    embedder.embedded.clear()
    again = run_index(config(), [corpus], index, embedder=embedder)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 12)
    assert embedder.embedded == [] and again.passages_total == first.passages_total

    # Edit one document, delete another: only the edited one is re-embedded.
    (corpus / "doc003.txt").write_text("編集された文書です。新しい内容がある。", encoding="utf-8")
    (corpus / "doc007.txt").unlink()
    count, problems, manifest = store_state(index)
    old_passages = manifest[str(corpus / "doc003.txt")][1] + manifest[str(corpus / "doc007.txt")][1]
    third = run_index(config(), [corpus], index, embedder=embedder)
    assert (third.added, third.updated, third.removed, third.unchanged) == (0, 1, 1, 10)
    assert embedder.embedded == ["編集された文書です。新しい内容がある。"]
    assert third.passages_removed == len(old_passages) and third.passages_added == 1
    count, problems, manifest = store_state(index)
    assert problems == [] and count == third.passages_total == first.passages_total - len(old_passages) + 1
    assert str(corpus / "doc007.txt") not in manifest
    store = FaissDocumentStore(index)
    assert not store.get_documents_by_id(old_passages)
    bm25 = load_bm25(store)
    assert set(bm25.ids) == {d.id for d in store.filter_documents()}
    assert bm25.search("編集された文書", top_k=1)[0][0] == manifest[str(corpus / "doc003.txt")][1][0]
    # Offsets map every passage back to its source text.
    for document in store.filter_documents():
        source = Path(document.meta["source"]).read_text(encoding="utf-8")
        assert source[document.meta["start"] : document.meta["end"]] == document.content
    store.close()

    embedder.embedded.clear()
    full = run_index(config(), [corpus], index, full=True, embedder=embedder)
    assert (full.added, full.unchanged, full.full) == (11, 0, True)
    assert len(embedder.embedded) == full.passages_total == count


def test_changed_settings_rebuild_and_limits(tmp_path: Path) -> None:
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    write_corpus(corpus, 3)
    run_index(config(), [corpus], index, embedder=HashEmbedder())
    other = run_index(config(), [corpus], index, embedder=HashEmbedder(dim=8, fingerprint="other-model"))
    assert other.full and other.added == 3 and "rebuilding" in other.notes[0]
    small = run_index(
        config("index.passage_tokens=500"), [corpus], index, embedder=HashEmbedder(max_tokens=20)
    )
    assert any("exceeds" in note for note in small.notes) and small.full and small.added == 3
    with pytest.raises(KotaeError, match="faiss_factory"):
        run_index(config("index.faiss_factory=IVF4,PQ5"), [corpus], index, embedder=HashEmbedder())
    with pytest.raises(KotaeError, match="not found"):
        run_index(config(), [tmp_path / "nope"], index, embedder=HashEmbedder())
    assert store_state(index)[0] == small.passages_total  # nothing was removed


def test_one_job_per_index(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 1)
    with index_lock(tmp_path / "index"), pytest.raises(KotaeError, match="already"):
        run_index(config(), [tmp_path / "corpus"], tmp_path / "index", embedder=HashEmbedder())


def test_cli_with_a_real_sentence_transformer(tmp_path: Path, tiny_model: Path) -> None:
    from kotae.cli import app

    corpus = tmp_path / "corpus"
    write_corpus(corpus, 4)
    (corpus / "extra.jsonl").write_text('{"text": "追加の文書。"}\n{bad json\n', encoding="utf-8")
    args = ["index", "--corpus", str(corpus / "doc000.txt"), str(corpus / "doc001.txt"), str(corpus)]
    args += ["--index-dir", str(tmp_path / "index"), "--json", "--set", f"embedder.model={tiny_model}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["added"] == 5 and summary["passages"]["total"] >= 5
    assert summary["skipped"][0]["reason"].startswith("malformed JSON")
    again = CliRunner().invoke(app, [a for a in args if a != "--json"])
    assert again.exit_code == 0 and "0 added, 0 updated, 0 removed, 5 unchanged" in again.stdout
    store = FaissDocumentStore(tmp_path / "index")
    document = store.filter_documents()[0]
    assert len(document.embedding) == 16
    assert store.embedding_retrieval(document.embedding, top_k=1)[0].id == document.id
    store.close()


def _generation(index: Path) -> int:
    try:
        with sqlite3.connect(f"file:{index / SQLITE_NAME}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def test_kill_9_at_random_points_leaves_a_consistent_index(tmp_path: Path, tiny_model: Path) -> None:
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    write_corpus(corpus, 60, seed=1)
    settings = {
        "embedder": {"model": str(tiny_model), "batch_size": 8},
        "index": {"passage_tokens": 24, "overlap_tokens": 4, "commit_documents": 3},
    }
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    command = [sys.executable, "-m", "kotae", "index", "--json", "--corpus", str(corpus)]
    command += ["--config", str(config_path), "--index-dir", str(index)]  # the real CLI, killed at random
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    rng = random.Random(4)
    kills = 0
    for attempt in range(3):
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        start_generation = _generation(index)
        target = start_generation + rng.randint(1, 4)
        deadline = time.monotonic() + 60
        while process.poll() is None and _generation(index) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))  # land anywhere inside the next commit
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        count, problems, manifest = store_state(index)
        assert problems == [], f"attempt {attempt}: {problems}"
        listed = sum(len(p) for _, p in manifest.values())
        assert count == listed  # every stored passage belongs to a committed document, and vice versa
    assert kills == 3
    done_before = len(manifest)
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    assert summary["unchanged"] == done_before and summary["added"] == 60 - done_before
    count, problems, manifest = store_state(index)
    assert problems == [] and len(manifest) == 60 and count == summary["passages"]["total"]
