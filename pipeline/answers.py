"""Answers for people and for JSON: source-document offsets and the sentence around an answer.

Pure functions, no model. A passage written by ``kotae index`` carries ``meta["start"]``, its
character offset in the source document, so a span ``[start, end)`` in the passage is
``[meta.start + start, meta.start + end)`` in the source. Sentences are found by the indexing
splitter's own sentence rule (:func:`kotae.indexing.split.sentence_spans`), so ``。！？`` end Japanese
sentences exactly as they do when passages are cut.

Example::

    sentence_around("東京は首都です。富士山は高い。", 8, 11)   # ("富士山は高い。", 0, 3)
"""

from __future__ import annotations

from typing import Any

from haystack import Document, ExtractedAnswer

from kotae.indexing.split import sentence_spans

MAX_CONTEXT_CHARS = 240


def source_span(document: Document, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` in ``document`` (a passage) as offsets in its source document."""
    offset = document.meta.get("start") if document.meta else None
    if isinstance(offset, int) and not isinstance(offset, bool):
        return offset + start, offset + end
    return start, end


def sentence_around(text: str, start: int, end: int, limit: int = MAX_CONTEXT_CHARS) -> tuple[str, int, int]:
    """The sentence(s) of ``text`` holding ``[start, end)``, and the answer's offsets inside them.

    A context longer than ``limit`` characters is cut to ``limit`` characters centred on the answer.
    """
    begin, finish = start, end
    for span_start, span_end in sentence_spans(text):
        if span_end > start and span_start < end:
            begin, finish = min(begin, span_start), max(finish, span_end)
    if finish - begin > limit:
        room = max(0, limit - (end - start))
        begin = max(begin, start - room // 2)
        finish = min(finish, max(end, begin + limit))
    return text[begin:finish], start - begin, end - begin


def answer_record(answer: ExtractedAnswer) -> dict[str, Any]:
    """One answer as the JSON object of ``kotae ask --json`` and ``POST /ask``.

    ``start``/``end`` are character offsets in the source document; ``context`` is the sentence around
    the answer, the answer at ``context_start:context_end``. A no-answer has ``answer`` None.
    """
    document = answer.document
    if answer.data is None or document is None or answer.document_offset is None:
        return {
            "answer": None,
            "score": float(answer.score),
            "document_id": None,
            "passage_id": None,
            "source": None,
            "title": None,
            "start": None,
            "end": None,
            "context": None,
            "context_start": None,
            "context_end": None,
            "page": None,
        }
    passage_start, passage_end = answer.document_offset.start, answer.document_offset.end
    if answer.context is not None and answer.context_offset is not None:
        context, context_start, context_end = (
            answer.context,
            answer.context_offset.start,
            answer.context_offset.end,
        )
    else:
        context, context_start, context_end = sentence_around(
            document.content or "", passage_start, passage_end
        )
    start, end = source_span(document, passage_start, passage_end)
    meta = document.meta or {}
    return {
        "answer": answer.data,
        "score": float(answer.score),
        "document_id": meta.get("document_id", document.id),
        "passage_id": document.id,
        "source": meta.get("source"),
        "title": meta.get("title"),
        "start": start,
        "end": end,
        "context": context,
        "context_start": context_start,
        "context_end": context_end,
        "page": meta.get("page"),
    }
