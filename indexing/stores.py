"""Which document store an index lives in (``index.store``): kotae's FAISS + SQLite folder, or Milvus.

Everything above the store (the indexing job, BM25, the retrievers, the server, feedback) opens it
here and uses the protocol both stores share, so switching is one config key and a re-index::

    store = open_store(config)              # KotaeDocumentStore or KotaeMilvusDocumentStore
    store.embedding_retrieval(vector, top_k=5)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kotae.indexing.milvus_store import KotaeMilvusDocumentStore
from kotae.indexing.store import KotaeDocumentStore

if TYPE_CHECKING:
    from kotae.indexing.settings import IndexJobConfig

_Component = TypeVar("_Component")
IndexStore = KotaeDocumentStore | KotaeMilvusDocumentStore
STORE_TYPES: tuple[type, ...] = (KotaeDocumentStore, KotaeMilvusDocumentStore)
MILVUS_LITE_FILE = "milvus.db"


def milvus_uri(config: IndexJobConfig, directory: str | Path | None = None) -> str:
    """``index.milvus_uri``, or Milvus Lite's file ``milvus.db`` in the index folder when unset."""
    folder = directory if directory is not None else config.index.dir
    return config.index.milvus_uri or f"{folder}/{MILVUS_LITE_FILE}"


def open_store(
    config: IndexJobConfig, directory: str | Path | None = None, recreate_damaged: bool = False
) -> IndexStore:
    """The store ``config.index.store`` names, for the index in ``directory`` (default: the config's).

    ``recreate_damaged`` (kotae's store only) starts over from a damaged ``store.sqlite3``.
    """
    kind, arguments = _store_arguments(config, directory)
    if kind is KotaeDocumentStore:
        arguments["recreate_damaged"] = recreate_damaged
    return kind(**arguments)


def describe_store(config: IndexJobConfig, directory: str | Path | None = None) -> IndexStore:
    """The store :func:`open_store` would open, unopened (``CommitStore.unopened``): its settings for
    ``to_dict`` only, with the folder as the config gives it; nothing on disk or in Milvus is touched."""
    kind, arguments = _store_arguments(config, directory)
    return kind.unopened(**arguments)


def _store_arguments(
    config: IndexJobConfig, directory: str | Path | None
) -> tuple[type[KotaeDocumentStore] | type[KotaeMilvusDocumentStore], dict[str, Any]]:
    """The store class ``index.store`` names and its arguments; the folder is passed as given (the
    store expands ``$KOTAE_HOME`` and ``~``, and writes it back as given)."""
    settings = config.index
    folder = str(directory) if directory is not None else settings.dir
    if settings.store == "milvus":
        return KotaeMilvusDocumentStore, {
            "path": folder,
            "uri": milvus_uri(config, folder),
            "collection": settings.milvus_collection,
            "index_type": settings.milvus_index,
        }
    return KotaeDocumentStore, {
        "path": folder,
        "faiss_factory": settings.faiss_factory,
        "nprobe": settings.faiss_nprobe,
    }


@lru_cache(maxsize=8)
def _shared_milvus(folder: Path, uri: str, collection: str, index_type: str) -> KotaeMilvusDocumentStore:
    return KotaeMilvusDocumentStore(folder, uri=uri, collection=collection, index_type=index_type)


def _milvus_for(config: IndexJobConfig) -> KotaeMilvusDocumentStore:
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
        f"document_store must be a KotaeDocumentStore or KotaeMilvusDocumentStore, not {data.get('type')!r}"
    )


def retriever_from_dict(cls: type[_Component], data: dict[str, Any]) -> _Component:
    """A retriever over either store, from its ``to_dict`` output: the store re-opened
    (:func:`store_from_dict`), ``filter_policy`` parsed, the rest as Haystack's ``default_from_dict``."""
    from haystack import default_from_dict
    from haystack.document_stores.types import FilterPolicy

    data = {**data, "init_parameters": dict(data.get("init_parameters", {}))}
    params = data["init_parameters"]
    params["document_store"] = store_from_dict(params["document_store"])
    if "filter_policy" in params:
        params["filter_policy"] = FilterPolicy.from_str(params["filter_policy"])
    return default_from_dict(cls, data)
