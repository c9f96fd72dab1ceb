"""The part of Haystack's document-store protocol that kotae's two stores share, on top of a commit.

A store that applies one commit at a time (:meth:`apply`: write with a duplicate policy, delete ids,
update metadata) and lists the documents matching a filter (:meth:`_matching`) under a re-entrant
``_lock`` gets the rest here: writing with Haystack's policies, deleting and updating by id or by
filter, and the metadata summaries (counts, field types, min/max, unique values), all computed in
Python over the matching documents; ``to_dict``/``from_dict`` over the store's ``_settings()``. :class:`~kotae.indexing.store.FaissDocumentStore` and
:class:`~kotae.indexing.milvus_store.MilvusDocumentStore` inherit it; each keeps its own storage,
counting, retrieval and ``delete_all_documents``; a filtered embedding retrieval in either is
:func:`exact_top_k` over the matching documents.

Example::

    class MyStore(CommitStore):
        def apply(self, write=(), policy=DuplicatePolicy.FAIL, delete_ids=(), update_meta=None, clear=False): ...
        def _matching(self, filters, with_embedding=True): ...
        def count_documents(self): ...
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Self

import numpy as np
from haystack import Document, default_from_dict, default_to_dict
from haystack.document_stores.types import DuplicatePolicy

from kotae.indexing.faiss_index import normalise


class CommitStore:
    """Haystack's write/delete/update and metadata-summary methods over ``apply`` and ``_matching``."""

    _lock: threading.RLock
    apply: Callable[..., int]
    """One commit: ``apply(write=, policy=, delete_ids=, update_meta=, clear=)``; returns documents written."""
    _matching: Callable[..., list[Document]]
    """``_matching(filters, with_embedding=...)``: the documents matching Haystack ``filters`` (all for None)."""
    count_documents: Callable[[], int]
    _settings: Callable[[], dict[str, Any]]
    """The ``__init__`` arguments that re-open this store (its contents stay where they are)."""

    def to_dict(self) -> dict[str, Any]:
        """Serialise the store's settings (:meth:`_settings`), not its contents."""
        return default_to_dict(self, **self._settings())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Re-open a store from :meth:`to_dict` output."""
        return default_from_dict(cls, data)

    _keep_settings: Callable[..., None]
    """Check and keep the store's ``__init__`` settings (its parameters take ``__init__``'s names,
    without defaults), touching nothing outside the object."""

    @classmethod
    def unopened(cls, *args: Any, **kwargs: Any) -> Self:
        """The store's settings only, for ``to_dict`` (``kotae pipeline show``): the same arguments as
        the class, its defaults filled in from ``__init__``, but no folder, file or connection is
        created, read or opened."""
        store = cls.__new__(cls)
        given = inspect.signature(cls.__init__).bind(store, *args, **kwargs)
        given.apply_defaults()
        kept = inspect.signature(cls._keep_settings).parameters
        store._keep_settings(
            **{name: value for name, value in given.arguments.items() if name in kept and name != "self"}
        )
        return store

    def write_documents(
        self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE
    ) -> int:
        """Write documents in one commit (policy NONE means FAIL); returns how many were written."""
        if (
            not isinstance(documents, Iterable)
            or isinstance(documents, str)
            or any(not isinstance(doc, Document) for doc in documents)
        ):
            raise ValueError("Please provide a list of Documents.")
        if policy == DuplicatePolicy.NONE:
            policy = DuplicatePolicy.FAIL
        return self.apply(write=list(documents), policy=policy)

    def delete_documents(self, document_ids: list[str]) -> None:
        """Delete the documents with these ids; unknown ids are ignored."""
        self.apply(delete_ids=document_ids)

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        """Delete the documents matching ``filters``; returns how many were deleted."""
        with self._lock:
            ids = [d.id for d in self._matching(filters, with_embedding=False)]
            if ids:
                self.apply(delete_ids=ids)
            return len(ids)

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Merge ``meta`` into the metadata of the documents matching ``filters``; returns how many."""
        with self._lock:
            ids = [d.id for d in self._matching(filters, with_embedding=False)]
            if ids:
                self.apply(update_meta={doc_id: meta for doc_id in ids})
            return len(ids)

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        """Number of documents matching ``filters``."""
        with self._lock:
            return len(self._matching(filters, with_embedding=False)) if filters else self.count_documents()

    def count_unique_metadata_by_filter(
        self, filters: dict[str, Any], metadata_fields: list[str]
    ) -> dict[str, int]:
        """Number of distinct values of each metadata field among the documents matching ``filters``."""
        with self._lock:
            documents = self._matching(filters, with_embedding=False)
        result: dict[str, int] = {}
        for name in metadata_fields:
            key = name.removeprefix("meta.")
            values = {_hashable(d.meta[key]) for d in documents if d.meta.get(key) is not None}
            result[key] = len(values)
        return result

    def get_metadata_fields_info(self) -> dict[str, dict[str, str]]:
        """Metadata field names with an inferred type (keyword, int, float, boolean)."""
        with self._lock:
            documents = self._matching(None, with_embedding=False)
        types: dict[str, str] = {}
        for document in documents:
            for key, value in document.meta.items():
                if value is None:
                    continue
                if isinstance(value, bool):
                    types[key] = "boolean"
                elif isinstance(value, int):
                    types[key] = "int"
                elif isinstance(value, float):
                    types[key] = "float"
                else:
                    types[key] = "keyword"
        return {key: {"type": value} for key, value in types.items()}

    def get_metadata_field_min_max(self, metadata_field: str) -> dict[str, Any]:
        """Smallest and largest value of a metadata field (``None`` for both when absent)."""
        key = metadata_field.removeprefix("meta.")
        with self._lock:
            documents = self._matching(None, with_embedding=False)
        values = [d.meta[key] for d in documents if isinstance(d.meta.get(key), (int, float, str))]
        try:
            return {"min": min(values), "max": max(values)} if values else {"min": None, "max": None}
        except TypeError:
            return {"min": None, "max": None}

    def get_metadata_field_unique_values(
        self,
        metadata_field: str,
        search_term: str | None = None,
        from_: int = 0,
        size: int = 10,
        filters: dict[str, Any] | None = None,
    ) -> tuple[list[Any], int]:
        """A page of the distinct values of a metadata field, and how many there are in all."""
        key = metadata_field.removeprefix("meta.")
        with self._lock:
            documents = self._matching(filters, with_embedding=False)
        unique: dict[tuple[str, Any], Any] = {}
        for document in documents:
            value = document.meta.get(key)
            if value is not None:
                unique.setdefault((type(value).__name__, _hashable(value)), value)
        if search_term:
            term = search_term.lower()
            unique = {k: v for k, v in unique.items() if term in str(v).lower()}
        ordered = sorted(unique, key=lambda k: (str(unique[k]), k[0]))
        return [unique[k] for k in ordered[from_ : from_ + size]], len(ordered)


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def scaled(score: float, scale: bool) -> float:
    """A cosine similarity, mapped from [-1, 1] to [0, 1] when ``scale`` (Haystack's ``scale_score``)."""
    return (score + 1.0) / 2.0 if scale else score


def exact_top_k(
    candidates: Sequence[Document], query: np.ndarray, top_k: int, scale_score: bool, with_embedding: bool
) -> list[Document]:
    """The ``top_k`` of ``candidates`` (documents with embeddings) by exact cosine similarity to
    ``query`` (one vector), best first; how both stores answer a filtered embedding retrieval."""
    if not candidates:
        return []
    vectors = normalise(np.asarray([d.embedding for d in candidates]))
    scores = vectors @ normalise(np.asarray(query).reshape(1, -1))[0]
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [
        replace(
            candidates[i],
            score=scaled(float(scores[i]), scale_score),
            embedding=candidates[i].embedding if with_embedding else None,
        )
        for i in order
    ]
