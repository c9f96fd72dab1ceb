"""kotae's document stores as a Haystack integration: FAISS + SQLite in a folder, or a Milvus collection.

Named so that they are not mistaken for faiss-haystack's ``FAISSDocumentStore`` or milvus-haystack's
``MilvusDocumentStore``; their serialised ``type`` is this module, which Haystack's deserializer trusts.
The implementation lives in :mod:`kotae.indexing.store` and :mod:`kotae.indexing.milvus_store`.
"""

from kotae.indexing.milvus_store import KotaeMilvusDocumentStore
from kotae.indexing.store import KotaeDocumentStore

__all__ = ["KotaeDocumentStore", "KotaeMilvusDocumentStore"]
