"""What readers of a Milvus collection see while a writer commits, against a real Milvus Lite server.

- a reader that meets a writer ending its journal (or finishing its commit) mid-read reads again and
  sees the last commit or the next one, never an error or a mix;
- documents written over existing ones (``DuplicatePolicy.OVERWRITE``, metadata updates) are part of
  the journalled commit: a writer killed with SIGKILL at a random point leaves every reader all of
  the old versions or all of the new ones, and the next writer finishes or undoes the commit;
- a write whose embeddings do not fit the collection is refused in one line, leaving it as it was;
- reading commands (``ask``, ``serve``, ``pipeline show``, opening a store) create no collection.

The interleavings in the first group are forced by pausing the writer's Milvus client inside a
request and letting it finish at a chosen point of the reader's requests (the store code runs
unchanged on both sides).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from haystack import Document
from haystack.document_stores.errors import DocumentStoreError
from haystack.document_stores.types import DuplicatePolicy
from typer.testing import CliRunner

pytest.importorskip("milvus_lite", reason="the Milvus tests need kotae[milvus]")

from kotae.indexing.milvus_store import MilvusDocumentStore

CONTEXT = multiprocessing.get_context("fork")
KILLS = int(os.environ.get("KOTAE_MILVUS_KILLS", "6"))
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"


def _name() -> str:
    return f"i{uuid.uuid4().hex[:12]}"


def _documents(version: int, count: int, dim: int = 4) -> list[Document]:
    return [
        Document(
            id=f"d{i:05d}",
            content=f"version {version} of passage {i}",
            meta={"version": version},
            embedding=[1.0, float(version), float(i % 7), 0.5][:dim],
        )
        for i in range(count)
    ]


def _versions(store: MilvusDocumentStore) -> set[int]:
    return {d.meta["version"] for d in store.filter_documents()}


class _PausedWriter:
    """A writer in a thread that waits after its upsert into the passage collection until :meth:`finish`."""

    def __init__(self, store: MilvusDocumentStore, **apply: Any) -> None:
        self.store = store
        self.inside = threading.Event()
        self.go = threading.Event()
        upsert = store._client.upsert

        def paused_upsert(collection: str, *args: Any, **kwargs: Any) -> Any:
            result = upsert(collection, *args, **kwargs)
            if collection == store.collection and not self.go.is_set():
                self.inside.set()
                self.go.wait(60)
            return result

        store._client.upsert = paused_upsert
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(apply,), daemon=True)

    def _run(self, apply: dict[str, Any]) -> None:
        try:
            self.store.apply(**apply)
        except BaseException as error:  # reported by finish()
            self.error = error

    def start(self) -> _PausedWriter:
        self.thread.start()
        assert self.inside.wait(60), "the writer never reached its passage upsert"
        return self

    def finish(self) -> None:
        self.go.set()
        self.thread.join(60)
        assert not self.thread.is_alive() and self.error is None, self.error


@pytest.mark.parametrize("moment", ["before the journal is read", "after the journal is read"])
def test_a_reader_meeting_the_end_of_a_commit_reads_again(
    tmp_path: Path, milvus_server: Any, moment: str
) -> None:
    """The writer finishes between two of the reader's requests: the reader sees the next commit whole."""
    name = _name()
    writer = MilvusDocumentStore(tmp_path / "w", uri=milvus_server.uri, collection=name)
    writer.write_documents(_documents(1, 6))
    reader = MilvusDocumentStore(tmp_path / "r", uri=milvus_server.uri, collection=name)
    old = [d.id for d in _documents(1, 6)]
    new = [
        Document(id=f"n{i}", content=f"new {i}", meta={"version": 2}, embedding=[1.0, 2.0, 0.0, 0.5])
        for i in range(6)
    ]
    paused = _PausedWriter(writer, write=new, delete_ids=old).start()  # prepare header written

    query = reader._client.query
    finished = False

    def racing_query(collection: str, *args: Any, **kwargs: Any) -> Any:
        nonlocal finished
        if collection == f"{name}_kotae_journal" and not finished and moment == "before the journal is read":
            finished = True
            paused.finish()
        rows = query(collection, *args, **kwargs)
        if collection == f"{name}_kotae_journal" and not finished:
            finished = True
            paused.finish()
        return rows

    reader._client.query = racing_query
    documents = reader.filter_documents()
    assert finished
    assert {d.meta["version"] for d in documents} == {2} and len(documents) == 6
    reader._client.query = query
    assert reader.count_documents() == 6 and reader.check_consistency() == []
    for store in (reader, writer):
        store.close()


def test_an_overwrite_is_invisible_until_its_commit_point(tmp_path: Path, milvus_server: Any) -> None:
    """Readers see none of an OVERWRITE (or a metadata update) before the commit, all of it after."""
    name = _name()
    writer = MilvusDocumentStore(tmp_path / "w", uri=milvus_server.uri, collection=name)
    writer.write_documents(_documents(1, 8))
    reader = MilvusDocumentStore(tmp_path / "r", uri=milvus_server.uri, collection=name)
    paused = _PausedWriter(writer, write=_documents(2, 8), policy=DuplicatePolicy.OVERWRITE).start()
    time.sleep(0.2)
    assert _versions(reader) == {1} and reader.count_documents() == 8
    paused.finish()
    assert _versions(reader) == {2} and reader.count_documents() == 8
    query = _documents(2, 8)[3].embedding
    assert reader.embedding_retrieval(query, top_k=1)[0].meta["version"] == 2
    updating = _PausedWriter(writer, update_meta={"d00001": {"version": 3}, "d00002": {"version": 3}}).start()
    assert _versions(reader) == {2}
    updating.finish()
    assert [d.meta["version"] for d in reader.get_documents_by_id(["d00001", "d00002", "d00003"])] == [
        3,
        3,
        2,
    ]
    assert reader.check_consistency() == [] and reader.count_documents() == 8
    for store in (reader, writer):
        store.close()


