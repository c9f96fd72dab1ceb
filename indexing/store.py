"""A Haystack document store on disk: SQLite for documents, FAISS for their vectors.

One directory holds ``store.sqlite3`` (documents, embeddings, the source manifest of the indexing
job, and a commit generation) and ``vectors.faiss`` (the FAISS index, tagged with the generation it
reflects). SQLite is the source of truth:

1. every change is one SQLite transaction that also bumps the generation;
2. then the FAISS index is updated in memory and written to a temporary file that replaces
   ``vectors.faiss`` atomically (``os.replace``), carrying that generation in its header.

A ``kill -9`` between or inside these steps leaves a FAISS file whose generation differs from
SQLite's (or a stray temporary file); on open the index is then rebuilt from the embeddings stored
in SQLite. Either way the store opens in its last committed state with both sides in agreement.

Vectors are L2-normalised and searched by inner product, so scores are cosine similarities.
The FAISS index comes from a factory string (``Flat``, ``HNSW32``, ``IVF256,Flat``,
``IVF256,PQ16`` ...) with stable int64 ids (SQLite's row ids). Indexes that need training hold
their vectors in an exact flat index until enough vectors exist, then are trained once and filled.
Indexes that cannot remove vectors (HNSW) are rebuilt from SQLite after a delete.

Usage::

    store = FaissDocumentStore("index/", faiss_factory="Flat")
    store.write_documents([Document(content="東京は日本の首都です。", embedding=[0.1, 0.2, 0.3])])
    store.embedding_retrieval([0.1, 0.2, 0.3], top_k=1)[0].score  # ~1.0
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from haystack import Document
from haystack.document_stores.errors import DocumentStoreError, DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy
from haystack.errors import FilterError
from haystack.utils.filters import document_matches_filter

from kotae.indexing.faiss_index import (
    build_faiss_index,
    check_factory,
    min_training_vectors,
    normalise,
    set_search_parameters,
)
from kotae.indexing.store_protocol import CommitStore, exact_top_k, scaled
from kotae.indexing.vector_file import (
    VectorFile,
    read_vector_file,
    remove_stale_temporaries,
    write_vector_file,
)
from kotae.models import expand_home

SQLITE_NAME = "store.sqlite3"
FAISS_NAME = "vectors.faiss"
_SQL_CHUNK = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    vid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL,
    embedding BLOB
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (key TEXT PRIMARY KEY, hash TEXT NOT NULL, passages TEXT NOT NULL);
"""


