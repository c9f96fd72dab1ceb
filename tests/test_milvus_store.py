"""kotae's Milvus store against a real Milvus Lite server: Haystack's conformance tests and kotae's own."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from haystack import Document
from haystack.testing.document_store import (
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    DocumentStoreBaseExtendedTests,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldUniqueValuesTest,
)

pytest.importorskip("pymilvus", reason="the Milvus store needs kotae[milvus]")

from kotae.indexing.milvus_store import MilvusDocumentStore


def _without_embedding(document: Document) -> Document:
    return Document.from_dict({**document.to_dict(flatten=False), "embedding": None})


def _open(tmp_path, server, name: str | None = None) -> MilvusDocumentStore:
    return MilvusDocumentStore(
        tmp_path / "index", uri=server.uri, collection=name or f"t{uuid.uuid4().hex[:12]}"
    )


class TestMilvusDocumentStoreConformance(
    DocumentStoreBaseExtendedTests,
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldUniqueValuesTest,
):
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

    def test_write_documents(self, document_store: MilvusDocumentStore) -> None:
        """Default policy is FAIL, as in Haystack's in-memory store and kotae's."""
        from haystack.document_stores.errors import DuplicateDocumentError

        doc = Document(content="test doc", embedding=[0.1, 0.2, 0.3])
        assert document_store.write_documents([doc]) == 1
        with pytest.raises(DuplicateDocumentError):
            document_store.write_documents([doc])
        self.assert_documents_are_equal(document_store.filter_documents(), [doc])

    def test_reopen_keeps_documents(
        self, document_store: MilvusDocumentStore, filterable_docs, milvus_server
    ) -> None:
        document_store.write_documents(filterable_docs)
        reopened = MilvusDocumentStore(
            document_store.folder, uri=milvus_server.uri, collection=document_store.collection
        )
        self.assert_documents_are_equal(reopened.filter_documents(), filterable_docs)
        assert reopened.check_consistency() == []
        reopened.close()
