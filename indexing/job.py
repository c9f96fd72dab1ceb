"""The indexing job: corpus -> passages -> embeddings -> FAISS store + BM25, incremental and re-runnable.

1. Read the corpus (bad input is skipped or repaired and reported, never fatal).
2. Hash every document (its id/source, title, text and meta, plus the embedder and passage
   settings) and diff against the store's manifest: new, changed, unchanged, removed.
3. Removed documents' passages are deleted; new and changed documents are split into passages
   sized by the embedder's tokenizer and embedded in length-sorted batches by an engine
   (:mod:`kotae.indexing.engine`: in this process, or on Ray), then committed here, the single writer, in
   chunks (one SQLite transaction each, with the manifest), so a kill loses at most one chunk and
   the next run picks up where this one stopped.
4. The BM25 index is rebuilt from the store's passages and saved next to it.

``full=True`` clears the store first. A change of embedder or passage settings also rebuilds.

Usage::

    summary = run_index(load_pipeline_config("configs/pipeline/default.yaml"), [Path("corpus/")])
    print(summary.to_json())
"""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haystack import Document

from kotae.errors import KotaeError
from kotae.indexing.compute import PassageEmbedder, SplitSettings
from kotae.indexing.embedder import load_embedder
from kotae.indexing.engine import PassageEngine, make_engine
from kotae.indexing.readers import Problem, SourceDocument, read_corpus
from kotae.indexing.settings import IndexJobConfig
from kotae.indexing.split import Passage
from kotae.progress import progress

if TYPE_CHECKING:
    from kotae.indexing.stores import IndexStore

SPLITTER_VERSION = "1"


@dataclass
class IndexSummary:
    """What one run did. ``added``/``updated``/``removed``/``unchanged`` count documents."""

    index_dir: str
    full: bool = False
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    passages_added: int = 0
    passages_removed: int = 0
    passages_total: int = 0
    skipped: list[Problem] = field(default_factory=list)
    repaired: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passages_per_second(self) -> float:
        return self.passages_added / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """One JSON object: ``added``, ``updated``, ``removed``, ``unchanged``, ``passages``, ``skipped``,
        ``seconds`` (plus ``repaired``, ``notes``, ``passages_per_second`` and ``index_dir``)."""
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "passages": {
                "added": self.passages_added,
                "removed": self.passages_removed,
                "total": self.passages_total,
            },
            "skipped": [{"source": p.source, "reason": p.reason} for p in self.skipped],
            "repaired": [{"source": p.source, "reason": p.reason} for p in self.repaired],
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "passages_per_second": round(self.passages_per_second, 1),
            "index_dir": self.index_dir,
            "full": self.full,
        }

    def lines(self, limit: int = 20) -> list[str]:
        """The human-readable summary, warnings last."""
        lines = [
            f"index {self.index_dir}{' (full rebuild)' if self.full else ''}",
            f"documents: {self.added} added, {self.updated} updated, {self.removed} removed, "
            f"{self.unchanged} unchanged",
            f"passages: {self.passages_added} embedded, {self.passages_removed} deleted, {self.passages_total} in index",
            f"time: {self.seconds:.1f}s ({self.passages_per_second:.1f} passages/s)",
        ]
        lines.extend(f"note: {note}" for note in self.notes)
        for label, problems in (("skipped", self.skipped), ("repaired", self.repaired)):
            if problems:
                lines.append(f"warning: {len(problems)} {label}:")
                lines.extend(f"  {p.source}: {p.reason}" for p in problems[:limit])
                if len(problems) > limit:
                    lines.append(f"  ... and {len(problems) - limit} more")
        return lines


