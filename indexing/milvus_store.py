"""A Haystack document store in Milvus, with kotae's source manifest, generation and crash-safe commits.

``index.store: milvus`` puts the passages in a Milvus collection instead of kotae's FAISS + SQLite
folder; everything above the store (the indexing job, BM25, the retrievers, ``ask``/``serve``/
``eval``, feedback) is the same code. ``uri`` is a file path (Milvus Lite inside this process) or
``http://host:19530`` (a Milvus server or cluster, or ``python -m milvus_lite server``); the token,
if the server needs one, comes from the environment variable ``KOTAE_MILVUS_TOKEN`` only.

Why not ``milvus-haystack``: its store creates the schema from the first write, supports only the
``NONE``/``OVERWRITE`` duplicate policies (``FAIL``/``SKIP`` fall back to ``NONE``), translates
Haystack filters into Milvus expressions whose missing-field and ``None`` semantics differ from
Haystack's, and has nowhere to keep kotae's source manifest and commit generation. Both of those
must change together with the passages for the incremental job, so this store is written directly
on ``pymilvus``.

**Collections.** ``NAME`` holds passages (``id``, ``data``: the document as JSON without its
embedding, ``has_vec``, ``vec``: float32, cosine); ``NAME_kotae_state`` holds the generation,
the embedding dimension, job state (``user.*``) and the manifest (``source:<key>`` rows);
``NAME_kotae_journal`` holds the journal of the commit in progress.

**Commits.** Milvus makes each insert, upsert or delete request atomic and durable once
acknowledged (Milvus Lite: one WAL record per request), but no transaction spans two requests or
two collections. kotae adds one with a journal:

1. *prepare*: the change set (ids written for the first time, ids to delete, manifest and state
   changes, the next generation) is written to the journal collection, then a ``journal`` header
   row with phase ``prepare``;
2. the passages are upserted;
3. *commit point*: the header is rewritten with phase ``commit`` (one atomic row write);
4. old passages are deleted, manifest and state rows written, the generation bumped, the journal
   removed.

A writer killed anywhere leaves the header behind; the next writer (:meth:`recover`, run by every
:meth:`apply`) rolls a ``prepare`` back (deletes the ids it wrote for the first time) and a
``commit`` forward (repeats step 4, whose requests are idempotent). Readers never wait for that:
while a header exists they read the state it implies (``prepare``: without the new ids;
``commit``: the new state, old ids hidden, the journal's manifest overlaid), so every reader sees
either the last committed generation or the next one, never half of one. One writer at a time, as
with kotae's own store (the job's lock file covers one machine).

Filters are Haystack's own (:func:`~kotae.indexing.store.matches_filter`) over the
documents read back, exactly as in kotae's store; unfiltered dense retrieval is Milvus's search.
Embeddings come back as float32, as Milvus stores them.

Usage::

    store = MilvusDocumentStore("index/", uri="http://127.0.0.1:19530", collection="kotae")
    store.write_documents([Document(content="東京は日本の首都です。", embedding=[0.1, 0.2, 0.3])])
    store.embedding_retrieval([0.1, 0.2, 0.3], top_k=1)[0].score  # ~1.0
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from haystack import Document, default_from_dict, default_to_dict
from haystack.document_stores.errors import DocumentStoreError, DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy

from kotae.indexing.store import _validate_filters, matches_filter
from kotae.indexing.store_protocol import CommitStore, exact_top_k, scaled
from kotae.models import expand_home

TOKEN_VARIABLE = "KOTAE_MILVUS_TOKEN"
INDEX_TYPES = ("FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX")
_MAX_TEXT = 65_535  # bytes in a Milvus VARCHAR
_PLACEHOLDER_DIM = 2  # the passage collection's dimension until the first embedding arrives
_BATCH = 500
# pymilvus pings every 10 s even when idle; a gRPC server with default settings (Milvus Lite's)
# answers that with GOAWAY "too_many_pings" and the connection is lost. Ping only during calls, at
# the server's default minimum interval.
_GRPC_OPTIONS = (("grpc.keepalive_time_ms", 300_000), ("grpc.keepalive_permit_without_calls", False))
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,180}")


_Call = TypeVar("_Call", bound=Any)


_CONSISTENCY = "Strong"
"""Every read sees every write acknowledged before it: the journal, the generation and the passages
are read back right after they are written (Milvus' default, Bounded, may serve a slightly stale view
on a cluster; Milvus Lite is always current)."""


class _QuietIterator(logging.Filter):
    """pymilvus warns on every query_iterator that Milvus Lite sends no MVCC timestamp; nothing is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_QuietIterator())


