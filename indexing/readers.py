"""Read a corpus (files and folders) into source documents, never raising on bad input.

Formats: ``.txt`` and ``.md`` (the file is one document), ``.html``/``.htm`` (visible text via
selectolax), ``.pdf`` (text via pypdf, pages joined by :data:`PAGE_BREAK`, with each page's start
offset in ``page_starts``), ``.docx`` (paragraphs and table rows via python-docx), ``.jsonl`` (one document per line: ``text``, optional ``id``, ``title``, ``meta``) and
SQuAD-format ``.json`` (each paragraph's context is a document with its article's title).
Document ids are absolute paths (plus ``#line``/``#id`` or ``#article.paragraph``); for HTML the
document text, and so every passage offset, refers to the extracted visible text (likewise for PDF
and DOCX). A binary file with a text extension (a NUL byte in its first 8 KiB) is skipped, not repaired.

Bad input is skipped or repaired, and every case is recorded in a :class:`ReadReport`:
undecodable bytes are replaced (repaired), empty files and malformed JSON lines are skipped, text
longer than ``max_chars`` is truncated (repaired) and a JSONL line longer than ``max_chars`` is
skipped without being parsed. Unknown extensions are skipped and counted, and so are symbolic
links that lead out of a corpus folder (unless ``follow_symlinks``: a link in the corpus must not
put a file from elsewhere, say ``~/.ssh``, into the index and the page's document view).

Usage::

    documents, report = read_corpus([Path("corpus/")])
    for line in report.summary_lines():
        print(line)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
OFFICE_SUFFIXES = {".pdf", ".docx"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | OFFICE_SUFFIXES | {".jsonl", ".json"}

#: Between the pages of a PDF in the extracted text (a form feed, which also ends a sentence).
PAGE_BREAK = "\n\f\n"

#: Why a binary file (a program, an image, ...) with a text extension was skipped.
BINARY_REASON = "binary file (NUL bytes), not text"

#: Default cap on one document's length (characters); longer text is truncated and reported.
DEFAULT_MAX_CHARS = 5_000_000


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One document of the corpus, before splitting.

    ``id`` is stable across runs (the path, or the path plus a line/paragraph position, or the id
    given in a JSONL line), so re-indexing can tell an edited document from a new one.
    """

    id: str
    text: str
    title: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    #: Where each page starts in ``text`` (character offsets, the first 0) for paged formats (PDF).
    page_starts: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Problem:
    """A piece of input that was skipped or repaired, and why."""

    source: str
    reason: str


@dataclass(slots=True)
class ReadReport:
    """What the reader skipped and what it repaired; nothing bad passes silently."""

    skipped: list[Problem] = field(default_factory=list)
    repaired: list[Problem] = field(default_factory=list)
    links_skipped: int = 0
    """Symbolic links not followed because they lead out of the corpus folder (also in ``skipped``)."""

    def skip(self, source: str | Path, reason: str) -> None:
        self.skipped.append(Problem(str(source), reason))

    def repair(self, source: str | Path, reason: str) -> None:
        self.repaired.append(Problem(str(source), reason))

    def summary_lines(self, limit: int = 20) -> list[str]:
        """Human-readable warning lines: counts, then the first ``limit`` cases of each kind."""
        lines: list[str] = []
        for label, problems in (("skipped", self.skipped), ("repaired", self.repaired)):
            if not problems:
                continue
            lines.append(f"{len(problems)} {label}:")
            lines.extend(f"  {p.source}: {p.reason}" for p in problems[:limit])
            if len(problems) > limit:
                lines.append(f"  ... and {len(problems) - limit} more")
        return lines


def iter_files(paths: list[Path], report: ReadReport, follow_symlinks: bool = False) -> Iterator[Path]:
    """Absolute paths of the files under ``paths`` (folders walked recursively, sorted); missing ones reported.

    Absolute paths make document ids independent of the working directory the job runs from. A
    symbolic link inside a folder is followed only while it stays inside that folder (the corpus
    root): a link to a file or folder elsewhere is skipped and reported, unless ``follow_symlinks``.
    A path given by name is read even when it is a link.
    """
    seen: set[Path] = set()
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            candidates = _walk(path, report, follow_symlinks)
        elif path.is_file():
            candidates = [path]
        else:
            report.skip(path, "no such file or folder")
            continue
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved not in seen:
                seen.add(resolved)
                yield resolved


