"""Haystack's own document-store conformance tests, run against FaissDocumentStore."""

from __future__ import annotations

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

from kotae.indexing.store import FaissDocumentStore


class TestFaissDocumentStoreConformance(
    DocumentStoreBaseExtendedTests,
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldUniqueValuesTest,
):
    @pytest.fixture
    def document_store(self, tmp_path) -> FaissDocumentStore:
        store = FaissDocumentStore(tmp_path / "index")
        yield store
        store.close()

    def test_write_documents(self, document_store: FaissDocumentStore) -> None:
        """Default policy is FAIL, as in Haystack's in-memory store."""
        from haystack.document_stores.errors import DuplicateDocumentError

        doc = Document(content="test doc", embedding=[0.1, 0.2, 0.3])
        assert document_store.write_documents([doc]) == 1
        with pytest.raises(DuplicateDocumentError):
            document_store.write_documents([doc])
        self.assert_documents_are_equal(document_store.filter_documents(), [doc])

    def test_reopen_keeps_documents(self, document_store: FaissDocumentStore, filterable_docs) -> None:
        document_store.write_documents(filterable_docs)
        reopened = FaissDocumentStore(document_store.path)
        self.assert_documents_are_equal(reopened.filter_documents(), filterable_docs)
        assert reopened.check_consistency() == []
        reopened.close()
