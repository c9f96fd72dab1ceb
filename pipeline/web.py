"""The question page of ``kotae serve``: a Jinja2 page, a small hand-written script, and its JSON API.

Routes (all added to the app by :func:`web_router`):

- ``GET /`` — the page. ``/?q=質問&k=5`` asks the question as soon as the page loads (shareable).
- ``GET /collection`` — documents and passages indexed, the pipeline in use, when the index last changed.
- ``POST /api/ask`` — like ``POST /ask`` (same request body and limits), plus what the page shows:
  each answer's whole passage with the answer's offsets in it, and the passages the retrievers
  handed to the reader.
- ``GET /api/collection`` — the collection view as JSON.
- ``GET /api/document?id=...`` — one whole source document (see below) and its passages' offsets.
- ``GET /docs`` — the HTTP API, rendered here from the app's own OpenAPI schema (no Swagger UI
  or ReDoc: they load unpinned scripts from a CDN, which an offline machine cannot reach).
- ``GET /static/{name}`` — the page's own CSS and JS (nothing comes from a CDN).

The whole source document is read again from its file by the same reader the indexing job used
(so HTML, JSONL and SQuAD files give the same text), but only when every passage in the index still
matches that text at its offsets. When the file has moved or changed since indexing, the text is
rebuilt from the passages instead: they carry ``start``/``end`` offsets in the source text and
overlap, so it is exact wherever a passage covers it; the splitter drops only the whitespace between
sentences, and a gap is filled with as many characters (a line break between Japanese sentences,
spaces otherwise), so every answer offset still points at the same characters.

Document text is untrusted: Jinja2 escapes everything it renders, the script writes document text
with ``textContent`` only, and every page goes out with a Content-Security-Policy that allows no
inline script or style and nothing from another origin.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from kotae.pipeline.answers import answer_record
from kotae.pipeline.batcher import QuestionBatcher
from kotae.pipeline.build import COMPONENTS
from kotae.pipeline.config import PipelineConfig
from kotae.pipeline.guards import SECURITY_HEADERS
from kotae.pipeline.qa import Question, QuestionAnswerer
from kotae.pipeline.schemas import MAX_TOP_K, AskRequest

if TYPE_CHECKING:
    from haystack import Document, ExtractedAnswer
    from jinja2 import Environment

    from kotae.indexing.stores import IndexStore

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
STATIC_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(?:css|js)")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {**SECURITY_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
TOP_K_CHOICES = (1, 3, 5, 10, 20)
MAX_SOURCE_BYTES = 64 * 1024 * 1024
"""Larger source files are not re-read for the document view (it is rebuilt from the passages)."""
MAX_LISTED_DOCUMENTS = 100
RETRIEVER_OUTPUTS = ("joiner", "bm25_retriever", "dense_retriever")
"""Which component's documents are 'the retrieved passages' (the fused list when there is one)."""


# ---------------------------------------------------------------------------------------- pure helpers


def _is_cjk(character: str) -> bool:
    return ord(character) >= 0x2E80


def rebuild_text(pieces: list[tuple[int, int, str]]) -> tuple[str, int]:
    """A source text from its passages ``(start, end, text)``, and how many characters were filled in.

    Overlaps are taken once; a gap (the whitespace the splitter trimmed between passages) is filled
    with the same number of characters, so source offsets stay valid: a line break then spaces when
    it lies between Japanese text, spaces otherwise.

    >>> rebuild_text([(0, 4, "東京です"), (5, 9, "大阪です")])
    ('東京です\\n大阪です', 1)
    """
    parts: list[str] = []
    position = filled = 0
    for start, end, text in sorted(pieces, key=lambda piece: (piece[0], -piece[1])):
        if end <= position:
            continue
        if start > position:
            gap = start - position
            before = parts[-1][-1:] if parts else ""
            newline = bool(before) and _is_cjk(before) and _is_cjk(text[:1] or " ")
            parts.append(("\n" + " " * (gap - 1)) if newline else " " * gap)
            filled += gap
            position = start
        parts.append(text[position - start :])
        position = end
    return "".join(parts), filled


def passage_record(document: Document) -> dict[str, Any]:
    """A retrieved passage for the page: its text, where it comes from and its retrieval score."""
    meta = document.meta or {}
    return {
        "passage_id": document.id,
        "document_id": meta.get("document_id", document.id),
        "title": meta.get("title"),
        "source": meta.get("source"),
        "passage_index": meta.get("passage_index"),
        "start": meta.get("start"),
        "end": meta.get("end"),
        "score": None if document.score is None else float(document.score),
        "text": document.content or "",
    }