def _walk(folder: Path, report: ReadReport, follow_symlinks: bool) -> list[Path]:
    """The visible files under ``folder``, sorted; links leaving it are reported unless followed."""
    root = folder.resolve()
    files: list[Path] = []
    visited: set[Path] = set()
    for current, directories, names in os.walk(folder, followlinks=True):
        here = Path(current)
        if here.resolve() in visited:  # a link cycle, or a folder reached twice through links
            directories.clear()
            continue
        visited.add(here.resolve())
        directories[:] = [
            name for name in sorted(directories) if _stays(here / name, root, report, follow_symlinks)
        ]
        for name in sorted(names):
            candidate = here / name
            if (
                not name.startswith(".")
                and candidate.is_file()
                and _stays(candidate, root, report, follow_symlinks)
            ):
                files.append(candidate)
    return sorted(files)


def _stays(path: Path, root: Path, report: ReadReport, follow_symlinks: bool) -> bool:
    """Whether ``path`` may be read: not a link, a link into ``root``, or any link when following them."""
    if follow_symlinks or not path.is_symlink():
        return True
    target = path.resolve()
    if target == root or root in target.parents:
        return True
    report.skip(
        path,
        f"symbolic link to {target}, outside the corpus folder {root}; pass --follow-symlinks to read it",
    )
    report.links_skipped += 1
    return False


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def looks_binary(data: bytes) -> bool:
    """Whether ``data`` is a binary file rather than text: a NUL byte in its first 8 KiB (as git and grep
    decide), unless it starts with a UTF-16 byte-order mark."""
    return b"\x00" in data[:8192] and not data.startswith(_UTF16_BOMS)


def _read_text(path: Path, report: ReadReport) -> str | None:
    """The file's text (:func:`_decode`); None, reported as skipped, when it is empty or binary."""
    source = str(path)
    data = path.read_bytes()
    if not data.strip():
        report.skip(source, "empty file")
        return None
    if looks_binary(data):
        report.skip(source, BINARY_REASON)
        return None
    return _decode(data, source, report)


def _decode(data: bytes, source: str, report: ReadReport) -> str | None:
    """UTF-8 (with or without BOM); undecodable bytes are replaced and reported; mostly-binary skipped."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        text = data.decode("utf-8-sig", errors="replace")
        bad = text.count("\ufffd")
        if bad > max(16, len(text) // 10):
            report.skip(source, f"not UTF-8 text ({bad} undecodable bytes, first at byte {error.start})")
            return None
        report.repair(source, f"{bad} undecodable byte(s) replaced with U+FFFD (first at byte {error.start})")
        return text


def _clean(text: str, source: str, max_chars: int, report: ReadReport) -> str | None:
    """Drop NULs, truncate over-long text; return None (and report) for empty text."""
    if "\x00" in text:
        text = text.replace("\x00", "")
        report.repair(source, "NUL characters removed")
    if len(text) > max_chars:
        report.repair(source, f"{len(text):,} characters truncated to {max_chars:,}")
        text = text[:max_chars]
    if not text.strip():
        report.skip(source, "empty")
        return None
    return text


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub_surrogates(value: Any) -> tuple[Any, int]:
    """``value`` (parsed JSON) with lone surrogates replaced by U+FFFD, and how many there were.

    Only a JSON ``\\uD800``-style escape can put one in a Python string (files are decoded as
    UTF-8); tokenizers and UTF-8 output cannot take them, so they never reach the index.
    """
    if isinstance(value, str):
        return _SURROGATE.subn("\ufffd", value)
    if isinstance(value, list):
        pairs = [_scrub_surrogates(item) for item in value]
        return [item for item, _ in pairs], sum(n for _, n in pairs)
    if isinstance(value, dict):
        total = 0
        scrubbed = {}
        for key, item in value.items():
            new_key, a = _scrub_surrogates(key)
            scrubbed[new_key], b = _scrub_surrogates(item)
            total += a + b
        return scrubbed, total
    return value, 0


def _load_json(text: str, where: str, report: ReadReport) -> Any:
    """``json.loads`` without lone surrogates (replaced and reported); raises JSONDecodeError."""
    loaded = json.loads(text)
    if _SURROGATE_ESCAPE.search(text):
        loaded, count = _scrub_surrogates(loaded)
        if count:
            report.repair(where, f"{count} lone UTF-16 surrogate(s) replaced with U+FFFD")
    return loaded


def html_to_text(html: str) -> tuple[str, str]:
    """Visible text and title of an HTML page (scripts, styles and templates removed)."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else ""
    for node in tree.css("script, style, noscript, template, head"):
        node.decompose()
    root = tree.body or tree.root
    if root is None:
        return "", title
    text = root.text(separator="\n", strip=True)
    return text, title