def document_hash(document: SourceDocument, fingerprint: str) -> str:
    """Content hash of a source document under given embedder/passage settings."""
    digest = hashlib.sha256()
    for part in (fingerprint, document.id, document.source, document.title, document.text):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    digest.update(json.dumps(document.meta, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
    if document.page_starts:  # only paged documents: every other hash stays as it was
        digest.update(json.dumps(document.page_starts).encode("utf-8"))
    return digest.hexdigest()


def passage_documents(document: SourceDocument, digest: str, passages: list[Passage]) -> list[Document]:
    """Haystack Documents for the passages of one source document (``meta.page``: the 1-based page where a
    passage of a paged document starts)."""
    stem = hashlib.sha256(document.id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    documents = []
    for passage in passages:
        meta = dict(document.meta)
        meta.update(
            source=document.source,
            title=document.title,
            document_id=document.id,
            passage_index=passage.index,
            start=passage.start,
            end=passage.end,
        )
        if document.page_starts:
            meta["page"] = bisect.bisect_right(document.page_starts, passage.start)
        documents.append(Document(id=f"{stem}-{digest[:8]}-{passage.index}", content=passage.text, meta=meta))
    return documents


@contextmanager
def index_lock(index_dir: Path) -> Iterator[None]:
    """One indexing job per index directory at a time."""
    index_dir.mkdir(parents=True, exist_ok=True)
    handle = open(index_dir / ".lock", "w")  # noqa: SIM115 - held for the whole job
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KotaeError(
                f"another 'kotae index' is already writing {index_dir}; wait for it to finish"
            ) from None
        yield
    finally:
        handle.close()


@contextmanager
def _progress(enabled: bool, total: int, console: Any = None) -> Iterator[Callable[[int, int], None]]:
    """Progress over the documents to embed (:func:`kotae.progress.progress`: a bar on a terminal or
    on ``console``, lines in a log); ``advance(documents, passages)``."""
    passages = [0]
    with progress("embedding documents", total, enabled and total > 0, console) as step:

        def advance(documents: int, count: int) -> None:
            passages[0] += count
            step(documents, f"{passages[0]:,} passages")

        yield advance


Chunk = list[tuple[SourceDocument, str, list[Document]]]
"""Documents ready to commit: each with its content hash and its passages (with vectors)."""


@dataclass
class Plan:
    """What a run must do, decided from the corpus and the store's manifest alone (no model, no writes)."""

    removed: list[str]
    todo: list[tuple[SourceDocument, str]]
    unchanged: int = 0
    added: int = 0
    updated: int = 0


def settings_fingerprint(embedder_fingerprint: str, passage_tokens: int, overlap_tokens: int) -> str:
    """What every stored passage depends on besides its document: the embedder and the split settings."""
    return f"{embedder_fingerprint}|{passage_tokens}|{overlap_tokens}|split{SPLITTER_VERSION}"


def plan_changes(
    documents: list[SourceDocument], manifest: dict[str, tuple[str, list[str]]], fingerprint: str
) -> Plan:
    """Which sources are gone, and which documents are new or changed (by content hash)."""
    current = {document.id for document in documents}
    plan = Plan(removed=[key for key in manifest if key not in current], todo=[])
    for document in documents:
        digest = document_hash(document, fingerprint)
        known = manifest.get(document.id)
        if known is not None and known[0] == digest:
            plan.unchanged += 1
            continue
        plan.todo.append((document, digest))
        if known is None:
            plan.added += 1
        else:
            plan.updated += 1
    return plan


def split_settings(
    passage_tokens: int, overlap_tokens: int, embedder_max_tokens: int, batch_size: int
) -> tuple[SplitSettings, str | None]:
    """Passage length and overlap within the embedder's limit, and a note when the limit cut them."""
    note = None
    max_tokens = passage_tokens
    if max_tokens > embedder_max_tokens:
        note = f"index.passage_tokens {max_tokens} exceeds the embedder's limit; using {embedder_max_tokens}"
        max_tokens = embedder_max_tokens
    return SplitSettings(max_tokens, min(overlap_tokens, max_tokens // 2), batch_size), note


def commit_chunk(
    store: Any,
    chunk: Chunk,
    manifest: dict[str, tuple[str, list[str]]],
    fingerprint: str,
    summary: IndexSummary,
) -> None:
    """One SQLite transaction: the chunk's passages replace its documents' old ones, with the manifest."""
    from haystack.document_stores.types import DuplicatePolicy

    passages = [p for _, _, ps in chunk for p in ps]
    old = [pid for document, _, _ in chunk for pid in manifest.get(document.id, ("", []))[1]]
    sources = {document.id: (digest, [p.id for p in ps]) for document, digest, ps in chunk}
    store.apply(
        write=passages,
        delete_ids=old,
        policy=DuplicatePolicy.OVERWRITE,
        set_sources=sources,
        set_state={"fingerprint": fingerprint},
    )
    summary.passages_added += len(passages)
    summary.passages_removed += len(old)


def compute_and_commit(
    engine: PassageEngine,
    todo: list[tuple[SourceDocument, str]],
    split: SplitSettings,
    commit_documents: int,
    commit: Callable[[Chunk], None],
    progress: bool,
) -> None:
    """Run the engine over the documents to do and commit every ``commit_documents`` finished ones."""
    chunk: Chunk = []
    with _progress(progress, len(todo)) as advance:
        for position, pieces, vectors in engine.run([d for d, _ in todo], split):
            document, digest = todo[position]
            passages = [
                replace(passage, embedding=vector.tolist())
                for passage, vector in zip(passage_documents(document, digest, pieces), vectors, strict=True)
            ]
            chunk.append((document, digest, passages))
            advance(1, len(passages))
            if len(chunk) >= commit_documents:
                commit(chunk)
                chunk = []
        if chunk:
            commit(chunk)


def _open_store(config: IndexJobConfig, directory: Path, full: bool) -> IndexStore:
    """The store ``index.store`` names for ``directory``; --full starts over even from a damaged
    store.sqlite3 (kotae's store)."""
    from haystack.document_stores.errors import DocumentStoreError

    from kotae.indexing.stores import open_store

    try:
        return open_store(config, directory, recreate_damaged=full)
    except DocumentStoreError as error:
        raise KotaeError(f"index {directory}: {error}") from None


def empty_corpus_message(corpus: list[Path], skipped: list[Problem]) -> str:
    """One line for a corpus that holds no document to index, with the first reason something was skipped."""
    paths = ", ".join(str(p) for p in corpus[:3]) + (" ..." if len(corpus) > 3 else "")
    why = f"{len(skipped)} skipped, first {skipped[0].source}: {skipped[0].reason}" if skipped else "no files"
    return (
        f"no documents to index in {paths} ({why}); nothing was changed. Point --corpus at .txt, .md, "
        ".html, .pdf, .docx, .jsonl or SQuAD .json files, or pass --allow-empty to index an empty corpus"
    )


def run_index(
    config: IndexJobConfig,
    corpus: list[Path],
    index_dir: Path | None = None,
    full: bool = False,
    embedder: PassageEmbedder | None = None,
    progress: bool = False,
    engine: PassageEngine | None = None,
    ray_input: str | None = None,
    allow_empty: bool = False,
    follow_symlinks: bool = False,
) -> IndexSummary:
    """Bring the index in ``index_dir`` (default: the config's) up to date with ``corpus``.

    ``engine`` computes passages and vectors (default: the one ``index.engine`` names, using
    ``embedder``; with Ray, documents reach the workers as ``ray_input``: ``data`` or ``paths``, default ``index.ray_input``);
    the store is written here only. A corpus with no document is an error (nothing is changed)
    unless ``allow_empty`` (then the index is emptied to match). Symbolic links leaving a corpus
    folder are skipped (and listed in the summary) unless ``follow_symlinks``. Steps: read, plan
    (:func:`plan_changes`), remove, compute and commit (:func:`compute_and_commit`), rebuild BM25.
    """
    from haystack.document_stores.errors import DocumentStoreError

    from kotae.indexing.bm25 import load_bm25

    started = time.perf_counter()
    missing = [str(p) for p in corpus if not Path(p).expanduser().exists()]
    if missing:
        raise KotaeError(f"corpus path not found: {missing[0]}; nothing was changed")
    directory = Path(index_dir).expanduser() if index_dir is not None else config.index_dir
    settings = config.index
    summary = IndexSummary(index_dir=str(directory), full=full)

    documents, report = read_corpus(
        list(corpus), max_chars=settings.max_document_chars, follow_symlinks=follow_symlinks
    )
    summary.skipped, summary.repaired = report.skipped, report.repaired
    if report.links_skipped:
        summary.notes.append(
            f"{report.links_skipped} symbolic link(s) leading out of the corpus folder skipped "
            "(listed below); --follow-symlinks reads them"
        )
    if not documents and not allow_empty:
        raise KotaeError(empty_corpus_message(corpus, report.skipped))
    with index_lock(directory):
        if embedder is None:
            embedder = load_embedder(config)
        fingerprint = settings_fingerprint(
            embedder.fingerprint, settings.passage_tokens, settings.overlap_tokens
        )
        store = _open_store(config, directory, full)
        try:
            previous = store.state("fingerprint")
            if not full and previous is not None and previous != fingerprint and store.count_documents():
                summary.notes.append("embedder or passage settings changed since the last run: rebuilding")
                full = summary.full = True
            if full:
                store.delete_all_documents(recreate_index=True)
            manifest = store.source_manifest()
            plan = plan_changes(documents, manifest, fingerprint)
            summary.unchanged, summary.added, summary.updated = plan.unchanged, plan.added, plan.updated

            if plan.removed:
                old = [pid for key in plan.removed for pid in manifest[key][1]]
                store.apply(delete_ids=old, delete_sources=plan.removed)
                summary.removed, summary.passages_removed = len(plan.removed), len(old)
            if plan.todo:
                split, note = split_settings(
                    settings.passage_tokens,
                    settings.overlap_tokens,
                    embedder.max_tokens,
                    config.embedder.batch_size,
                )
                if note:
                    summary.notes.append(note)
                compute_and_commit(
                    engine or make_engine(settings, embedder, ray_input=ray_input),
                    plan.todo,
                    split,
                    settings.commit_documents,
                    lambda chunk: commit_chunk(store, chunk, manifest, fingerprint, summary),
                    progress,
                )
            elif previous != fingerprint and not plan.removed:
                store.apply(set_state={"fingerprint": fingerprint})

            load_bm25(store, settings.bm25_tokenizer)  # rebuilt only when the store changed
            summary.passages_total = store.count_documents()
        except DocumentStoreError as error:
            raise KotaeError(f"index {directory}: {error}") from None
        finally:
            store.close()
    summary.seconds = time.perf_counter() - started
    return summary