def _overwrite(uri: str, name: str, local: str, version: int, count: int) -> None:  # in a forked child
    store = MilvusDocumentStore(local, uri=uri, collection=name)
    store.write_documents(_documents(version, count), policy=DuplicatePolicy.OVERWRITE)
    os._exit(0)


def _look(uri: str, name: str, local: str, connection: Any) -> None:  # in a forked child: no recovery
    try:
        store = MilvusDocumentStore(local, uri=uri, collection=name)
        documents = store.filter_documents()
        connection.send(
            ([d.meta["version"] for d in documents], [d.content for d in documents], store.count_documents())
        )
    except BaseException as error:
        connection.send(error)
    os._exit(0)


def _seen(uri: str, name: str, local: Path) -> tuple[list[int], list[str], int]:
    parent, child = CONTEXT.Pipe()
    process = CONTEXT.Process(target=_look, args=(uri, name, str(local), child))
    process.start()
    process.join(120)
    result = parent.recv()
    if isinstance(result, BaseException):
        raise result
    return result


def test_kill_9_during_an_overwrite_leaves_all_old_or_all_new(tmp_path: Path, milvus_server: Any) -> None:
    """A writer overwriting every document is killed at random points; readers see one version only."""
    count, name, uri = 2_000, _name(), milvus_server.uri
    for version in (0, 1):  # the first write creates the collections; the second one is timed
        started = time.perf_counter()
        process = CONTEXT.Process(target=_overwrite, args=(uri, name, str(tmp_path / "w"), version, count))
        process.start()
        process.join(300)
        assert process.exitcode == 0
    longest = max(1.2 * (time.perf_counter() - started), 0.5)
    rng = random.Random("overwrite-kill")
    target, kills, attempts = 0, 0, 0
    while kills < KILLS:
        attempts += 1
        assert attempts <= 4 * KILLS + 10, f"only {kills} kills landed in {attempts} runs"
        process = CONTEXT.Process(target=_overwrite, args=(uri, name, str(tmp_path / "w"), target, count))
        process.start()
        process.join(rng.uniform(0.0, longest))
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)  # type: ignore[arg-type]
        process.join(60)
        kills += process.exitcode == -signal.SIGKILL
        versions, contents, counted = _seen(uri, name, tmp_path / "r")
        where = f"run {attempts} ({'killed' if process.exitcode else 'finished'})"
        assert len(versions) == counted == count, where
        assert len(set(versions)) == 1, f"{where}: a mix of versions {sorted(set(versions))}"
        assert contents == [d.content for d in _documents(versions[0], count)], where
        if versions[0] == target:
            target = 1 - target
    store = MilvusDocumentStore(tmp_path / "w", uri=uri, collection=name)
    store.write_documents(_documents(5, count), policy=DuplicatePolicy.OVERWRITE)  # recovers, then commits
    assert _versions(store) == {5} and store.count_documents() == count and store.check_consistency() == []
    store.close()


def test_a_new_embedding_size_is_refused_in_one_line(tmp_path: Path, milvus_server: Any) -> None:
    """Documents without embeddings first, then embedded ones: refused, the collection unchanged."""
    store = MilvusDocumentStore(tmp_path / "index", uri=milvus_server.uri, collection=_name())
    store.write_documents([Document(id="plain", content="no vector")])
    with pytest.raises(DocumentStoreError) as refused:
        store.write_documents([Document(id="v", content="vector", embedding=[0.1, 0.2, 0.3])])
    message = str(refused.value)
    assert "\n" not in message and "without embeddings" in message and "delete_all_documents" in message
    assert [d.id for d in store.filter_documents()] == ["plain"]
    store.delete_all_documents()
    store.write_documents([Document(id="v", content="vector", embedding=[0.1, 0.2, 0.3])])
    assert store.embedding_retrieval([0.1, 0.2, 0.3], top_k=1)[0].id == "v"
    store.close()


def _collections(server: Any) -> set[str]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=server.uri)
    try:
        return set(client.list_collections())
    finally:
        client.close()


def test_reading_commands_create_no_collection(tmp_path: Path, milvus_server: Any) -> None:
    from kotae.cli import app
    from kotae.pipeline.config import load_pipeline_config
    from kotae.pipeline.server import create_app
    from kotae.pipeline.testing import ServedApp, build_tiny_setup

    setup = build_tiny_setup(tmp_path / "tiny", index=False)
    overrides = [
        *setup.overrides,
        "index.store=milvus",
        f"index.milvus_uri={milvus_server.uri}",
        f"index.milvus_collection={_name()}",
    ]
    before = _collections(milvus_server)
    MilvusDocumentStore(tmp_path / "index", uri=milvus_server.uri, collection=_name()).close()
    args: list[str] = []
    for override in overrides:
        args += ["--set", override]
    for command in (["ask", "富士山の高さは？"], ["pipeline", "show"]):
        result = CliRunner().invoke(app, [*command, "--config", str(CONFIGS / "default.yaml"), *args])
        assert "Traceback" not in result.output, result.output
    config = load_pipeline_config(CONFIGS / "default.yaml", overrides)
    try:
        with ServedApp(create_app(config)) as served:
            httpx.get(served.url + "/health", timeout=60)
    except Exception:  # serve may refuse an empty index; it must still create nothing
        pass
    assert _collections(milvus_server) == before
