"""Which document store an index lives in (``index.store``): kotae's FAISS + SQLite folder, or Milvus.

Everything above the store (the indexing job, BM25, the retrievers, the server, feedback) opens it
here and uses the protocol both stores share, so switching is one config key and a re-index::

    store = open_store(config)              # FaissDocumentStore or MilvusDocumentStore
    store.embedding_retrieval(vector, top_k=5)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kotae.indexing.milvus_store import MilvusDocumentStore
from kotae.indexing.store import FaissDocumentStore

if TYPE_CHECKING:
    from kotae.indexing.settings import IndexJobConfig

IndexStore = FaissDocumentStore | MilvusDocumentStore
STORE_TYPES: tuple[type, ...] = (FaissDocumentStore, MilvusDocumentStore)
MILVUS_LITE_FILE = "milvus.db"


def milvus_uri(config: IndexJobConfig, directory: Path | None = None) -> str:
    """``index.milvus_uri``, or Milvus Lite's file ``milvus.db`` in the index folder when unset."""
    folder = Path(directory).expanduser() if directory is not None else config.index_dir
    return config.index.milvus_uri or str(folder / MILVUS_LITE_FILE)


def open_store(
    config: IndexJobConfig, directory: Path | None = None, recreate_damaged: bool = False
) -> IndexStore:
    """The store ``config.index.store`` names, for the index in ``directory`` (default: the config's).

    ``recreate_damaged`` (kotae's store only) starts over from a damaged ``store.sqlite3``.
    """
    settings = config.index
    folder = Path(directory).expanduser() if directory is not None else config.index_dir
    if settings.store == "milvus":
        return MilvusDocumentStore(
            folder,
            uri=milvus_uri(config, folder),
            collection=settings.milvus_collection,
            index_type=settings.milvus_index,
        )
    return FaissDocumentStore(
        folder,
        faiss_factory=settings.faiss_factory,
        nprobe=settings.faiss_nprobe,
        recreate_damaged=recreate_damaged,
    )


@lru_cache(maxsize=8)
def _shared_milvus(folder: Path, uri: str, collection: str, index_type: str) -> MilvusDocumentStore:
    return MilvusDocumentStore(folder, uri=uri, collection=collection, index_type=index_type)


def _milvus_for(config: IndexJobConfig) -> MilvusDocumentStore:
    settings = config.index
    return _shared_milvus(
        config.index_dir, milvus_uri(config), settings.milvus_collection, settings.milvus_index
    )


def milvus_passages(config: IndexJobConfig) -> int:
    """How many passages the config's Milvus collection holds (one connection per process, reused)."""
    return _milvus_for(config).count_documents()


def milvus_state(config: IndexJobConfig, key: str) -> str | None:
    """A value the index job recorded in the config's Milvus collection (``set_state``), or None."""
    return _milvus_for(config).state(key)


def store_from_dict(data: dict[str, Any]) -> IndexStore:
    """Re-open either store from its ``to_dict`` output (only these two classes are accepted)."""
    for kind in STORE_TYPES:
        if data.get("type") == f"{kind.__module__}.{kind.__name__}":
            return kind.from_dict(data)  # type: ignore[attr-defined, no-any-return]
    raise TypeError(
        f"document_store must be a FaissDocumentStore or MilvusDocumentStore, not {data.get('type')!r}"
    )
