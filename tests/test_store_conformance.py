"""Haystack's own document-store conformance tests, run against FaissDocumentStore.

:class:`KotaeStoreConformance` (Haystack's suites plus kotae's own rules) is shared with the Milvus
store's tests (tests/test_milvus_store.py); each store gives it a ``document_store`` fixture.
"""

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


class KotaeStoreConformance(
    DocumentStoreBaseExtendedTests,
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldUniqueValuesTest,
):
    """Haystack's conformance suites, with kotae's default policy and a re-open through ``to_dict``."""

    def test_write_documents(self, document_store) -> None:
        """Default policy is FAIL, as in Haystack's in-memory store."""
        from haystack.document_stores.errors import DuplicateDocumentError

        doc = Document(content="test doc", embedding=[0.1, 0.2, 0.3])
        assert document_store.write_documents([doc]) == 1
        with pytest.raises(DuplicateDocumentError):
            document_store.write_documents([doc])
        self.assert_documents_are_equal(document_store.filter_documents(), [doc])

    def test_reopen_keeps_documents(self, document_store, filterable_docs) -> None:
        document_store.write_documents(filterable_docs)
        reopened = type(document_store).from_dict(document_store.to_dict())
        self.assert_documents_are_equal(reopened.filter_documents(), filterable_docs)
        assert reopened.check_consistency() == []
        reopened.close()


class TestFaissDocumentStoreConformance(KotaeStoreConformance):
    @pytest.fixture
    def document_store(self, tmp_path) -> FaissDocumentStore:
        store = FaissDocumentStore(tmp_path / "index")
        yield store
        store.close()