def _read_text_file(path: Path, max_chars: int, report: ReadReport) -> list[SourceDocument]:
    source = str(path)
    decoded = _read_text(path, report)
    if decoded is None:
        return []
    title = path.stem
    if path.suffix.lower() in HTML_SUFFIXES:
        decoded, html_title = html_to_text(decoded)
        title = html_title or title
    text = _clean(decoded, source, max_chars, report)
    if text is None:
        return []
    return [SourceDocument(id=source, text=text, title=title, source=source)]


def pdf_to_text(path: Path) -> tuple[str, tuple[int, ...], str]:
    """The text of a PDF (pypdf), its pages joined by :data:`PAGE_BREAK`; where each page starts; its title."""
    from pypdf import PdfReader

    reader = PdfReader(path)
    if reader.is_encrypted and not reader.decrypt(""):
        raise ValueError("encrypted PDF (needs a password)")
    parts: list[str] = []
    starts: list[int] = []
    offset = 0
    for page in reader.pages:
        text = (page.extract_text() or "").replace("\x00", "").strip()
        starts.append(offset)
        parts.append(text)
        offset += len(text) + len(PAGE_BREAK)
    title = reader.metadata.title if reader.metadata is not None else None
    return PAGE_BREAK.join(parts), tuple(starts), str(title or "")


def docx_to_text(path: Path) -> tuple[str, str]:
    """The text of a Word file (python-docx): paragraphs and table rows in document order, one a line;
    and its title (document properties)."""
    import docx
    from docx.table import Table

    document = docx.Document(str(path))
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            lines.extend("\t".join(cell.text for cell in row.cells) for row in block.rows)
        else:
            lines.append(block.text)
    return "\n".join(lines), document.core_properties.title or ""


def _read_office_file(path: Path, max_chars: int, report: ReadReport) -> list[SourceDocument]:
    """A PDF or DOCX file as one document; a file its library cannot read is skipped with the reason."""
    source = str(path)
    page_starts: tuple[int, ...] = ()
    try:
        if path.suffix.lower() == ".pdf":
            extracted, page_starts, title = pdf_to_text(path)
        else:
            extracted, title = docx_to_text(path)
    except Exception as error:  # any malformed file: pypdf and python-docx raise many kinds
        report.skip(source, f"not a readable {path.suffix.lower()[1:].upper()} file ({type(error).__name__})")
        return []
    text = _clean(extracted, source, max_chars, report)
    if text is None:
        return []
    page_starts = tuple(start for start in page_starts if start < len(text))  # after a truncation
    return [SourceDocument(source, text, title or path.stem, source, page_starts=page_starts)]


