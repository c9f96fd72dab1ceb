"""FaissDocumentStore beyond the conformance suite: index types, cosine scores, crash recovery."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from haystack import Document, Pipeline
from haystack.document_stores.errors import DocumentStoreError
from haystack.document_stores.types import DuplicatePolicy

from kotae.indexing.faiss_index import min_training_vectors
from kotae.indexing.retriever import FaissEmbeddingRetriever
from kotae.indexing.store import FAISS_NAME, FaissDocumentStore

DIM = 16


def make_docs(n: int, start: int = 0, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM))
    return [
        Document(
            id=f"d{start + i}",
            content=f"doc {start + i}",
            meta={"n": start + i},
            embedding=vectors[i].tolist(),
        )
        for i in range(n)
    ]


def cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF4,Flat", "IVF2,PQ4"])
def test_index_types_write_search_delete_reopen(tmp_path: Path, factory: str) -> None:
    store = FaissDocumentStore(tmp_path, faiss_factory=factory)
    needed = min_training_vectors(factory, DIM)
    first = make_docs(100)
    store.write_documents(first)
    assert store._staging == (needed > 100)
    rest = make_docs(200, start=100, seed=1)
    store.write_documents(rest)
    assert not store._staging  # trained once enough vectors existed
    docs = first + rest
    exact = factory in ("Flat", "HNSW32", "IVF4,Flat")
    for probe in (docs[3], docs[150], docs[299]):
        hits = store.embedding_retrieval(probe.embedding, top_k=5)
        ids = [h.id for h in hits]
        assert probe.id in ids
        if exact:
            assert ids[0] == probe.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
            assert hits[1].score == pytest.approx(
                cosine(probe.embedding, store.get_documents_by_id([ids[1]], True)[0].embedding), abs=1e-5
            )
    # delete and overwrite (HNSW cannot remove: the store rebuilds from SQLite)
    store.delete_documents(["d3", "d150"])
    moved = Document(id="d299", content="moved", embedding=docs[3].embedding)
    store.write_documents([moved], policy=DuplicatePolicy.OVERWRITE)
    assert store.count_documents() == 298
    assert "d150" not in [h.id for h in store.embedding_retrieval(docs[150].embedding, top_k=5)]
    top = store.embedding_retrieval(docs[3].embedding, top_k=3)
    assert "d299" in [h.id for h in top] and "d3" not in [h.id for h in top]
    assert store.check_consistency() == []
    store.close()
    reopened = FaissDocumentStore(tmp_path, faiss_factory=factory)
    assert reopened.check_consistency() == []
    assert reopened._index.ntotal == 298
    assert "d299" in [h.id for h in reopened.embedding_retrieval(docs[3].embedding, top_k=3)]
    reopened.close()


def test_stale_or_damaged_faiss_file_is_rebuilt_from_sqlite(tmp_path: Path) -> None:
    store = FaissDocumentStore(tmp_path)
    store.write_documents(make_docs(10))
    stale = tmp_path / "stale.faiss"
    shutil.copy(tmp_path / FAISS_NAME, stale)
    store.write_documents(make_docs(5, start=10, seed=2))
    store.close()
    # A kill after the SQLite commit but before the FAISS replace leaves the old file behind.
    shutil.copy(stale, tmp_path / FAISS_NAME)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{FAISS_NAME}.{dead.pid}.tmp").write_bytes(b"half-written")
    (tmp_path / f"bm25.{dead.pid}.tmp").mkdir()
    reopened = FaissDocumentStore(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    assert reopened._index.ntotal == 15 and reopened.check_consistency() == []
    new = make_docs(5, start=10, seed=2)[4]
    assert reopened.embedding_retrieval(new.embedding, top_k=1)[0].id == new.id
    reopened.close()
    (tmp_path / FAISS_NAME).write_bytes(b"garbage")
    again = FaissDocumentStore(tmp_path)
    assert again._index.ntotal == 15 and again.check_consistency() == []
    again.close()


def test_changing_the_factory_reindexes_without_reembedding(tmp_path: Path) -> None:
    store = FaissDocumentStore(tmp_path, faiss_factory="Flat")
    docs = make_docs(20)
    store.write_documents(docs)
    store.close()
    hnsw = FaissDocumentStore(tmp_path, faiss_factory="HNSW32")
    import faiss

    assert "HNSW" in type(faiss.downcast_index(hnsw._index.index)).__name__
    assert hnsw.embedding_retrieval(docs[7].embedding, top_k=1)[0].id == "d7"
    hnsw.close()


def test_another_store_object_sees_new_commits(tmp_path: Path) -> None:
    writer = FaissDocumentStore(tmp_path)
    reader = FaissDocumentStore(tmp_path)
    docs = make_docs(5)
    writer.write_documents(docs)
    assert reader.embedding_retrieval(docs[2].embedding, top_k=1)[0].id == "d2"
    reader.write_documents(make_docs(1, start=5, seed=3))
    assert writer.count_documents() == 6 and writer.check_consistency() == []
    writer.close()
    reader.close()


def test_dimension_mismatch_and_bad_arguments(tmp_path: Path) -> None:
    store = FaissDocumentStore(tmp_path)
    store.write_documents(make_docs(2))
    with pytest.raises(DocumentStoreError, match="16-d"):
        store.write_documents([Document(content="x", embedding=[0.1, 0.2])])
    assert store.count_documents() == 2  # the failed batch was rolled back
    with pytest.raises(DocumentStoreError, match="dimensions"):
        store.embedding_retrieval([0.1, 0.2])
    with pytest.raises(ValueError):
        store.embedding_retrieval([])
    with pytest.raises(ValueError):
        FaissDocumentStore(tmp_path / "x", faiss_factory="")
    store.close()
    with pytest.raises(DocumentStoreError, match="cannot index 16-d"):
        FaissDocumentStore(tmp_path, faiss_factory="IVF4,PQ5")
    bad = FaissDocumentStore(tmp_path / "y", faiss_factory="IVF4,PQ5")
    with pytest.raises(DocumentStoreError, match="faiss_factory"):
        bad.write_documents(make_docs(3))
    assert bad.count_documents() == 0
    bad.close()


def test_retrieval_with_filters_and_scaled_scores(tmp_path: Path) -> None:
    store = FaissDocumentStore(tmp_path)
    docs = make_docs(30)
    store.write_documents([*docs, Document(id="plain", content="no embedding")])
    hits = store.embedding_retrieval(
        docs[0].embedding, top_k=3, filters={"field": "meta.n", "operator": ">", "value": 20}
    )
    assert len(hits) == 3 and all(h.meta["n"] > 20 for h in hits)
    assert hits[0].score == pytest.approx(
        max(cosine(docs[0].embedding, d.embedding) for d in docs[21:]), abs=1e-5
    )
    assert hits[0].embedding is None
    scaled = store.embedding_retrieval(docs[0].embedding, top_k=1, scale_score=True)[0]
    assert scaled.score == pytest.approx(1.0, abs=1e-5)
    assert store.embedding_retrieval(docs[0].embedding, top_k=0) == []
    store.close()


def test_retriever_component_round_trip_and_pipeline(tmp_path: Path) -> None:
    store = FaissDocumentStore(tmp_path, faiss_factory="HNSW32")
    docs = make_docs(10)
    store.write_documents(docs)
    retriever = FaissEmbeddingRetriever(
        store, top_k=2, filters={"field": "meta.n", "operator": "<", "value": 5}
    )
    data = retriever.to_dict()
    assert data["init_parameters"]["document_store"]["init_parameters"]["faiss_factory"] == "HNSW32"
    clone = FaissEmbeddingRetriever.from_dict(data)
    assert clone.to_dict() == data
    pipeline = Pipeline()
    pipeline.add_component("retriever", clone)
    restored = Pipeline.loads(
        pipeline.dumps(), allowed_modules=["kotae.indexing.retriever", "kotae.indexing.store"]
    )
    result = restored.run({"retriever": {"query_embedding": docs[4].embedding}})["retriever"]["documents"]
    assert result[0].id == "d4" and len(result) == 2
    assert clone.run(query_embedding=docs[8].embedding, top_k=1)["documents"][0].meta["n"] < 5
    with pytest.raises(ValueError, match="top_k"):
        FaissEmbeddingRetriever(store, top_k=0)
    with pytest.raises(TypeError):
        FaissEmbeddingRetriever(object())  # type: ignore[arg-type]
    store.close()


def test_a_store_path_sqlite_cannot_open_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "store.sqlite3").mkdir()  # a folder where the database file belongs
    with pytest.raises(DocumentStoreError) as caught:
        FaissDocumentStore(tmp_path)
    message = str(caught.value)
    assert f"{tmp_path / 'store.sqlite3'} cannot be opened" in message and "\n" not in message
    assert (tmp_path / "store.sqlite3").is_dir()  # nothing moved aside or deleted
