"""kotae's Milvus store against a real Milvus Lite server: Haystack's conformance tests and kotae's own."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from haystack import Document

pytest.importorskip("pymilvus", reason="the Milvus store needs kotae[milvus]")

from test_store_conformance import KotaeStoreConformance

from kotae.indexing.milvus_store import MilvusDocumentStore


def _without_embedding(document: Document) -> Document:
    return Document.from_dict({**document.to_dict(flatten=False), "embedding": None})


def _open(tmp_path, server, name: str | None = None) -> MilvusDocumentStore:
    return MilvusDocumentStore(
        tmp_path / "index", uri=server.uri, collection=name or f"t{uuid.uuid4().hex[:12]}"
    )


class TestMilvusDocumentStoreConformance(KotaeStoreConformance):
    @pytest.fixture
    def document_store(self, tmp_path, milvus_server) -> MilvusDocumentStore:
        store = _open(tmp_path, milvus_server)
        yield store
        for name in (
            store.collection,
            f"{store.collection}_kotae_state",
            f"{store.collection}_kotae_journal",
        ):
            store._client.drop_collection(name)
        store.close()

    @staticmethod
    def assert_documents_are_equal(received: list[Document], expected: list[Document]) -> None:
        """Milvus keeps embeddings as float32: equal up to float32 rounding, in any order."""
        received = sorted(received, key=lambda d: d.id)
        expected = sorted(expected, key=lambda d: d.id)
        assert [_without_embedding(d) for d in received] == [_without_embedding(d) for d in expected]
        for got, want in zip(received, expected, strict=True):
            assert (got.embedding is None) == (want.embedding is None), got.id
            if want.embedding is not None:
                np.testing.assert_allclose(got.embedding, want.embedding, rtol=1e-6, atol=1e-7)
