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
``NAME_kotae_journal`` holds the journal of the commit in progress. The first write creates them;
opening a store and reading create nothing (a mistyped collection name reads as empty).

**Commits.** Milvus makes each insert, upsert or delete request atomic and durable once
acknowledged (Milvus Lite: one WAL record per request), but no transaction spans two requests or
two collections. kotae adds one with a journal:

1. *prepare*: the change set (ids written for the first time, ids written over existing
   documents, ids to delete, manifest and state changes, the next generation) is written to the
   journal collection, then a ``journal`` header row with phase ``prepare``;
2. the passages are upserted: new ones under their ids, new versions of existing ones (OVERWRITE,
   metadata updates) *staged* under ``__kotae_staged__/<generation>/<id>``, the old rows untouched;
3. *commit point*: the header is rewritten with phase ``commit`` (one atomic row write);
4. the staged rows are copied over the old ones, the header becomes ``copied``, the staged rows,
   old passages, manifest and state rows are brought to the new state, the generation bumped, the
   journal removed.

A writer killed anywhere leaves the header behind; the next writer (:meth:`recover`, run by every
:meth:`apply`) rolls a ``prepare`` back (deletes the new and staged rows) and a ``commit`` or
``copied`` forward (repeats step 4, whose requests are idempotent). Readers never wait for that:
while a header exists they read the state it implies (``prepare``: the last commit, new and staged
rows hidden; ``commit``: the next one, deleted and replaced documents hidden, staged rows read in
their place; ``copied``: the next one, staged rows hidden). Every read takes the header, generation
and dimension before and after (one request each) and reads again if they changed, so a reader
sees either the last committed generation or the next one, never half of one. One writer at a
time, as with kotae's own store (the job's lock file covers one machine).

**Dimension.** A collection's vector size is fixed when it is created, from the first embeddings
written. Documents written without embeddings first get a placeholder size; embeddings can follow
only while that collection is empty, otherwise the write is refused in one line: empty it
(``delete_all_documents()``, or ``kotae index --full``, which is one journalled commit) and write
again. A new embedder is the same path: the job rebuilds (``--full``) when the fingerprint changes.

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
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from haystack import Document
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
_STAGED = "__kotae_staged__/"  # id prefix of the new versions of replaced documents, until their commit
_READ_TRIES = 50


_Call = TypeVar("_Call", bound=Any)
_Result = TypeVar("_Result")


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


def _staged_id(generation: int, pid: str) -> str:
    """Where a commit keeps the new version of document ``pid`` until its commit point."""
    return f"{_STAGED}{generation}/{pid}"


@dataclass
class _View:
    """What readers see: the committed generation, ids hidden by a commit in progress, its manifest.

    ``staged`` maps the staged rows readers take in place of replaced documents (staged id -> id).
    """

    generation: int
    hidden: set[str] = field(default_factory=set)
    staged: dict[str, str] = field(default_factory=dict)
    cleared: bool = False
    set_sources: dict[str, Any] = field(default_factory=dict)
    delete_sources: list[str] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    dim: int | None = None

    def shown(self, row: dict[str, Any]) -> dict[str, Any]:
        """A passage row as readers see it: a staged row under its document's id."""
        return {**row, "id": self.staged[row["id"]]} if row["id"] in self.staged else row

    def source_of(self, pid: str) -> str:
        """The row that holds what readers see of document ``pid``."""
        return self.staging.get(pid, pid)

    @functools.cached_property
    def staging(self) -> dict[str, str]:
        return {pid: staged for staged, pid in self.staged.items()}