def _read_jsonl(path: Path, max_chars: int, report: ReadReport) -> list[SourceDocument]:
    source = str(path)
    documents: list[SourceDocument] = []
    ids: set[str] = set()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{source}:{number}"
            if not raw.strip():
                continue
            if len(raw) > 4 * max_chars:  # cheap pre-check before decoding a huge line
                report.skip(where, f"line of {len(raw):,} bytes is longer than the {max_chars:,} limit")
                continue
            line = _decode(raw, where, report)
            if line is None:
                continue
            try:
                record = _load_json(line, where, report)
            except json.JSONDecodeError as error:
                report.skip(where, f"malformed JSON ({error.msg} at column {error.colno})")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                report.skip(where, "expected an object with a string 'text'")
                continue
            text = _clean(record["text"], where, max_chars, report)
            if text is None:
                continue
            doc_id = record.get("id")
            doc_id = f"{source}#{number}" if doc_id is None else f"{source}#{doc_id}"
            if doc_id in ids:
                report.skip(where, f"duplicate id {record.get('id')!r}")
                continue
            ids.add(doc_id)
            meta = record.get("meta")
            if meta is not None and not isinstance(meta, dict):
                report.repair(where, "'meta' is not an object; ignored")
                meta = None
            title = record.get("title")
            documents.append(
                SourceDocument(
                    id=doc_id,
                    text=text,
                    title=title if isinstance(title, str) else "",
                    source=source,
                    meta=dict(meta or {}),
                )
            )
    if not documents and not any(p.source.startswith(source) for p in report.skipped):
        report.skip(source, "no documents")
    return documents


def squad_paragraph_id(source: str, article: int, paragraph: int) -> str:
    """The document id of paragraph ``paragraph`` of article ``article`` in the SQuAD file ``source``.

    ``kotae eval`` uses it to tell which indexed passages come from a question's own context.
    """
    return f"{source}#{article}.{paragraph}"


def _read_squad(path: Path, max_chars: int, report: ReadReport) -> list[SourceDocument]:
    source = str(path)
    decoded = _read_text(path, report)
    if decoded is None:
        return []
    try:
        loaded = _load_json(decoded, source, report)
    except json.JSONDecodeError as error:
        report.skip(source, f"malformed JSON ({error.msg} at line {error.lineno})")
        return []
    articles = loaded.get("data") if isinstance(loaded, dict) else None
    if not isinstance(articles, list):
        report.skip(source, "not SQuAD format (expected a top-level 'data' list)")
        return []
    documents: list[SourceDocument] = []
    for a, article in enumerate(articles):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            report.skip(f"{source}#{a}", "article without a 'paragraphs' list")
            continue
        title = article.get("title") if isinstance(article.get("title"), str) else ""
        for p, paragraph in enumerate(article["paragraphs"]):
            where = squad_paragraph_id(source, a, p)
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                report.skip(where, "paragraph without a string 'context'")
                continue
            text = _clean(context, where, max_chars, report)
            if text is None:
                continue
            documents.append(SourceDocument(id=where, text=text, title=title or "", source=source))
    return documents


def read_file(path: Path, report: ReadReport, max_chars: int = DEFAULT_MAX_CHARS) -> list[SourceDocument]:
    """Documents in one file; problems go to ``report``. Never raises for bad content."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        report.skip(path, f"unsupported extension {suffix or '(none)'!r}")
        return []
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path, max_chars, report)
        if suffix == ".json":
            return _read_squad(path, max_chars, report)
        if suffix in OFFICE_SUFFIXES:
            return _read_office_file(path, max_chars, report)
        return _read_text_file(path, max_chars, report)
    except OSError as error:
        report.skip(path, f"unreadable ({error.strerror or error})")
    except (RecursionError, MemoryError) as error:
        report.skip(path, f"could not be parsed ({type(error).__name__})")
    return []


def read_corpus(
    paths: list[Path], max_chars: int = DEFAULT_MAX_CHARS, follow_symlinks: bool = False
) -> tuple[list[SourceDocument], ReadReport]:
    """All documents under ``paths``, with the report of what was skipped or repaired.

    Links that leave a corpus folder are skipped (and reported) unless ``follow_symlinks``.
    """
    report = ReadReport()
    documents: list[SourceDocument] = []
    ids: set[str] = set()
    for path in iter_files(paths, report, follow_symlinks):
        for document in read_file(path, report, max_chars):
            if document.id in ids:
                report.skip(document.id, "duplicate document id")
                continue
            ids.add(document.id)
            documents.append(document)
    return documents, report