def _one_line(method: _Call) -> _Call:
    """Turn a Milvus error inside ``method`` into a one-line DocumentStoreError naming the collection."""

    @functools.wraps(method)
    def wrapper(self: KotaeMilvusDocumentStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (DocumentStoreError, ValueError, TypeError):
            raise
        except Exception as error:
            if type(error).__module__.split(".")[0] != "pymilvus":
                raise
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DocumentStoreError(
                f"Milvus at {self.uri}, collection {self.collection}: {reason}; check that the server runs"
            ) from None

    return wrapper  # type: ignore[return-value]


def milvus_token() -> str:
    """The token for a Milvus server, from ``KOTAE_MILVUS_TOKEN`` (empty when unset)."""
    return os.environ.get(TOKEN_VARIABLE, "")


def is_server_uri(uri: str) -> bool:
    """Whether ``uri`` names a Milvus server (``http(s)://`` or ``tcp://``) rather than a Milvus Lite file."""
    return uri.startswith(("http://", "https://", "tcp://"))


def check_collection_name(name: str) -> None:
    """Raise ValueError (one line) unless ``name`` is a usable Milvus collection name."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"index.milvus_collection {name!r} is not a Milvus collection name; "
            "use letters, digits and underscores, starting with a letter (e.g. kotae)"
        )


def _pack_ids(ids: list[str]) -> Any:
    """Passage ids ``P-0 .. P-(n-1)`` (what the indexing job writes) as ``{"p": P, "n": n}``, else the list."""
    if ids and all(pid == f"{ids[0].rsplit('-', 1)[0]}-{i}" for i, pid in enumerate(ids)):
        return {"p": ids[0].rsplit("-", 1)[0], "n": len(ids)}
    return ids


def _unpack_ids(packed: Any) -> list[str]:
    if isinstance(packed, dict):
        return [f"{packed['p']}-{i}" for i in range(int(packed["n"]))]
    return list(packed)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class _View:
    """What readers see: the committed generation, ids hidden by a commit in progress, its manifest."""

    generation: int
    hidden: set[str] = field(default_factory=set)
    cleared: bool = False
    set_sources: dict[str, Any] = field(default_factory=dict)
    delete_sources: list[str] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)


class KotaeMilvusDocumentStore(CommitStore):
    """Passages in a Milvus collection; kotae's manifest, state and commit journal beside it.

    Importable as a Haystack integration, ``from haystack_integrations.document_stores.kotae import
    KotaeMilvusDocumentStore`` (its serialised ``type``); not milvus-haystack's ``MilvusDocumentStore``.
    ``MilvusDocumentStore`` in this module is the old name of this class.

    The same protocol as :class:`~kotae.indexing.store.KotaeDocumentStore` (Haystack's DocumentStore
    methods, the extended ones, ``embedding_retrieval``, ``apply``, ``source_manifest``,
    ``generation``), so the indexing job, BM25 and the retrievers use either. Safe to use from several
    threads of one process and from several reading processes; one writing process at a time.
    """

    __module__ = "haystack_integrations.document_stores.kotae"  # its public home and serialised type

    def __init__(
        self,
        path: str | Path,
        uri: str,
        collection: str = "kotae",
        index_type: str = "FLAT",
        return_embedding: bool = True,
    ) -> None:
        """
        Connect to Milvus and open (or create) the collections.

        :param path: Local folder for what stays on this machine (the job's lock file, feedback
            labels, and in ``milvus-<collection id>/`` the BM25 index built from this collection);
            created if missing.
        :param uri: A file path (Milvus Lite in this process) or ``http://host:port`` (a server).
        :param collection: The passage collection's name (state and journal collections get suffixes).
        :param index_type: Milvus vector index: FLAT (exact, like kotae's default), HNSW, IVF_FLAT or AUTOINDEX.
        :param return_embedding: Whether ``filter_documents`` returns embeddings.
        :raises DocumentStoreError: If Milvus cannot be reached (one line naming the uri).
        """
        self._settings(path, uri, collection, index_type, return_embedding)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not is_server_uri(self.uri):
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        self._client = self._connect()
        for name in (self._state_name, self._journal_name):
            if not self._client.has_collection(name):
                self._create_side_collection(name)
        for name in (self._state_name, self._journal_name, self.collection):
            self._ensure_loaded(name)
        self.path = self.folder / f"milvus-{self._collection_id()}"

    def _settings(
        self,
        path: str | Path,
        uri: str,
        collection: str = "kotae",
        index_type: str = "FLAT",
        return_embedding: bool = True,
    ) -> None:
        """Check and keep the settings; ``path`` and ``uri`` are kept as given for :meth:`to_dict`."""
        check_collection_name(collection)
        if index_type not in INDEX_TYPES:
            raise ValueError(
                f"index.milvus_index must be one of {', '.join(INDEX_TYPES)}, but got {index_type!r}"
            )
        self.given_path, self.given_uri = str(path), uri
        self.folder = expand_home(path)
        self.uri = uri if is_server_uri(uri) else str(expand_home(uri))
        self.collection = collection
        self.index_type = index_type
        self.return_embedding = return_embedding
        self._state_name = f"{collection}_kotae_state"
        self._journal_name = f"{collection}_kotae_journal"
        self._lock = threading.RLock()
        self._view_cache: tuple[str, _View] | None = None

    def _collection_id(self) -> str:
        """A random id kept in the state collection, so local caches never mix two collections."""
        found = self._get(self._state_name, ["collection_id"]).get("collection_id")
        if found is None:
            found = uuid.uuid4().hex[:16]
            self._put(self._state_name, {"collection_id": found})
        return found

    def _connect(self) -> Any:
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise DocumentStoreError(
                "index.store milvus needs pymilvus: pip install 'kotae[milvus]'"
            ) from None
        try:
            return MilvusClient(uri=self.uri, token=milvus_token(), grpc_options=dict(_GRPC_OPTIONS))
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DocumentStoreError(
                f"cannot connect to Milvus at {self.uri} ({reason}); check index.milvus_uri and that "
                f"the server runs (token, if any, from {TOKEN_VARIABLE})"
            ) from None

    # ------------------------------------------------------------------ collections

    def _ensure_loaded(self, name: str) -> None:
        """Load a collection that exists but is released (as after a server restart)."""
        from pymilvus.client.types import LoadState

        if (
            self._client.has_collection(name)
            and self._client.get_load_state(name).get("state") != LoadState.Loaded
        ):
            self._client.load_collection(name)

    def _create_side_collection(self, name: str) -> None:
        """A key/value collection (Milvus needs a vector field in every collection: a 2-d dummy)."""
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=_MAX_TEXT)
        schema.add_field("value", DataType.VARCHAR, max_length=_MAX_TEXT)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=2)
        index = self._client.prepare_index_params()
        index.add_index(field_name="vec", index_type="FLAT", metric_type="L2")
        self._client.create_collection(
            name, schema=schema, index_params=index, consistency_level=_CONSISTENCY
        )

    def _create_passages(self, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=_MAX_TEXT)
        schema.add_field("data", DataType.VARCHAR, max_length=_MAX_TEXT)
        schema.add_field("has_vec", DataType.BOOL)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        index = self._client.prepare_index_params()
        params = {"HNSW": {"M": 32, "efConstruction": 200}, "IVF_FLAT": {"nlist": 256}}.get(
            self.index_type, {}
        )
        index.add_index(field_name="vec", index_type=self.index_type, metric_type="COSINE", params=params)
        self._client.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level=_CONSISTENCY
        )

    def _passages_exist(self) -> bool:
        return bool(self._client.has_collection(self.collection))

    def _passages_dim(self) -> int | None:
        if not self._passages_exist():
            return None
        for item in self._client.describe_collection(self.collection)["fields"]:
            if item["name"] == "vec":
                return int(item["params"]["dim"])
        return None

    # ------------------------------------------------------------------ key/value rows

    def _get(self, name: str, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(keys, _BATCH):
            for row in self._client.query(name, ids=chunk, output_fields=["key", "value"]):
                found[row["key"]] = row["value"]
        return found

    def _put(self, name: str, values: dict[str, str]) -> None:
        rows = [{"key": key, "value": value, "vec": [0.0, 0.0]} for key, value in values.items()]
        for chunk in _chunks(rows, _BATCH):
            self._client.upsert(name, chunk)

    def _drop_keys(self, name: str, keys: list[str]) -> None:
        for chunk in _chunks(keys, _BATCH):
            self._client.delete(name, ids=chunk)

    def _scan(self, name: str, expression: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every row matching ``expression`` (all rows when empty), in batches."""
        iterator = self._client.query_iterator(name, batch_size=1000, filter=expression, output_fields=fields)
        try:
            while True:
                batch = iterator.next()
                if not batch:
                    return
                yield from batch
        finally:
            iterator.close()

    # ------------------------------------------------------------------ the journal and the reader's view

    def _header(self) -> dict[str, Any] | None:
        value = self._get(self._state_name, ["journal"]).get("journal")
        return None if value is None else json.loads(value)

    def _write_journal(self, journal: dict[str, Any]) -> dict[str, Any]:
        """The journal's body in parts (each under Milvus's VARCHAR limit), then the ``prepare`` header."""
        text = json.dumps(journal, ensure_ascii=True)
        size = _MAX_TEXT - 1
        parts = {
            f"{journal['generation']}:{i}": text[at : at + size]
            for i, at in enumerate(range(0, len(text), size))
        }
        self._put(self._journal_name, parts)
        header = {"generation": journal["generation"], "parts": len(parts), "phase": "prepare"}
        self._put(self._state_name, {"journal": json.dumps(header)})
        return header

    def _read_journal(self, header: dict[str, Any]) -> dict[str, Any]:
        keys = [f"{header['generation']}:{i}" for i in range(int(header["parts"]))]
        parts = self._get(self._journal_name, keys)
        if len(parts) != len(keys):
            raise DocumentStoreError(f"Milvus collection {self._journal_name} lost part of a commit journal")
        return json.loads("".join(parts[key] for key in keys))

    def _committed_generation(self) -> int:
        value = self._get(self._state_name, ["generation"]).get("generation")
        return int(value) if value is not None else 0

    def _view(self) -> _View:
        """The committed state as readers see it (cached while the journal header is unchanged)."""
        rows = self._get(self._state_name, ["journal", "generation"])
        committed = int(rows.get("generation", "0"))
        raw = rows.get("journal")
        if raw is None:
            return _View(committed)
        key = f"{committed}|{raw}"
        if self._view_cache is not None and self._view_cache[0] == key:
            return self._view_cache[1]
        header = json.loads(raw)
        journal = self._read_journal(header)
        if header["phase"] == "prepare":
            view = _View(committed, hidden=set(journal.get("fresh", [])))
        else:
            view = _View(
                int(journal["generation"]),
                hidden=set(journal.get("delete", [])),
                cleared=bool(journal.get("clear")),
                set_sources=journal.get("set_sources", {}),
                delete_sources=journal.get("delete_sources", []),
                state=journal.get("state", {}),
            )
        self._view_cache = (key, view)
        return view

    @_one_line
    def recover(self) -> str | None:
        """Finish or undo a commit a killed writer left behind; returns ``rolled back``/``rolled forward``/None.

        Only a writer may call this (the indexing job, via :meth:`apply`): a live writer's commit
        would otherwise be undone under it.
        """
        with self._lock:
            header = self._header()
            if header is None:
                return None
            journal = self._read_journal(header)
            if header["phase"] == "prepare":
                if self._passages_exist():
                    for chunk in _chunks(list(journal.get("fresh", [])), _BATCH):
                        self._client.delete(self.collection, ids=chunk)
                self._end_journal(header)
                return "rolled back"
            self._finish(journal)
            self._end_journal(header)
            return "rolled forward"

    def _end_journal(self, header: dict[str, Any]) -> None:
        self._drop_keys(self._state_name, ["journal"])
        self._drop_keys(
            self._journal_name, [f"{header['generation']}:{i}" for i in range(int(header["parts"]))]
        )
        self._view_cache = None

    def _finish(self, journal: dict[str, Any]) -> None:
        """Step 4 of a commit (idempotent): deletes, manifest and state rows, the new generation."""
        if journal.get("clear"):
            if self._passages_exist():
                self._client.drop_collection(self.collection)
            keys = [row["key"] for row in self._scan(self._state_name, 'key != "journal"', ["key"])]
            self._drop_keys(self._state_name, [k for k in keys if k not in ("generation", "collection_id")])
        elif self._passages_exist():
            for chunk in _chunks(list(journal.get("delete", [])), _BATCH):
                self._client.delete(self.collection, ids=chunk)
        self._drop_keys(self._state_name, [f"source:{key}" for key in journal.get("delete_sources", [])])
        rows = {
            f"source:{key}": json.dumps(value, ensure_ascii=True)
            for key, value in journal.get("set_sources", {}).items()
        }
        rows.update({f"user.{key}": value for key, value in journal.get("state", {}).items()})
        rows["generation"] = str(journal["generation"])
        self._put(self._state_name, rows)

    # ------------------------------------------------------------------ encoding

    def _encode(self, document: Document, dim: int) -> dict[str, Any]:
        data = document.to_dict(flatten=False)
        data.pop("embedding", None)
        data.pop("score", None)
        try:
            text = json.dumps(data, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Document {document.id!r}: meta must be JSON-serialisable ({error})") from None
        if len(text.encode("utf-8")) > _MAX_TEXT:
            raise DocumentStoreError(
                f"Document {document.id!r} is {len(text.encode('utf-8'))} bytes as JSON, over Milvus's "
                f"{_MAX_TEXT}-byte text field; use shorter passages (index.passage_tokens)"
            )
        if document.embedding is None:
            vector = [1.0] + [0.0] * (
                dim - 1
            )  # never searched (has_vec false); cosine needs a non-zero vector
            return {"id": document.id, "data": text, "has_vec": False, "vec": vector}
        return {
            "id": document.id,
            "data": text,
            "has_vec": True,
            "vec": [float(x) for x in document.embedding],
        }

    @staticmethod
    def _decode(row: dict[str, Any], with_embedding: bool, score: float | None = None) -> Document:
        fields = json.loads(row["data"])
        if with_embedding and row.get("has_vec") and row.get("vec") is not None:
            fields["embedding"] = [float(x) for x in row["vec"]]
        if score is not None:
            fields["score"] = score
        return Document.from_dict(fields)

    # ------------------------------------------------------------------ reading

    @property
    @_one_line
    def generation(self) -> int:
        """The generation readers see (bumped by every commit)."""
        with self._lock:
            return self._view().generation

    @property
    def embedding_dim(self) -> int | None:
        value = self._get(self._state_name, ["dim"]).get("dim")
        return int(value) if value is not None else None

    @_one_line
    def state(self, key: str) -> str | None:
        """A value recorded with :meth:`apply` (``set_state``), or None."""
        with self._lock:
            view = self._view()
            if view.cleared:
                return None
            if key in view.state:
                return view.state[key]
            return self._get(self._state_name, [f"user.{key}"]).get(f"user.{key}")

    def _rows(self, with_embedding: bool, ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Passage rows readers see (all, or those with ``ids``)."""
        view = self._view()
        if view.cleared or not self._passages_exist():
            return []
        fields = ["id", "data", "has_vec", *(["vec"] if with_embedding else [])]
        if ids is None:
            rows = list(self._scan(self.collection, "", fields))
        else:
            rows = []
            for chunk in _chunks(list(dict.fromkeys(ids)), _BATCH):
                rows.extend(self._client.query(self.collection, ids=chunk, output_fields=fields))
        return [row for row in rows if row["id"] not in view.hidden]

    def _matching(self, filters: dict[str, Any] | None, with_embedding: bool = True) -> list[Document]:
        _validate_filters(filters)
        documents = [self._decode(row, with_embedding) for row in self._rows(with_embedding)]
        documents.sort(key=lambda d: d.id)
        if filters:
            documents = [d for d in documents if matches_filter(filters, d)]
        return documents

    @_one_line
    def count_documents(self) -> int:
        """Number of documents readers see."""
        with self._lock:
            view = self._view()
            if view.cleared or not self._passages_exist():
                return 0
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
            total = int(rows[0]["count(*)"])
            for chunk in _chunks(sorted(view.hidden), _BATCH):
                total -= len(self._client.query(self.collection, ids=chunk, output_fields=["id"]))
            return total

    @_one_line
    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """Documents matching Haystack ``filters`` (all documents when None), ordered by id."""
        with self._lock:
            return self._matching(filters, with_embedding=self.return_embedding)

    @_one_line
    def get_documents_by_id(self, document_ids: list[str], return_embedding: bool = False) -> list[Document]:
        """Documents with these ids, in the order asked (unknown ids left out)."""
        with self._lock:
            found = {
                row["id"]: self._decode(row, return_embedding)
                for row in self._rows(return_embedding, list(document_ids))
            }
        return [found[i] for i in document_ids if i in found]

    @_one_line
    def iter_contents(self) -> Iterator[tuple[str, str]]:
        """``(id, content)`` of every document with text, ordered by id (used to build BM25)."""
        with self._lock:
            rows = sorted(self._rows(with_embedding=False), key=lambda row: row["id"])
        for row in rows:
            content = json.loads(row["data"]).get("content")
            if isinstance(content, str):
                yield row["id"], content

    @_one_line
    def source_manifest(self) -> dict[str, tuple[str, list[str]]]:
        """The indexing job's manifest: source key -> (content hash, passage ids)."""
        with self._lock:
            view = self._view()
            if view.cleared:
                return {}
            rows = {
                row["key"].removeprefix("source:"): json.loads(row["value"])
                for row in self._scan(self._state_name, 'key like "source:%"', ["key", "value"])
            }
        for key in view.delete_sources:
            rows.pop(key, None)
        rows.update(view.set_sources)
        return {key: (digest, _unpack_ids(packed)) for key, (digest, packed) in rows.items()}

    @_one_line
    def check_consistency(self) -> list[str]:
        """Problems found between the manifest and the passages readers see (empty when they agree)."""
        with self._lock:
            manifest = self.source_manifest()
            known = {row["id"] for row in self._rows(with_embedding=False)}
        listed = [pid for _, pids in manifest.values() for pid in pids]
        problems = []
        if set(listed) - known:
            problems.append(f"{len(set(listed) - known)} manifest passages missing from Milvus")
        if manifest and known - set(listed):
            problems.append(f"{len(known - set(listed))} passages in Milvus are in no manifest entry")
        if len(listed) != len(set(listed)):
            problems.append("a passage is listed twice in the manifest")
        return problems

    # ------------------------------------------------------------------ the commit

    @_one_line
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
        """Apply one change set as a single commit (see the module docstring); returns how many were written.

        Deletes happen before writes, as in kotae's store; ``set_sources``/``delete_sources``
        maintain the job's manifest in the same commit as the passages.
        """
        with self._lock:
            self.recover()
            generation = self._committed_generation() + 1
            if clear:
                cleared: dict[str, Any] = {"generation": generation, "clear": True}
                self._commit(cleared, self._write_journal(cleared), [])
                return 0
            deleting = list(dict.fromkeys(delete_ids))
            rows, fresh = self._rows_to_write(list(write), set(deleting), policy)
            count = len(rows)
            rows.extend(self._meta_updates(update_meta or {}, {row["id"] for row in rows}, set(deleting)))
            written = {row["id"] for row in rows}
            journal: dict[str, Any] = {
                "generation": generation,
                "fresh": fresh,
                "delete": [pid for pid in deleting if pid not in written],
                "set_sources": {
                    key: [digest, _pack_ids(ids)] for key, (digest, ids) in (set_sources or {}).items()
                },
                "delete_sources": list(delete_sources),
                "state": dict(set_state or {}),
            }
            self._commit(journal, self._write_journal(journal), rows)
            return count

    def _commit(self, journal: dict[str, Any], header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Steps 2-4 of a commit, after the journal and its ``prepare`` header are written."""
        for chunk in _chunks(rows, _BATCH):
            self._client.upsert(self.collection, chunk)
        header = {**header, "phase": "commit"}
        self._put(self._state_name, {"journal": json.dumps(header)})  # the commit point
        self._finish(journal)
        self._end_journal(header)

    def _rows_to_write(
        self, documents: list[Document], deleting: set[str], policy: DuplicatePolicy
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Encoded rows after the duplicate policy (last one wins within a batch), and the ids new to Milvus."""
        dim = self._dimension_for(documents)
        existing = {row["id"] for row in self._rows(False, [d.id for d in documents])} - deleting
        chosen: dict[str, Document] = {}
        for document in documents:
            if document.id in existing or document.id in chosen:
                if policy == DuplicatePolicy.SKIP:
                    continue
                if policy != DuplicatePolicy.OVERWRITE:
                    raise DuplicateDocumentError(f"ID '{document.id}' already exists.")
            chosen[document.id] = document
        rows = [self._encode(document, dim) for document in chosen.values()]
        present: set[str] = set()
        if self._passages_exist():
            for chunk in _chunks(list(chosen), _BATCH):
                present.update(
                    row["id"] for row in self._client.query(self.collection, ids=chunk, output_fields=["id"])
                )
        return rows, [pid for pid in chosen if pid not in present]

    def _dimension_for(self, documents: list[Document]) -> int:
        """The passage collection's dimension, creating (or, from the placeholder, re-creating) it."""
        dims = {len(d.embedding) for d in documents if d.embedding is not None}
        known = self.embedding_dim
        for size in dims:
            if known is not None and size != known:
                raise DocumentStoreError(
                    f"a document has a {size}-d embedding but this Milvus collection holds {known}-d ones; "
                    "embed with the same model, or rebuild the index with --full"
                )
        if len(dims) > 1:
            raise DocumentStoreError(
                f"documents with embeddings of different sizes ({sorted(dims)}) in one write"
            )
        wanted = known or (next(iter(dims)) if dims else None)
        current = self._passages_dim()
        if current is None:
            self._create_passages(wanted or _PLACEHOLDER_DIM)
        elif wanted is not None and current != wanted:  # only the placeholder: no embeddings stored yet
            kept = [
                self._decode(row, False) for row in self._scan(self.collection, "", ["id", "data", "has_vec"])
            ]
            self._client.drop_collection(self.collection)
            self._create_passages(wanted)
            rows = [self._encode(document, wanted) for document in kept]
            for chunk in _chunks(rows, _BATCH):
                self._client.insert(self.collection, chunk)
        if wanted is not None and known is None:
            self._put(self._state_name, {"dim": str(wanted)})
        return wanted or _PLACEHOLDER_DIM

    def _meta_updates(
        self, updates: dict[str, dict[str, Any]], written: set[str], deleting: set[str]
    ) -> list[dict[str, Any]]:
        ids = [i for i in updates if i not in written and i not in deleting]
        if not ids:
            return []
        dim = self._passages_dim() or _PLACEHOLDER_DIM
        rows = []
        for document in self.get_documents_by_id(ids, return_embedding=True):
            rows.append(self._encode(replace(document, meta={**document.meta, **updates[document.id]}), dim))
        return rows

    # ------------------------------------------------------------------ Haystack protocol: writing

    def delete_all_documents(self, recreate_index: bool = False) -> None:
        """Delete every document and the job's manifest (the collection is dropped and re-created)."""
        self.apply(clear=True)

    # ------------------------------------------------------------------ retrieval

    @_one_line
    def embedding_retrieval(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        scale_score: bool = False,
        return_embedding: bool | None = False,
    ) -> list[Document]:
        """The ``top_k`` documents most similar to ``query_embedding``; ``score`` is the cosine similarity.

        Without filters Milvus searches; with filters the matching documents are scored exactly.
        ``scale_score`` maps cosine from [-1, 1] to [0, 1].
        """
        query = np.asarray(query_embedding, dtype=np.float32).reshape(-1)
        if query.size == 0:
            raise ValueError("query_embedding should be a non-empty list of floats.")
        if top_k <= 0:
            return []
        with_embedding = self.return_embedding if return_embedding is None else return_embedding
        with self._lock:
            dim = self.embedding_dim
            view = self._view()
            if dim is None or view.cleared or not self._passages_exist():
                return []
            if query.size != dim:
                raise DocumentStoreError(
                    f"The query embedding has {query.size} dimensions but the store holds "
                    f"{dim}-d embeddings; embed the query with the model the index was built with"
                )
            if filters:
                return self._filtered_retrieval(query, filters, top_k, scale_score, with_embedding)
            fields = ["id", "data", "has_vec", *(["vec"] if with_embedding else [])]
            hits = self._client.search(
                self.collection,
                data=[query.tolist()],
                anns_field="vec",
                limit=min(top_k + len(view.hidden), 16_384),
                filter="has_vec == true",
                output_fields=fields,
                search_params={"metric_type": "COSINE", "params": {"ef": max(64, top_k), "nprobe": 16}},
            )[0]
        results = []
        for hit in hits:
            if hit["id"] in view.hidden:
                continue
            row = {"id": hit["id"], **hit["entity"]}
            results.append(self._decode(row, with_embedding, scaled(float(hit["distance"]), scale_score)))
        return results[:top_k]

    def _filtered_retrieval(
        self, query: np.ndarray, filters: dict[str, Any], top_k: int, scale_score: bool, with_embedding: bool
    ) -> list[Document]:
        candidates = [d for d in self._matching(filters, with_embedding=True) if d.embedding is not None]
        return exact_top_k(candidates, query, top_k, scale_score, with_embedding)

    # ------------------------------------------------------------------ lifecycle and serialisation

    def close(self) -> None:
        """Close the connection to Milvus."""
        with self._lock:
            self._client.close()

    def to_dict(self) -> dict[str, Any]:
        """Serialise the store's settings (never the token, which stays in the environment)."""
        return default_to_dict(
            self,
            path=self.given_path,
            uri=self.given_uri,
            collection=self.collection,
            index_type=self.index_type,
            return_embedding=self.return_embedding,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KotaeMilvusDocumentStore:
        """Re-open a store from :meth:`to_dict` output."""
        return default_from_dict(cls, data)


MilvusDocumentStore = KotaeMilvusDocumentStore  # the old name, for code that imports it