def _view_of(phase: str, journal: dict[str, Any], committed: int, dim: int | None) -> _View:
    """What readers see while a commit is in ``phase``.

    ``prepare``: the last commit (the commit's new and staged rows hidden). ``commit``: the next one,
    with deleted and replaced documents hidden and the staged rows shown in their place.
    ``copied`` (the staged rows are copied over the replaced ones): the next one, staged rows hidden.
    """
    generation = int(journal["generation"])
    replaced = list(journal.get("replaced", []))
    staged = {_staged_id(generation, pid): pid for pid in replaced}
    if phase == "prepare":
        return _View(committed, hidden={*journal.get("fresh", []), *staged}, dim=dim)
    hidden = set(journal.get("delete", []))
    if phase == "commit":
        hidden.update(replaced)
    else:
        hidden.update(staged)
    return _View(
        generation,
        hidden=hidden,
        staged=staged if phase == "commit" else {},
        cleared=bool(journal.get("clear")),
        set_sources=journal.get("set_sources", {}),
        delete_sources=journal.get("delete_sources", []),
        state=journal.get("state", {}),
        dim=dim,
    )


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
    _id: str | None  # the collection id, read on first use (see path)

    def __init__(
        self,
        path: str | Path,
        uri: str,
        collection: str = "kotae",
        index_type: str = "FLAT",
        return_embedding: bool = True,
    ) -> None:
        """
        Connect to Milvus; the collections are created by the first write (reading creates nothing).

        :param path: Local folder for what stays on this machine (the job's lock file, feedback
            labels, and in ``milvus-<collection id>/`` the BM25 index built from this collection);
            created if missing.
        :param uri: A file path (Milvus Lite in this process) or ``http://host:port`` (a server).
        :param collection: The passage collection's name (state and journal collections get suffixes).
        :param index_type: Milvus vector index: FLAT (exact, like kotae's default), HNSW, IVF_FLAT or AUTOINDEX.
        :param return_embedding: Whether ``filter_documents`` returns embeddings.
        :raises DocumentStoreError: If Milvus cannot be reached (one line naming the uri).
        """
        self._keep_settings(path, uri, collection, index_type, return_embedding)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not is_server_uri(self.uri):
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        self._client = self._connect()
        for name in (self._state_name, self._journal_name, self.collection):
            self._ensure_loaded(name)

    @property
    def path(self) -> Path:
        """This collection's local cache folder (BM25): ``milvus-<collection id>`` (``milvus-new`` before any write).

        The id is random and kept in the state collection, so local caches never mix two collections.
        """
        if self._id is None:
            self._id = self._get(self._state_name, ["collection_id"]).get("collection_id")
        return self.folder / f"milvus-{self._id or 'new'}"

    def _create_collections(self) -> None:
        """The writer's first step: the state and journal collections and the collection id, if missing."""
        for name in (self._state_name, self._journal_name):
            if not self._side_exists(name):
                self._create_side_collection(name)
                self._existing.add(name)
        if self._get(self._state_name, ["collection_id"]).get("collection_id") is None:
            self._put(self._state_name, {"collection_id": uuid.uuid4().hex[:16]})

    def _keep_settings(
        self, path: str | Path, uri: str, collection: str, index_type: str, return_embedding: bool
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
        self._wrote = False
        self._existing: set[str] = set()  # side collections seen (kotae never drops them)
        self._id = None

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

    def _side_exists(self, name: str) -> bool:
        if name not in self._existing and self._client.has_collection(name):
            self._existing.add(name)
        return name in self._existing

    def _get(self, name: str, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        if not self._side_exists(name):
            return found
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
        if name != self.collection and not self._side_exists(name):
            return
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

    def _marker(self) -> tuple[str | None, str, str | None]:
        """The journal header, the committed generation and the dimension, in one request."""
        rows = self._get(self._state_name, ["journal", "generation", "dim"])
        return rows.get("journal"), rows.get("generation", "0"), rows.get("dim")

    def _header(self) -> dict[str, Any] | None:
        value = self._marker()[0]
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

    def _set_phase(self, header: dict[str, Any], phase: str) -> dict[str, Any]:
        """Rewrite the header with ``phase`` (one atomic row write)."""
        header = {**header, "phase": phase}
        self._put(self._state_name, {"journal": json.dumps(header)})
        return header

    def _read_journal(self, header: dict[str, Any]) -> dict[str, Any] | None:
        """The journal ``header`` points at, or None when part of it is gone (its writer ended it meanwhile)."""
        keys = [f"{header['generation']}:{i}" for i in range(int(header["parts"]))]
        parts = self._get(self._journal_name, keys)
        if len(parts) != len(keys):
            return None
        return json.loads("".join(parts[key] for key in keys))

    def _committed_generation(self) -> int:
        return int(self._marker()[1])

    def _view(self, marker: tuple[str | None, str, str | None]) -> _View | None:
        """The state readers see at ``marker`` (cached per header), or None when its journal is gone."""
        raw, committed, dim = marker
        if raw is None:
            return _View(int(committed), dim=int(dim) if dim else None)
        key = "|".join(str(part) for part in marker)
        if self._view_cache is not None and self._view_cache[0] == key:
            return self._view_cache[1]
        header = json.loads(raw)
        journal = self._read_journal(header)
        if journal is None:
            return None
        view = _view_of(header["phase"], journal, int(committed), int(dim) if dim else None)
        self._view_cache = (key, view)
        return view

    def _consistent(self, read: Callable[[_View], _Result]) -> _Result:
        """``read(view)`` of one committed state: read again while a writer moved on meanwhile.

        A reader takes the header, generation and dimension (one request), reads, and takes them again:
        if they changed, a writer passed a commit point or ended a journal in between, and the
        reader's requests may mix two states, so it reads again (after a short, growing pause; about
        20 s in all before it gives up with one line). A writer in one phase only changes rows the
        view hides or overlays, so an unchanged marker means a consistent read.
        """
        for attempt in range(_READ_TRIES):
            if attempt:
                time.sleep(min(0.01 * 2**attempt, 0.5))  # let a writer's phase change pass
            marker = self._marker()
            view = self._view(marker)
            if view is None:
                continue
            result = read(view)
            if self._marker() == marker:
                return result
        raise DocumentStoreError(
            f"Milvus collection {self.collection} changed under {_READ_TRIES} reads in a row; try again"
        )

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
            if journal is None:
                raise DocumentStoreError(
                    f"Milvus collection {self._journal_name} lost part of a commit journal"
                )
            if header["phase"] == "prepare":
                if self._passages_exist():
                    staged = [_staged_id(journal["generation"], pid) for pid in journal.get("replaced", [])]
                    for chunk in _chunks([*journal.get("fresh", []), *staged], _BATCH):
                        self._client.delete(self.collection, ids=chunk)
                self._end_journal(header)
                return "rolled back"
            self._settle(journal, header)
            return "rolled forward"

    def _settle(self, journal: dict[str, Any], header: dict[str, Any]) -> None:
        """Step 4 of a commit (each part idempotent): staged rows copied, then deletes, manifest, generation."""
        if header["phase"] == "commit":
            self._copy_staged(journal)
            header = self._set_phase(header, "copied")
        staged = [_staged_id(journal["generation"], pid) for pid in journal.get("replaced", [])]
        if staged and self._passages_exist():
            for chunk in _chunks(staged, _BATCH):
                self._client.delete(self.collection, ids=chunk)
        self._finish(journal)
        self._end_journal(header)

    def _copy_staged(self, journal: dict[str, Any]) -> None:
        """Write the staged new versions of replaced documents over the old ones (under their own ids)."""
        replaced = journal.get("replaced", [])
        if not replaced or not self._passages_exist():
            return
        fields = ["id", "data", "has_vec", "vec"]
        for chunk in _chunks(replaced, _BATCH):
            staged = [_staged_id(journal["generation"], pid) for pid in chunk]
            rows = self._client.query(self.collection, ids=staged, output_fields=fields)
            for row in rows:
                row["id"] = json.loads(row["data"])["id"]
                row["vec"] = [float(x) for x in row["vec"]]
            if rows:
                self._client.upsert(self.collection, rows)

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
            return self._consistent(lambda view: view.generation)

    @property
    def embedding_dim(self) -> int | None:
        value = self._get(self._state_name, ["dim"]).get("dim")
        return int(value) if value is not None else None

    @_one_line
    def state(self, key: str) -> str | None:
        """A value recorded with :meth:`apply` (``set_state``), or None."""

        def read(view: _View) -> str | None:
            if view.cleared:
                return None
            if key in view.state:
                return view.state[key]
            return self._get(self._state_name, [f"user.{key}"]).get(f"user.{key}")

        with self._lock:
            return self._consistent(read)

    def _rows(self, view: _View, with_embedding: bool, ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Passage rows readers see in ``view`` (all, or those with ``ids``), staged rows under their ids."""
        if view.cleared or not self._passages_exist():
            return []
        fields = ["id", "data", "has_vec", *(["vec"] if with_embedding else [])]
        if ids is None:
            rows = list(self._scan(self.collection, "", fields))
        else:
            rows = []
            asked = [view.source_of(pid) for pid in dict.fromkeys(ids)]
            for chunk in _chunks(asked, _BATCH):
                rows.extend(self._client.query(self.collection, ids=chunk, output_fields=fields))
        return [view.shown(row) for row in rows if row["id"] not in view.hidden]

    def _matching(self, filters: dict[str, Any] | None, with_embedding: bool = True) -> list[Document]:
        _validate_filters(filters)
        with self._lock:
            rows = self._consistent(lambda view: self._rows(view, with_embedding))
        documents = sorted((self._decode(row, with_embedding) for row in rows), key=lambda d: d.id)
        if filters:
            documents = [d for d in documents if matches_filter(filters, d)]
        return documents

    @_one_line
    def count_documents(self) -> int:
        """Number of documents readers see."""

        def read(view: _View) -> int:
            if view.cleared or not self._passages_exist():
                return 0
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
            total = int(rows[0]["count(*)"])
            for chunk in _chunks(sorted(view.hidden), _BATCH):
                total -= len(self._client.query(self.collection, ids=chunk, output_fields=["id"]))
            return total

        with self._lock:
            return self._consistent(read)

    @_one_line
    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """Documents matching Haystack ``filters`` (all documents when None), ordered by id."""
        return self._matching(filters, with_embedding=self.return_embedding)

    @_one_line
    def get_documents_by_id(self, document_ids: list[str], return_embedding: bool = False) -> list[Document]:
        """Documents with these ids, in the order asked (unknown ids left out)."""
        with self._lock:
            rows = self._consistent(lambda view: self._rows(view, return_embedding, list(document_ids)))
        found = {row["id"]: self._decode(row, return_embedding) for row in rows}
        return [found[i] for i in document_ids if i in found]

    @_one_line
    def iter_contents(self) -> Iterator[tuple[str, str]]:
        """``(id, content)`` of every document with text, ordered by id (used to build BM25)."""
        with self._lock:
            rows = self._consistent(lambda view: self._rows(view, with_embedding=False))
        for row in sorted(rows, key=lambda row: row["id"]):
            content = json.loads(row["data"]).get("content")
            if isinstance(content, str):
                yield row["id"], content

    def _manifest(self, view: _View) -> dict[str, tuple[str, list[str]]]:
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
    def source_manifest(self) -> dict[str, tuple[str, list[str]]]:
        """The indexing job's manifest: source key -> (content hash, passage ids)."""
        with self._lock:
            return self._consistent(self._manifest)

    @_one_line
    def check_consistency(self) -> list[str]:
        """Problems found between the manifest and the passages readers see (empty when they agree)."""
        with self._lock:
            manifest, known = self._consistent(
                lambda view: (self._manifest(view), {row["id"] for row in self._rows(view, False)})
            )
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
        maintain the job's manifest in the same commit as the passages. Documents written over
        existing ones (OVERWRITE, ``update_meta``) are staged and copied over them after the commit
        point, so they change with the rest of the commit or not at all.
        """
        with self._lock:
            self._create_collections()
            self.recover()
            generation = self._committed_generation() + 1
            if clear:
                cleared: dict[str, Any] = {"generation": generation, "clear": True}
                self._commit(cleared, self._write_journal(cleared), [])
                return 0
            deleting = list(dict.fromkeys(delete_ids))
            rows = self._rows_to_write(list(write), set(deleting), policy)
            count = len(rows)
            rows.extend(self._meta_updates(update_meta or {}, {row["id"] for row in rows}, set(deleting)))
            present = self._present([row["id"] for row in rows])
            journal: dict[str, Any] = {
                "generation": generation,
                "fresh": [row["id"] for row in rows if row["id"] not in present],
                "replaced": [row["id"] for row in rows if row["id"] in present],
                "delete": [pid for pid in deleting if pid not in {row["id"] for row in rows}],
                "set_sources": {
                    key: [digest, _pack_ids(ids)] for key, (digest, ids) in (set_sources or {}).items()
                },
                "delete_sources": list(delete_sources),
                "state": dict(set_state or {}),
            }
            staged = [
                {**row, "id": _staged_id(generation, row["id"])} if row["id"] in present else row
                for row in rows
            ]
            self._commit(journal, self._write_journal(journal), staged)
            return count

    def _commit(self, journal: dict[str, Any], header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Steps 2-4 of a commit, after the journal and its ``prepare`` header are written."""
        self._wrote = True
        for chunk in _chunks(rows, _BATCH):
            self._client.upsert(self.collection, chunk)
        self._settle(journal, self._set_phase(header, "commit"))  # the commit point

    def _present(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` have a row in the passage collection."""
        present: set[str] = set()
        if self._passages_exist():
            for chunk in _chunks(ids, _BATCH):
                rows = self._client.query(self.collection, ids=chunk, output_fields=["id"])
                present.update(row["id"] for row in rows)
        return present

    def _rows_to_write(
        self, documents: list[Document], deleting: set[str], policy: DuplicatePolicy
    ) -> list[dict[str, Any]]:
        """Encoded rows after the duplicate policy (last one wins within a batch)."""
        dim = self._dimension_for(documents)
        existing = self._present([d.id for d in documents]) - deleting
        chosen: dict[str, Document] = {}
        for document in documents:
            if document.id in existing or document.id in chosen:
                if policy == DuplicatePolicy.SKIP:
                    continue
                if policy != DuplicatePolicy.OVERWRITE:
                    raise DuplicateDocumentError(f"ID '{document.id}' already exists.")
            chosen[document.id] = document
        return [self._encode(document, dim) for document in chosen.values()]

    def _dimension_for(self, documents: list[Document]) -> int:
        """The passage collection's dimension, creating the collection with the first embeddings' size.

        Documents without embeddings written first get a placeholder dimension; the collection is
        re-created with the real one only while it is empty (a Milvus collection's dimension is
        fixed, and dropping stored documents outside a commit could lose them), otherwise the
        write is refused in one line: empty it (``delete_all_documents``) and write again.
        """
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
        if current is not None and wanted is not None and current != wanted:  # only the placeholder
            held = self._client.query(self.collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
            if held:
                raise DocumentStoreError(
                    f"Milvus collection {self.collection} holds {held} documents without embeddings and "
                    f"cannot take {wanted}-d ones; empty it (delete_all_documents(), or kotae index --full) "
                    "and write all documents again"
                )
            self._client.drop_collection(self.collection)
            current = None
        if current is None:
            self._create_passages(wanted or _PLACEHOLDER_DIM)
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
        if filters:
            self._check_query(query, self.embedding_dim)
            return self._filtered_retrieval(query, filters, top_k, scale_score, with_embedding)
        fields = ["id", "data", "has_vec", *(["vec"] if with_embedding else [])]

        def search(view: _View) -> list[dict[str, Any]]:
            if view.dim is None or view.cleared or not self._passages_exist():
                return []
            self._check_query(query, view.dim)
            hits = self._client.search(
                self.collection,
                data=[query.tolist()],
                anns_field="vec",
                limit=min(top_k + len(view.hidden), 16_384),
                filter="has_vec == true",
                output_fields=fields,
                search_params={"metric_type": "COSINE", "params": {"ef": max(64, top_k), "nprobe": 16}},
            )[0]
            return [
                view.shown({"id": hit["id"], **hit["entity"], "distance": hit["distance"]})
                for hit in hits
                if hit["id"] not in view.hidden
            ]

        with self._lock:
            rows = self._consistent(search)[:top_k]
        return [
            self._decode(row, with_embedding, scaled(float(row["distance"]), scale_score)) for row in rows
        ]

    @staticmethod
    def _check_query(query: np.ndarray, dim: int | None) -> None:
        if dim is not None and query.size != dim:
            raise DocumentStoreError(
                f"The query embedding has {query.size} dimensions but the store holds "
                f"{dim}-d embeddings; embed the query with the model the index was built with"
            )

    def _filtered_retrieval(
        self, query: np.ndarray, filters: dict[str, Any], top_k: int, scale_score: bool, with_embedding: bool
    ) -> list[Document]:
        candidates = [d for d in self._matching(filters, with_embedding=True) if d.embedding is not None]
        return exact_top_k(candidates, query, top_k, scale_score, with_embedding)

    # ------------------------------------------------------------------ lifecycle and serialisation

    def close(self) -> None:
        """Seal what this store wrote (see :meth:`_seal`), then close the connection to Milvus."""
        with self._lock:
            if self._wrote:
                self._seal()
            self._client.close()

    def _seal(self) -> None:
        """Flush the passage collection once after writing, so searches use its vector index.

        Milvus searches rows still in the growing segment by a scan; Milvus Lite keeps them in its
        memtable, where a FLAT search over 2,527 passages took ~250 ms instead of ~30 ms here. A
        cluster seals segments by itself and rate-limits flushes, so a refused flush is only logged.
        """
        self._wrote = False
        try:
            if self._passages_exist():
                self._client.flush(self.collection)
        except Exception as error:  # the data is durable already; sealing only speeds up search
            logging.getLogger(__name__).warning("Milvus flush of %s skipped: %s", self.collection, error)

    def _settings(self) -> dict[str, Any]:
        """The settings :meth:`to_dict` writes (never the token, which stays in the environment)."""
        return {
            "path": self.given_path,
            "uri": self.given_uri,
            "collection": self.collection,
            "index_type": self.index_type,
            "return_embedding": self.return_embedding,
        }


MilvusDocumentStore = KotaeMilvusDocumentStore  # the old name, for code that imports it