def web_answer(answer: ExtractedAnswer) -> dict[str, Any]:
    """``POST /ask``'s answer object plus the whole passage and the answer's offsets in it."""
    record = answer_record(answer)
    document = answer.document
    offset = answer.document_offset
    if answer.data is None or document is None or offset is None:
        record.update(passage=None, passage_start=None, passage_end=None, passage_index=None)
        return record
    record.update(
        passage=document.content or "",
        passage_start=offset.start,
        passage_end=offset.end,
        passage_index=(document.meta or {}).get("passage_index"),
    )
    return record


def index_changed_at(index_dir: Path) -> str | None:
    """When the index files last changed (ISO 8601, UTC), or None when there are none."""
    times = []
    for name in ("store.sqlite3", "store.sqlite3-wal", "vectors.faiss", "bm25"):
        path = index_dir / name
        if path.exists():
            times.append(path.stat().st_mtime)
    if not times:
        return None
    return datetime.fromtimestamp(max(times), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------- the pipeline


async def run_question(
    batcher: QuestionBatcher, question: str, top_k: int | None, filters: dict[str, Any] | None
) -> tuple[list[ExtractedAnswer], list[Document]]:
    """The reader's answers and the passages the retrievers gave it, from one pipeline run (batched)."""
    retriever = next((name for name in RETRIEVER_OUTPUTS if name in batcher.qa.components), None)
    outputs = {retriever} if retriever else None
    result = await batcher.ask(Question(question, top_k, filters, include_outputs_from=outputs))
    answers: list[ExtractedAnswer] = result["reader"]["answers"]
    passages: list[Document] = result.get(retriever, {}).get("documents", []) if retriever else []
    return answers, passages


def pipeline_summary(config: PipelineConfig, qa: QuestionAnswerer) -> dict[str, Any]:
    """The pipeline in use, for people: retriever, reader and models."""
    retriever, reader = config.retriever, config.reader
    return {
        "retriever": retriever.type,
        "retriever_top_k": retriever.top_k,
        "fusion_weights": list(retriever.weights) if retriever.weights else None,
        "embedder": config.embedder.model if retriever.type in ("dense", "hybrid") else None,
        "bm25_tokenizer": config.index.bm25_tokenizer if retriever.type in ("bm25", "hybrid") else None,
        "faiss_factory": config.index.faiss_factory if retriever.type in ("dense", "hybrid") else None,
        "reader": reader.type,
        "reader_model": reader.model,
        "reader_top_k": reader.top_k,
        "no_answer": reader.no_answer,
        "components": [name for name in COMPONENTS if name in qa.components]
        + sorted(set(qa.components) - set(COMPONENTS)),
    }


class _Collection:
    """Read access to the index the pipeline searches (its own store object when it has one)."""

    def __init__(self, config: PipelineConfig, qa: QuestionAnswerer) -> None:
        self.config = config
        self.qa = qa
        self._store: IndexStore | None = None

    @property
    def store(self) -> IndexStore:
        if self._store is None:
            pipeline = getattr(self.qa, "pipeline", None)
            for name in ("bm25_retriever", "dense_retriever"):
                if pipeline is not None and name in self.qa.components:
                    self._store = pipeline.get_component(name).document_store
                    break
            else:
                from kotae.indexing.stores import open_store

                self._store = open_store(self.config)
        assert self._store is not None
        return self._store

    def summary(self) -> dict[str, Any]:
        store = self.store
        manifest = store.source_manifest()
        listed = sorted(manifest.items())[:MAX_LISTED_DOCUMENTS]
        firsts = store.get_documents_by_id([ids[0] for _, (_, ids) in listed if ids])
        by_document = {(d.meta or {}).get("document_id"): d for d in firsts}
        documents = []
        for key, (_, ids) in listed:
            meta = by_document[key].meta if key in by_document else {}
            documents.append(
                {
                    "document_id": key,
                    "title": meta.get("title"),
                    "source": meta.get("source"),
                    "passages": len(ids),
                }
            )
        return {
            "documents": len(manifest),
            "passages": store.count_documents(),
            "index_dir": str(self.config.index_dir),
            "index_changed": index_changed_at(self.config.index_dir),
            "generation": store.generation,
            "pipeline": pipeline_summary(self.config, self.qa),
            "listed": documents,
        }

    def document(self, document_id: str) -> dict[str, Any] | None:
        store = self.store
        entry = store.source_manifest().get(document_id)
        if entry is not None:
            passages = store.get_documents_by_id(entry[1])
        else:
            passages = store.filter_documents(
                {"field": "meta.document_id", "operator": "==", "value": document_id}
            )
        pieces = []
        for passage in passages:
            start, end = (passage.meta or {}).get("start"), (passage.meta or {}).get("end")
            if isinstance(start, int) and isinstance(end, int) and passage.content is not None:
                pieces.append((start, end, passage.content))
        if not pieces:
            return None
        meta = passages[0].meta or {}
        original = self._original_text(document_id, meta.get("source"), pieces)
        text, filled = (original, 0) if original is not None else rebuild_text(pieces)
        return {
            "document_id": document_id,
            "title": meta.get("title"),
            "source": meta.get("source"),
            "text": text,
            "from_source_file": original is not None,
            "filled": filled,
            "passages": sorted(
                ({"start": s, "end": e} for s, e, _ in pieces), key=lambda p: (p["start"], p["end"])
            ),
        }

    def _original_text(self, document_id: str, source: Any, pieces: list[tuple[int, int, str]]) -> str | None:
        """The document's text read again from its file, if the file still holds what was indexed."""
        from kotae.indexing.readers import ReadReport, read_file

        if not isinstance(source, str) or not source:
            return None
        path = Path(source)
        try:
            if not path.is_file() or path.stat().st_size > MAX_SOURCE_BYTES:
                return None
            documents = read_file(path, ReadReport(), self.config.index.max_document_chars)
        except (OSError, ValueError):
            return None
        for document in documents:
            if document.id == document_id:
                if all(document.text[start:end] == text for start, end, text in pieces):
                    return document.text
                return None  # changed since it was indexed: rebuild from the passages instead
        return None


# ---------------------------------------------------------------------------------------- HTTP


@lru_cache(maxsize=1)
def _templates() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True
    )


