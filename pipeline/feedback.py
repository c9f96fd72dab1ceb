"""Users' verdicts on answers, kept next to the index, and their export as SQuAD v2.0 training data.

One SQLite file, ``<index dir>/feedback.sqlite3`` (WAL, ``synchronous=FULL``: a label acknowledged
to the user survives a crash), holds one row per verdict. Rows are only ever appended: triggers
refuse UPDATE and DELETE. Each row keeps the whole passage text and its hash, so a label stays
usable after the documents are re-indexed; a label whose passage is gone or changed (no passage
with that hash in the current store) is kept, and flagged ``stale`` by :func:`stale_labels`.

Verdicts:

- ``correct``: the answer shown is right (exported as a confirmation of the shown span);
- ``wrong``: the answer shown is wrong; with a corrected span (characters in the passage) it is
  exported as that answer, without one it is kept but not exported;
- ``no_answer``: the passage holds no answer to the question (exported as unanswerable).

The export (:func:`squad_export`) is pure: labels in, SQuAD v2.0 JSON out, optionally split into a
training part and a held-out part by question (the same question never lands on both sides).

Example::

    store = FeedbackStore(index_dir)
    store.add(Label(question="富士山の高さは？", verdict="wrong", ..., corrected_start=8, corrected_end=15))
    data, heldout, counts = squad_export(store.labels(), holdout_fraction=0.2)
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from kotae.errors import KotaeError

FEEDBACK_NAME = "feedback.sqlite3"
VERDICTS = ("correct", "wrong", "no_answer")
Verdict = Literal["correct", "wrong", "no_answer"]


def passage_hash(text: str) -> str:
    """SHA-256 of the passage text (UTF-8), hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_since(value: str) -> str:
    """``--since`` (an ISO date or date-time; UTC when no zone is given) as the stored timestamp form."""
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise KotaeError(
            f"--since {value!r}: use an ISO date or time, e.g. 2026-11-01 or 2026-11-01T09:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Label:
    """One verdict on one answer. Spans are ``[start, end)`` characters in ``passage_text``.

    ``passage_start`` is the passage's offset in its source document (None when unknown), so a span
    in the source is ``passage_start + start``.
    """

    question: str
    verdict: Verdict
    document_id: str
    passage_id: str
    passage_text: str
    passage_start: int | None = None
    answer_start: int | None = None
    answer_end: int | None = None
    corrected_start: int | None = None
    corrected_end: int | None = None
    title: str | None = None
    source: str | None = None
    reader_model: str = ""
    index_generation: int | None = None
    created: str = ""
    id: int | None = None

    def __post_init__(self) -> None:
        problem = label_problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def passage_hash(self) -> str:
        return passage_hash(self.passage_text)

    @property
    def answer_text(self) -> str | None:
        if self.answer_start is None or self.answer_end is None:
            return None
        return self.passage_text[self.answer_start : self.answer_end]

    @property
    def corrected_text(self) -> str | None:
        if self.corrected_start is None or self.corrected_end is None:
            return None
        return self.passage_text[self.corrected_start : self.corrected_end]

    def in_source(self, start: int | None) -> int | None:
        """A passage offset as an offset in the source document."""
        if start is None or self.passage_start is None:
            return None
        return self.passage_start + start

    def record(self, stale: bool | None = None) -> dict[str, Any]:
        """The label as JSON (``kotae feedback list --json``), with texts and source offsets."""
        record = asdict(self)
        record.pop("passage_text")
        record.update(
            answer=self.answer_text,
            corrected=self.corrected_text,
            passage_hash=self.passage_hash,
            answer_source_start=self.in_source(self.answer_start),
            answer_source_end=self.in_source(self.answer_end),
            corrected_source_start=self.in_source(self.corrected_start),
            corrected_source_end=self.in_source(self.corrected_end),
        )
        if stale is not None:
            record["stale"] = stale
        return record


def _span_problem(name: str, start: int | None, end: int | None, length: int) -> str | None:
    if (start is None) != (end is None):
        return f"{name}_start and {name}_end go together: give both or neither"
    if start is not None and end is not None and not 0 <= start < end <= length:
        return f"{name} span [{start}, {end}) is not a non-empty span of the passage (0..{length} characters)"
    return None


def label_problem(label: Label) -> str | None:
    """One line saying what is wrong with ``label``, or None when it can be stored."""
    if label.verdict not in VERDICTS:
        return f"verdict {label.verdict!r} is not one of {', '.join(VERDICTS)}"
    if not label.question.strip():
        return "the question is blank"
    if not label.passage_text:
        return "the passage is empty"
    length = len(label.passage_text)
    for name in ("answer", "corrected"):
        problem = _span_problem(name, getattr(label, f"{name}_start"), getattr(label, f"{name}_end"), length)
        if problem:
            return problem
    if label.verdict == "correct" and label.answer_start is None:
        return "a 'correct' verdict needs the answer span shown (answer_start, answer_end)"
    if label.verdict != "wrong" and label.corrected_start is not None:
        return f"a corrected span goes with verdict 'wrong', not {label.verdict!r}"
    return None


# ---------------------------------------------------------------------------------------- the store

_COLUMNS = [f.name for f in fields(Label) if f.name != "id"]
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {", ".join(_COLUMNS)},
    passage_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_created ON labels (created);
CREATE TRIGGER IF NOT EXISTS labels_no_update BEFORE UPDATE ON labels
BEGIN SELECT RAISE(ABORT, 'feedback labels are append-only'); END;
CREATE TRIGGER IF NOT EXISTS labels_no_delete BEFORE DELETE ON labels
BEGIN SELECT RAISE(ABORT, 'feedback labels are append-only'); END;
"""


class FeedbackStore:
    """The append-only label file of one index directory; safe to share between threads."""

    def __init__(self, index_dir: str | Path) -> None:
        self.path = Path(index_dir).expanduser() / FEEDBACK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # committed means on disk
        self._conn.executescript(_SCHEMA)

    def add(self, label: Label) -> Label:
        """Append ``label`` (timestamped now unless it carries a time); returns it with its id."""
        values = asdict(label)
        values["created"] = label.created or utc_now()
        values.pop("id")
        names = [*_COLUMNS, "passage_hash"]
        row = [values[name] for name in _COLUMNS] + [label.passage_hash]
        with self._lock:
            cursor = self._conn.execute(
                f"INSERT INTO labels ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", row
            )
        values["id"] = cursor.lastrowid
        return Label(**values)

    def labels(self, since: str | None = None) -> list[Label]:
        """Every label in the order it was given, or only those given at or after ``since`` (ISO, UTC)."""
        query = f"SELECT id, {', '.join(_COLUMNS)} FROM labels"
        args: tuple[Any, ...] = ()
        if since is not None:
            query += " WHERE created >= ?"
            args = (since,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY id", args).fetchall()
        return [Label(**dict(zip(["id", *_COLUMNS], row, strict=True))) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_feedback(index_dir: str | Path) -> FeedbackStore:
    """The label store of ``index_dir``; one-line KotaeError when it cannot be opened."""
    try:
        return FeedbackStore(index_dir)
    except (OSError, sqlite3.Error) as error:
        raise KotaeError(f"cannot open the feedback labels in {index_dir}: {error}") from None


# ---------------------------------------------------------------------------------------- staleness


def stale_labels(labels: Iterable[Label], current: Callable[[Label], str | None]) -> set[int]:
    """Ids of the labels whose passage is no longer in the index with the same text.

    :param current: The current text of a label's passage (by passage id, or by document and
        offset after re-indexing), None when there is none.
    """
    stale = set()
    for label in labels:
        text = current(label)
        if label.id is not None and (text is None or passage_hash(text) != label.passage_hash):
            stale.add(label.id)
    return stale


def store_lookup(store: Any) -> Callable[[Label], str | None]:
    """``current`` for :func:`stale_labels` over a :class:`~kotae.indexing.store.FaissDocumentStore`."""
    manifest: dict[str, tuple[str, list[str]]] | None = None

    def current(label: Label) -> str | None:
        nonlocal manifest
        found = store.get_documents_by_id([label.passage_id])
        if found:
            return str(found[0].content or "")
        if manifest is None:
            manifest = store.source_manifest()
        entry = manifest.get(label.document_id)
        if entry is None:
            return None
        for passage in store.get_documents_by_id(entry[1]):
            if (passage.meta or {}).get("start") == label.passage_start:
                return str(passage.content or "")
        return None

    return current


# ---------------------------------------------------------------------------------------- export


@dataclass
class ExportCounts:
    """What an export holds, per verdict, and what it left out."""

    verdicts: Counter[str]
    exported: int = 0
    heldout: int = 0
    stale: int = 0
    skipped_stale: int = 0
    wrong_without_correction: int = 0

    def summary(self) -> str:
        per_verdict = ", ".join(f"{v} {self.verdicts.get(v, 0)}" for v in VERDICTS)
        text = f"labels: {per_verdict}; exported {self.exported}"
        if self.heldout:
            text += f" (held out {self.heldout})"
        text += f"; stale {self.stale}"
        if self.skipped_stale:
            text += f" (left out {self.skipped_stale})"
        if self.wrong_without_correction:
            text += f"; 'wrong' without a corrected span (not exported) {self.wrong_without_correction}"
        return text


def _squad_question(label: Label) -> dict[str, Any] | None:
    qid = f"feedback-{label.id}"
    if label.verdict == "no_answer":
        return {"id": qid, "question": label.question, "answers": [], "is_impossible": True}
    start = label.answer_start if label.verdict == "correct" else label.corrected_start
    text = label.answer_text if label.verdict == "correct" else label.corrected_text
    if start is None or text is None:
        return None
    return {
        "id": qid,
        "question": label.question,
        "answers": [{"text": text, "answer_start": start}],
        "is_impossible": False,
    }


def _squad(labels: list[Label]) -> dict[str, Any]:
    articles: dict[str, dict[str, Any]] = {}
    paragraphs: dict[tuple[str, str], dict[str, Any]] = {}
    for label in labels:
        question = _squad_question(label)
        if question is None:
            continue
        article = articles.setdefault(
            label.document_id, {"title": label.title or label.source or label.document_id, "paragraphs": []}
        )
        key = (label.document_id, label.passage_hash)
        if key not in paragraphs:
            paragraphs[key] = {"context": label.passage_text, "qas": []}
            article["paragraphs"].append(paragraphs[key])
        paragraphs[key]["qas"].append(question)
    return {"version": "v2.0", "data": list(articles.values())}


def squad_export(
    labels: list[Label],
    stale: set[int] | None = None,
    skip_stale: bool = False,
    holdout_fraction: float = 0.0,
    seed: int = 13,
) -> tuple[dict[str, Any], dict[str, Any] | None, ExportCounts]:
    """SQuAD v2.0 JSON of ``labels``: the training part, the held-out part (None without a fraction), counts.

    Held-out questions are chosen at random (``seed``) among distinct question texts, so repeated
    labels of one question stay on one side; with at least two questions, at least one is held out.
    """
    if not 0 <= holdout_fraction < 1:
        raise KotaeError(f"holdout fraction {holdout_fraction} must be at least 0 and below 1")
    stale = stale or set()
    counts = ExportCounts(verdicts=Counter(label.verdict for label in labels))
    counts.stale = sum(1 for label in labels if label.id in stale)
    usable = []
    for label in labels:
        if skip_stale and label.id in stale:
            counts.skipped_stale += 1
        elif _squad_question(label) is None:
            counts.wrong_without_correction += 1
        else:
            usable.append(label)
    held: set[str] = set()
    if holdout_fraction > 0:
        questions = sorted({label.question for label in usable})
        random.Random(seed).shuffle(questions)
        wanted = round(len(questions) * holdout_fraction)
        if len(questions) >= 2:
            wanted = min(max(wanted, 1), len(questions) - 1)
        held = set(questions[:wanted])
    train = [label for label in usable if label.question not in held]
    heldout = [label for label in usable if label.question in held]
    counts.exported, counts.heldout = len(train), len(heldout)
    return _squad(train), (_squad(heldout) if holdout_fraction > 0 else None), counts