def damaged_store_message(folder: str | Path, error: BaseException, rebuild: str | None = None) -> str:
    """One line for a ``store.sqlite3`` SQLite cannot read: the file, SQLite's reason, the repair command.

    Used at start-up (:class:`FaissDocumentStore`) and when damage shows later, while serving.

    :param rebuild: The command that rebuilds the index (default: ``kotae index --full ...``).
    """
    database = Path(folder) / SQLITE_NAME
    if getattr(error, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return f"{database} is busy ({error}); try again in a moment"
    rebuild = rebuild or f"kotae index --full --index-dir {folder} --corpus PATH"
    return f"{database} is damaged ({error}); rebuild the index: {rebuild}".splitlines()[0]


def _validate_filters(filters: dict[str, Any] | None) -> None:
    if filters and "operator" not in filters and "conditions" not in filters:
        raise ValueError(
            "Invalid filter syntax. See https://docs.haystack.deepset.ai/docs/metadata-filtering for details."
        )


def matches_filter(filters: dict[str, Any], document: Document) -> bool:
    """Haystack's ``document_matches_filter``, with every failure to compare a :class:`FilterError`.

    Haystack raises ``FilterError`` for some mismatched values (a list after ``>``) and lets a plain
    ``TypeError`` out for others (a number against an object); both are the filter's fault.
    """
    try:
        return document_matches_filter(filters=filters, document=document)
    except TypeError as error:
        raise FilterError(f"filter cannot be applied: {error}") from None


class KotaeDocumentStore(CommitStore):
    """Documents in SQLite, their normalised embeddings in FAISS, both in one directory.

    Importable as a Haystack integration, ``from haystack_integrations.document_stores.kotae import
    KotaeDocumentStore`` (also its serialised ``type``, so pipeline YAML loads with Haystack's default
    allow-list); ``FaissDocumentStore`` is the old name of the same class.

    Follows Haystack's DocumentStore protocol (``count_documents``, ``filter_documents``,
    ``write_documents``, ``delete_documents``) plus the extended methods (``delete_all_documents``,
    ``delete_by_filter``, ``update_by_filter``, counts and metadata summaries) and
    ``embedding_retrieval``. Safe to use from several threads of one process; one writing process at
    a time (the indexing job takes a lock file).
    """

    __module__ = "haystack_integrations.document_stores.kotae"  # its public home and serialised type

    def __init__(
        self,
        path: str | Path,
        faiss_factory: str = "Flat",
        nprobe: int = 16,
        ef_search: int = 64,
        return_embedding: bool = True,
        recreate_damaged: bool = False,
    ) -> None:
        """
        Open (or create) the store in directory ``path``.

        :param path: Directory holding ``store.sqlite3`` and ``vectors.faiss``; created if missing. A
            leading ``$KOTAE_HOME`` or ``~`` is expanded; :meth:`to_dict` writes it as given.
        :param faiss_factory: FAISS index factory string; a store built with another factory is
            re-indexed from its stored embeddings on open (no re-embedding).
        :param nprobe: IVF lists probed per search.
        :param ef_search: HNSW search breadth.
        :param return_embedding: Whether ``filter_documents`` returns embeddings.
        :param recreate_damaged: When ``store.sqlite3`` cannot be read, move it aside (``.damaged-*``)
            and start empty (``kotae index --full``) instead of raising.
        :raises DocumentStoreError: If ``store.sqlite3`` is damaged (one line naming the file and the
            command that rebuilds it). A damaged ``vectors.faiss`` is rebuilt from SQLite instead.
        """
        self._keep_settings(path, faiss_factory, nprobe, ef_search, return_embedding)
        self.path.mkdir(parents=True, exist_ok=True)
        self._index: Any = None
        self._staging = False
        self._generation = -1
        self._pending: tuple[list[int], list[tuple[int, np.ndarray]]] = ([], [])
        try:
            self._conn = self._connect()
        except sqlite3.Error as error:  # not a database that is damaged: SQLite cannot open the path
            raise DocumentStoreError(
                f"{self.path / SQLITE_NAME} cannot be opened ({error}); it must be a writable file "
                "(or absent) in a writable folder"
            ) from None
        try:
            self._open()
        except sqlite3.DatabaseError as error:
            self._conn.close()
            busy = getattr(error, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED")
            if busy or not recreate_damaged:  # a busy database is not damaged: never move it aside
                raise DocumentStoreError(damaged_store_message(self.path, error)) from None
            aside = f".damaged-{int(time.time())}"
            for name in (SQLITE_NAME, f"{SQLITE_NAME}-wal", f"{SQLITE_NAME}-shm", FAISS_NAME):
                if (self.path / name).exists():
                    os.replace(self.path / name, self.path / (name + aside))
            self._conn = self._connect()
            self._open()

    def _keep_settings(
        self, path: str | Path, faiss_factory: str, nprobe: int, ef_search: int, return_embedding: bool
    ) -> None:
        """Check and keep the settings; ``path`` is kept as given for :meth:`to_dict`."""
        if not faiss_factory or not re.fullmatch(r"[\w,.+-]+", faiss_factory):
            raise ValueError(f"faiss_factory must be a FAISS index factory string, but got {faiss_factory!r}")
        if nprobe < 1 or ef_search < 1:
            raise ValueError(f"nprobe and ef_search must be at least 1, but got {nprobe} and {ef_search}")
        self.given_path = str(path)
        self.path = expand_home(path)
        self.faiss_factory = faiss_factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.return_embedding = return_embedding
        self._lock = threading.RLock()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path / SQLITE_NAME, isolation_level=None, check_same_thread=False, timeout=30.0
        )

    def _open(self) -> None:
        """Set up the open connection and load (or rebuild) the FAISS index; sqlite3.DatabaseError if damaged."""
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        with self._lock:
            if self.embedding_dim is not None:
                check_factory(self.faiss_factory, self.embedding_dim)
            remove_stale_temporaries(self.path)
            self._conn.execute("SELECT COUNT(*) FROM documents").fetchone()  # fails fast on a cut file
            self._load_vectors()

    # ------------------------------------------------------------------ state and persistence

    def _state(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_state(self, key: str, value: str | int) -> None:
        self._conn.execute("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", (key, str(value)))

    def state(self, key: str) -> str | None:
        """A value recorded with :meth:`apply` (``set_state``), or None."""
        with self._lock:
            return self._state(f"user.{key}")

    @property
    def generation(self) -> int:
        """The commit generation recorded in SQLite (bumped by every change)."""
        value = self._state("generation")
        return int(value) if value is not None else 0

    @property
    def embedding_dim(self) -> int | None:
        value = self._state("dim")
        return int(value) if value is not None else None

    def _load_vectors(self) -> None:
        """Load the FAISS index if it matches SQLite's generation and factory; otherwise rebuild it."""
        import faiss

        generation = self.generation
        stored = read_vector_file(self.path / FAISS_NAME)
        if (
            stored is not None
            and stored.generation == generation
            and self._state("factory") == self.faiss_factory
            and self.embedding_dim is not None
        ):
            try:
                index = faiss.deserialize_index(np.frombuffer(stored.payload, dtype=np.uint8))
            except RuntimeError:
                index = None
            if index is not None and index.d == self.embedding_dim and index.ntotal == self._count_vectors():
                self._index, self._staging, self._generation = index, stored.staging, generation
                set_search_parameters(index, self.nprobe, self.ef_search)
                return
        self._rebuild_vectors(generation)
        try:
            if self._state("factory") != self.faiss_factory:
                self._conn.execute("BEGIN IMMEDIATE")
                self._set_state("factory", self.faiss_factory)
                self._conn.execute("COMMIT")
            self._save_vectors()
        except (OSError, sqlite3.OperationalError):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def _count_vectors(self) -> int:
        return int(
            self._conn.execute("SELECT COUNT(*) FROM documents WHERE embedding IS NOT NULL").fetchone()[0]
        )

    def _stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        dim = self.embedding_dim
        rows = self._conn.execute(
            "SELECT vid, embedding FROM documents WHERE embedding IS NOT NULL ORDER BY vid"
        )
        ids: list[int] = []
        vectors: list[np.ndarray] = []
        for vid, blob in rows:
            ids.append(vid)
            vectors.append(np.frombuffer(blob, dtype=np.float64))
        if not ids or dim is None:
            return np.zeros(0, np.int64), np.zeros((0, dim or 1), np.float32)
        return np.asarray(ids, np.int64), np.vstack(vectors).astype(np.float32)

    def _rebuild_vectors(self, generation: int) -> None:
        dim = self.embedding_dim
        if dim is None:
            self._index, self._staging = None, False
        else:
            ids, vectors = self._stored_vectors()
            self._index, self._staging = build_faiss_index(
                self.faiss_factory, dim, ids, vectors, self.nprobe, self.ef_search
            )
        self._generation = generation

    def _save_vectors(self) -> None:
        """Write the FAISS index with its generation (:func:`~kotae.indexing.vector_file.write_vector_file`)."""
        import faiss

        target = self.path / FAISS_NAME
        if self._index is None:
            target.unlink(missing_ok=True)
            return
        payload = faiss.serialize_index(self._index).tobytes()
        write_vector_file(target, VectorFile(self._generation, self._staging, payload))

    def _refresh(self) -> None:
        """Pick up commits made by another store object or process since we last looked."""
        if self.generation != self._generation:
            self._load_vectors()

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ (de)serialising documents

    @staticmethod
    def _encode(document: Document) -> tuple[str, bytes | None]:
        data = document.to_dict(flatten=False)
        data.pop("embedding", None)
        data.pop("score", None)
        try:
            text = json.dumps(data, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Document {document.id!r}: meta must be JSON-serialisable ({error})") from None
        blob = None
        if document.embedding is not None:
            blob = np.asarray(document.embedding, dtype=np.float64).tobytes()
        return text, blob

    @staticmethod
    def _decode(data: str, blob: bytes | None, with_embedding: bool, score: float | None = None) -> Document:
        fields = json.loads(data)
        if with_embedding and blob is not None:
            fields["embedding"] = np.frombuffer(blob, dtype=np.float64).tolist()
        if score is not None:
            fields["score"] = score
        return Document.from_dict(fields)

    def _iter_rows(self) -> Iterator[tuple[int, str, str, bytes | None]]:
        yield from self._conn.execute("SELECT vid, id, data, embedding FROM documents ORDER BY vid")

    def _matching(self, filters: dict[str, Any] | None, with_embedding: bool = True) -> list[Document]:
        _validate_filters(filters)
        documents = [self._decode(data, blob, with_embedding) for _, _, data, blob in self._iter_rows()]
        if filters:
            documents = [d for d in documents if matches_filter(filters, d)]
        return documents

    # ------------------------------------------------------------------ the commit

    def apply(
        self,
        write: Sequence[Document] = (),
        delete_ids: Iterable[str] = (),
        policy: DuplicatePolicy = DuplicatePolicy.FAIL,
        set_sources: dict[str, tuple[str, list[str]]] | None = None,
        delete_sources: Iterable[str] = (),
        update_meta: dict[str, dict[str, Any]] | None = None,
        clear: bool = False,
        set_state: dict[str, str] | None = None,
    ) -> int:
        """Apply one change set as a single commit; returns how many documents were written.

        ``set_sources``/``delete_sources`` maintain the indexing job's source manifest
        (source key -> content hash and passage ids) in the same transaction as the passages.
        """
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            stale = self.generation != self._generation  # another writer committed since we loaded
            try:
                written = self._apply_sql(
                    write, delete_ids, policy, set_sources, delete_sources, update_meta, clear
                )
                for key, value in (set_state or {}).items():
                    self._set_state(f"user.{key}", value)
                generation = self.generation + 1
                self._set_state("generation", generation)
                self._set_state("factory", self.faiss_factory)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            removed, added = self._pending
            try:
                self._apply_vectors(removed, added, rebuild=clear or stale)
                self._generation = generation
            except Exception:  # the in-memory index is suspect: rebuild it from SQLite
                self._rebuild_vectors(generation)
            self._save_vectors()
            return written

    def _apply_sql(
        self,
        write: Sequence[Document],
        delete_ids: Iterable[str],
        policy: DuplicatePolicy,
        set_sources: dict[str, tuple[str, list[str]]] | None,
        delete_sources: Iterable[str],
        update_meta: dict[str, dict[str, Any]] | None,
        clear: bool,
    ) -> int:
        conn = self._conn
        removed: list[int] = []
        added: list[tuple[int, np.ndarray]] = []
        if clear:
            conn.execute("DELETE FROM documents")
            conn.execute("DELETE FROM sources")
            conn.execute("DELETE FROM state WHERE key = 'dim'")
        for chunk in _chunks(list(dict.fromkeys(delete_ids)), _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            removed.extend(
                vid
                for (vid,) in conn.execute(
                    f"SELECT vid FROM documents WHERE embedding IS NOT NULL AND id IN ({marks})", chunk
                )
            )
            conn.execute(f"DELETE FROM documents WHERE id IN ({marks})", chunk)
        dim = self.embedding_dim
        written = 0
        for document in write:
            row = conn.execute("SELECT vid, embedding FROM documents WHERE id = ?", (document.id,)).fetchone()
            if row is not None:
                if policy == DuplicatePolicy.SKIP:
                    continue
                if policy != DuplicatePolicy.OVERWRITE:
                    raise DuplicateDocumentError(f"ID '{document.id}' already exists.")
                if row[1] is not None:
                    removed.append(row[0])
                conn.execute("DELETE FROM documents WHERE vid = ?", (row[0],))
            data, blob = self._encode(document)
            if blob is not None:
                size = len(blob) // 8
                if dim is None:
                    check_factory(self.faiss_factory, size)
                    dim = size
                    self._set_state("dim", dim)
                elif size != dim:
                    raise DocumentStoreError(
                        f"Document {document.id!r} has a {size}-d embedding but this store holds "
                        f"{dim}-d ones; embed with the same model, or rebuild the index with --full"
                    )
            cursor = conn.execute(
                "INSERT INTO documents(id, data, embedding) VALUES (?, ?, ?)", (document.id, data, blob)
            )
            if blob is not None:
                added.append((int(cursor.lastrowid or 0), np.frombuffer(blob, dtype=np.float64)))
            written += 1
        for doc_id, meta in (update_meta or {}).items():
            row = conn.execute("SELECT data FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if row is not None:
                fields = json.loads(row[0])
                fields.setdefault("meta", {}).update(meta)
                conn.execute(
                    "UPDATE documents SET data = ? WHERE id = ?",
                    (json.dumps(fields, ensure_ascii=False), doc_id),
                )
        for key in delete_sources:
            conn.execute("DELETE FROM sources WHERE key = ?", (key,))
        for key, (digest, passage_ids) in (set_sources or {}).items():
            conn.execute(
                "INSERT OR REPLACE INTO sources(key, hash, passages) VALUES (?, ?, ?)",
                (key, digest, json.dumps(passage_ids)),
            )
        self._pending = (removed, added)
        return written

    def _apply_vectors(self, removed: list[int], added: list[tuple[int, np.ndarray]], rebuild: bool) -> None:
        import faiss

        dim = self.embedding_dim
        if rebuild or self._index is None or dim is None or self._index.d != dim:
            self._rebuild_vectors(self._generation)
            return
        if removed:
            try:
                self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(removed, dtype=np.int64)))
            except RuntimeError:  # e.g. HNSW cannot remove: rebuild from SQLite (already committed)
                self._rebuild_vectors(self._generation)
                return
        if added:
            needed = min_training_vectors(self.faiss_factory, dim)
            if self._staging and self._index.ntotal + len(added) >= needed:
                self._rebuild_vectors(self._generation)  # enough vectors now: train the real index
                return
            ids = np.asarray([vid for vid, _ in added], dtype=np.int64)
            vectors = normalise(np.vstack([v for _, v in added]))
            self._index.add_with_ids(vectors, ids)

    # ------------------------------------------------------------------ Haystack protocol

    def count_documents(self) -> int:
        """Number of documents in the store."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """Documents matching Haystack ``filters`` (all documents when None), in insertion order."""
        with self._lock:
            documents = self._matching(filters, with_embedding=self.return_embedding)
        return documents

    def delete_all_documents(self, recreate_index: bool = False) -> None:
        """Delete every document and the job's manifest; ``recreate_index`` also forgets the dimension."""
        with self._lock:
            if recreate_index:
                self.apply(clear=True)
            else:
                ids = [doc_id for (doc_id,) in self._conn.execute("SELECT id FROM documents")]
                self.apply(delete_ids=ids, delete_sources=list(self.source_manifest()))

    # ------------------------------------------------------------------ retrieval

    def embedding_retrieval(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        scale_score: bool = False,
        return_embedding: bool | None = False,
    ) -> list[Document]:
        """The ``top_k`` documents most similar to ``query_embedding``; ``score`` is the cosine similarity.

        Without filters the FAISS index answers; with filters the matching documents are scored
        exactly. ``scale_score`` maps cosine from [-1, 1] to [0, 1].
        """
        query = np.asarray(query_embedding, dtype=np.float32).reshape(1, -1)
        if query.size == 0:
            raise ValueError("query_embedding should be a non-empty list of floats.")
        if top_k <= 0:
            return []
        with_embedding = self.return_embedding if return_embedding is None else return_embedding
        with self._lock:
            self._refresh()
            dim = self.embedding_dim
            if dim is None or self._index is None:
                return []
            if query.shape[1] != dim:
                raise DocumentStoreError(
                    f"The query embedding has {query.shape[1]} dimensions but the store holds "
                    f"{dim}-d embeddings; embed the query with the model the index was built with"
                )
            query = normalise(query)
            if filters:
                _validate_filters(filters)
                candidates = [
                    d
                    for d in self._matching(filters, with_embedding=True)
                    if d.embedding is not None and len(d.embedding) == dim
                ]
                return exact_top_k(candidates, query[0], top_k, scale_score, with_embedding)
            distances, labels = self._index.search(query, min(top_k, max(self._index.ntotal, 1)))
            hits = [(int(v), float(s)) for v, s in zip(labels[0], distances[0], strict=True) if v >= 0]
            rows = self._rows_by_vid([v for v, _ in hits])
            results = []
            for vid, score in hits:
                row = rows.get(vid)
                if row is not None:
                    results.append(self._decode(row[0], row[1], with_embedding, scaled(score, scale_score)))
            return results

    def _rows_by_vid(self, vids: list[int]) -> dict[int, tuple[str, bytes | None]]:
        rows: dict[int, tuple[str, bytes | None]] = {}
        for chunk in _chunks(vids, _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            for vid, data, blob in self._conn.execute(
                f"SELECT vid, data, embedding FROM documents WHERE vid IN ({marks})", chunk
            ):
                rows[int(vid)] = (data, blob)
        return rows

    def get_documents_by_id(self, document_ids: list[str], return_embedding: bool = False) -> list[Document]:
        """Documents with these ids, in the order asked (unknown ids left out)."""
        found: dict[str, Document] = {}
        with self._lock:
            for chunk in _chunks(list(document_ids), _SQL_CHUNK):
                marks = ",".join("?" * len(chunk))
                for doc_id, data, blob in self._conn.execute(
                    f"SELECT id, data, embedding FROM documents WHERE id IN ({marks})", chunk
                ):
                    found[doc_id] = self._decode(data, blob, return_embedding)
        return [found[i] for i in document_ids if i in found]

    def iter_contents(self) -> Iterator[tuple[str, str]]:
        """``(id, content)`` of every document with text, in insertion order (used to build BM25)."""
        with self._lock:
            rows = self._conn.execute("SELECT id, data FROM documents ORDER BY vid").fetchall()
        for doc_id, data in rows:
            content = json.loads(data).get("content")
            if isinstance(content, str):
                yield doc_id, content

    def source_manifest(self) -> dict[str, tuple[str, list[str]]]:
        """The indexing job's manifest: source key -> (content hash, passage ids)."""
        with self._lock:
            rows = self._conn.execute("SELECT key, hash, passages FROM sources").fetchall()
        return {key: (digest, json.loads(passages)) for key, digest, passages in rows}

    def check_consistency(self) -> list[str]:
        """Problems found between SQLite and FAISS (empty when they agree)."""
        with self._lock:
            self._refresh()
            problems: list[str] = []
            ids, _ = self._stored_vectors()
            index_count = 0 if self._index is None else int(self._index.ntotal)
            if index_count != len(ids):
                problems.append(f"FAISS holds {index_count} vectors, SQLite {len(ids)}")
            stored = read_vector_file(self.path / FAISS_NAME)
            if len(ids) and (stored is None or stored.generation != self.generation):
                found = stored and stored.generation
                problems.append(f"FAISS file generation {found} != SQLite {self.generation}")
            manifest = self.source_manifest()
            known = {doc_id for (doc_id,) in self._conn.execute("SELECT id FROM documents")}
            listed = {pid for _, pids in manifest.values() for pid in pids}
            if listed - known:
                problems.append(f"{len(listed - known)} manifest passages missing from SQLite")
            return problems

    # ------------------------------------------------------------------ serialisation

    def _settings(self) -> dict[str, Any]:
        """The settings :meth:`to_dict` writes (the contents live in ``path``)."""
        return {
            "path": self.given_path,
            "faiss_factory": self.faiss_factory,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "return_embedding": self.return_embedding,
        }


FaissDocumentStore = KotaeDocumentStore  # the old name, for code that imports it


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