def _page(name: str, **context: Any) -> HTMLResponse:
    html = _templates().get_template(name).render(**context)
    return HTMLResponse(html, headers={**PAGE_HEADERS, "Cache-Control": "no-store"})


def _static_version() -> str:
    """Changes whenever a static file does, so browsers never run a stale script against a new API."""
    stamps = [int(path.stat().st_mtime) for path in STATIC.iterdir() if path.is_file()]
    return str(max(stamps, default=0))


def web_router(config: PipelineConfig, qa: QuestionAnswerer, batcher: QuestionBatcher) -> APIRouter:
    """The page, the collection view and their JSON API over the already loaded ``qa``.

    :param config: The pipeline configuration ``qa`` was built from.
    :param qa: The loaded pipeline (shared with ``POST /ask``).
    :param batcher: Answers the page's questions (shared with ``POST /ask``).
    """
    router = APIRouter()
    collection = _Collection(config, qa)
    default_k = min(config.reader.top_k, MAX_TOP_K)
    choices = sorted({*TOP_K_CHOICES, default_k})

    @router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    def page(q: str = Query("", max_length=1000), k: int | None = Query(None)) -> HTMLResponse:
        top_k = k if k in choices else default_k
        return _page(
            "index.html", active="ask", question=q, top_k=top_k, choices=choices, version=_static_version()
        )

    @router.api_route(
        "/collection", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False
    )
    def collection_page() -> HTMLResponse:
        return _page(
            "collection.html", active="collection", info=collection.summary(), version=_static_version()
        )

    @router.api_route("/docs", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        return _page("docs.html", active="docs", schema=request.app.openapi(), version=_static_version())

    @router.post("/api/ask", summary="Answer a question, with passages and offsets for the page")
    async def api_ask(request: AskRequest) -> dict[str, Any]:
        started = time.perf_counter()
        answers, passages = await run_question(batcher, request.question, request.top_k, request.filters)
        return {
            "question": request.question,
            "answers": [web_answer(answer) for answer in answers],
            "passages": [passage_record(passage) for passage in passages],
            "seconds": round(time.perf_counter() - started, 4),
        }

    @router.get("/api/collection", summary="Documents and passages indexed, and the pipeline in use")
    def api_collection() -> dict[str, Any]:
        return collection.summary()

    @router.get("/api/document", summary="A whole source document, rebuilt from its passages")
    def api_document(id: str = Query(..., min_length=1, max_length=4096)) -> Any:
        found = collection.document(id)
        if found is None:
            return JSONResponse({"error": f"no document with id {id[:200]!r} in the index"}, status_code=404)
        return found

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Any:
        path = STATIC / name
        if not STATIC_NAME.fullmatch(name) or not path.is_file():
            return JSONResponse({"error": f"no static file {name[:100]!r}"}, status_code=404)
        return FileResponse(
            path,
            media_type=STATIC_TYPES[path.suffix],
            headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"},
        )

    return router
