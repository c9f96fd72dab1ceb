"""Question-answering data: load SQuAD-format sets and validate every answer offset.

Sources, all returning the same :class:`QAExample` records:

- a SQuAD v1.1 / v2.0 JSON file (``{"data": [{"title", "paragraphs": [{"context", "qas"}]}]}``);
- a directory of such shards (``*.json`` and ``*.jsonl``, read in name order), e.g. JaQuAD's
  ``train/`` folder;
- JSONL, one flat record per line (``id``, ``question``, ``context``, ``answers`` as a list of
  ``{"text", "answer_start"}`` or as ``{"text": [...], "answer_start": [...]}``, optional
  ``is_impossible``) or one SQuAD article per line;
- a Hugging Face dataset name, ``NAME[:CONFIG][@SPLIT]`` (split defaults to ``train``), e.g.
  ``squad@validation`` or ``shunk031/JGLUE:JSQuAD@validation``, with the SQuAD fields; offline this
  fails with one line.

Every answer is checked: when ``context[answer_start:answer_start + len(text)] != text`` it is
repaired if the text occurs exactly once within :data:`REPAIR_WINDOW` characters of the stated
start, and dropped otherwise; an example that loses all its answers is dropped. The counts are
returned in a :class:`LoadReport` for the caller to print, never swallowed.

Example::

    result = load_examples("../shared/data/jaquad/dev")
    print(result.report.summary())   # "jaquad/dev: kept 3939, repaired 0, dropped 0"
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kotae.errors import KotaeError

REPAIR_WINDOW = 100
"""How far (in characters, either side of the stated start) a misplaced answer is searched for."""


@dataclass(frozen=True)
class Answer:
    """One reference answer: its text and character offset in the example's context."""

    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True)
class QAExample:
    """One question over one context, with zero answers when it is unanswerable (SQuAD v2)."""

    id: str
    question: str
    context: str
    answers: tuple[Answer, ...] = ()
    title: str = ""
    is_impossible: bool = False

    @property
    def answer_texts(self) -> list[str]:
        return [a.text for a in self.answers]


@dataclass
class LoadReport:
    """Counts from validating one source's answers."""

    source: str
    kept: int = 0
    repaired: int = 0
    dropped: int = 0
    unanswerable: int = 0
    dropped_ids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.source}: kept {self.kept}, repaired {self.repaired}, dropped {self.dropped}"
        if self.unanswerable:
            text += f" ({self.unanswerable} unanswerable)"
        return text


@dataclass
class LoadResult:
    examples: list[QAExample]
    report: LoadReport

    @property
    def has_unanswerable(self) -> bool:
        return any(not e.answers for e in self.examples)


# ---------------------------------------------------------------------------------------------
# Validation (pure)


def repair_answer(context: str, answer: Answer, window: int = REPAIR_WINDOW) -> Answer | None:
    """Return ``answer`` if its offset is right, a moved copy if the text occurs exactly once nearby, else None."""
    if not answer.text:
        return None
    if context[answer.start : answer.end] == answer.text:
        return answer
    lo = max(0, answer.start - window)
    hi = min(len(context), answer.start + len(answer.text) + window)
    hits: list[int] = []
    position = context.find(answer.text, lo)
    while position != -1 and position + len(answer.text) <= hi:
        hits.append(position)
        position = context.find(answer.text, position + 1)
    if len(hits) == 1:
        return Answer(answer.text, hits[0])
    return None


def validate_examples(examples: Iterable[QAExample], source: str, window: int = REPAIR_WINDOW) -> LoadResult:
    """Check every answer offset; repair or drop, and count what happened."""
    report = LoadReport(source=source)
    kept: list[QAExample] = []
    for example in examples:
        if not example.answers:
            report.kept += 1
            report.unanswerable += 1
            kept.append(replace(example, is_impossible=True))
            continue
        good: list[Answer] = []
        changed = False
        for answer in example.answers:
            fixed = repair_answer(example.context, answer, window)
            if fixed is None:
                changed = True
                continue
            changed = changed or fixed != answer
            good.append(fixed)
        if not good:
            report.dropped += 1
            report.dropped_ids.append(example.id)
            continue
        if changed:
            report.repaired += 1
        report.kept += 1
        kept.append(replace(example, answers=tuple(good), is_impossible=False))
    return LoadResult(kept, report)


def subsample(examples: Sequence[QAExample], weight: float, seed: int) -> list[QAExample]:
    """Scale a set by ``weight``: whole copies for the integer part, a seeded random sample for the rest."""
    if weight <= 0:
        return []
    copies = int(weight)
    result = [e for _ in range(copies) for e in examples]
    fraction = weight - copies
    if fraction > 0:
        count = round(len(examples) * fraction)
        rng = random.Random(seed)
        picked = sorted(rng.sample(range(len(examples)), count))
        result.extend(examples[i] for i in picked)
    return result


# ---------------------------------------------------------------------------------------------
# Parsing (pure, from already-decoded JSON)


def _answers_from(raw: Any) -> tuple[Answer, ...]:
    if raw is None:
        return ()
    if isinstance(raw, dict):  # Hugging Face columnar form
        texts = list(raw.get("text", []))
        starts = list(raw.get("answer_start", []))
        return tuple(Answer(str(t), int(s)) for t, s in zip(texts, starts, strict=False))
    return tuple(Answer(str(a["text"]), int(a["answer_start"])) for a in raw)


def examples_from_squad(document: dict[str, Any]) -> Iterator[QAExample]:
    """Yield examples from a decoded SQuAD v1.1/v2.0 JSON document (or one article of it)."""
    articles = document.get("data", [document])
    for article in articles:
        title = str(article.get("title", "") or "")
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                impossible = bool(qa.get("is_impossible", False))
                answers = () if impossible else _answers_from(qa.get("answers"))
                yield QAExample(
                    id=str(qa["id"]),
                    question=qa["question"],
                    context=context,
                    answers=answers,
                    title=title,
                    is_impossible=impossible,
                )


def example_from_record(record: dict[str, Any], fallback_id: str) -> QAExample:
    """One flat record (JSONL line or Hugging Face row) to an example."""
    impossible = bool(record.get("is_impossible", False))
    return QAExample(
        id=str(record.get("id") or fallback_id),
        question=record["question"],
        context=record["context"],
        answers=() if impossible else _answers_from(record.get("answers")),
        title=str(record.get("title", "") or ""),
        is_impossible=impossible,
    )


def _unique_ids(examples: Iterable[QAExample]) -> Iterator[QAExample]:
    seen: dict[str, int] = {}
    for example in examples:
        count = seen.get(example.id, 0)
        seen[example.id] = count + 1
        yield example if count == 0 else replace(example, id=f"{example.id}#{count}")


# ---------------------------------------------------------------------------------------------
# Reading (I/O)


def _read_json_file(path: Path) -> Iterator[QAExample]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise KotaeError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(document, dict) or not ("data" in document or "paragraphs" in document):
        raise KotaeError(f"{path}: expected SQuAD JSON with a top-level 'data' list")
    try:
        yield from examples_from_squad(document)
    except (KeyError, TypeError, ValueError) as error:
        raise KotaeError(f"{path}: not SQuAD format (missing or bad field {error})") from None


def _read_jsonl_file(path: Path) -> Iterator[QAExample]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if "paragraphs" in record:
                    yield from examples_from_squad(record)
                else:
                    yield example_from_record(record, fallback_id=f"{path.stem}-{number}")
            except json.JSONDecodeError as error:
                raise KotaeError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            except (KeyError, TypeError, ValueError) as error:
                raise KotaeError(
                    f"{path}:{number}: expected question, context and answers (missing or bad field {error})"
                ) from None


def _read_path(path: Path) -> Iterator[QAExample]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            raise KotaeError(f"{path}: no .json or .jsonl files in this directory")
        for file in files:
            yield from _read_path(file)
    elif path.suffix == ".jsonl":
        yield from _read_jsonl_file(path)
    else:
        yield from _read_json_file(path)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) accepts a TCP connection; False when offline."""
    import os
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class HubName:
    """A Hugging Face dataset named as ``NAME[:CONFIG][@SPLIT]``."""

    dataset: str
    config: str | None = None
    split: str = "train"


def parse_hub_name(text: str) -> HubName:
    """Split ``NAME[:CONFIG][@SPLIT]``; one-line KotaeError when a part is empty.

    >>> parse_hub_name("shunk031/JGLUE:JSQuAD@validation")
    HubName(dataset='shunk031/JGLUE', config='JSQuAD', split='validation')
    >>> parse_hub_name("squad")
    HubName(dataset='squad', config=None, split='train')
    """
    rest, at, split = text.partition("@")
    dataset, colon, config = rest.partition(":")
    if not dataset or (colon and not config) or (at and not split):
        raise KotaeError(
            f"{text!r}: a Hugging Face dataset is NAME[:CONFIG][@SPLIT], e.g. shunk031/JGLUE:JSQuAD@validation"
        )
    return HubName(dataset, config or None, split or "train")


def _read_hub(name: str) -> Iterator[QAExample]:
    import os

    hub = parse_hub_name(name)
    offline_mode = any(
        os.environ.get(key, "").lower() in {"1", "true", "yes"}
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    if not offline_mode and not hub_reachable():
        raise KotaeError(
            f"{name!r} is not a local file or directory, and the Hugging Face hub cannot be reached to load it "
            "as a dataset; check the path, pass a local SQuAD JSON/JSONL file or folder, or set HF_HUB_OFFLINE=1 "
            "to use a cached copy"
        )
    try:
        import datasets

        named = (hub.dataset,) if hub.config is None else (hub.dataset, hub.config)
        rows = datasets.load_dataset(*named, split=hub.split)
    except Exception as error:  # offline, unknown name, bad split: all one line for the user
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise KotaeError(
            f"{name!r} is not a local file or directory, and loading it as a Hugging Face dataset failed "
            f"({first_line[:200]}); check the path, or when offline pass a local SQuAD JSON/JSONL file or folder"
        ) from None
    for number, row in enumerate(rows):
        yield example_from_record(dict(row), fallback_id=f"{hub.dataset}-{number}")


def looks_like_path(source: str) -> bool:
    """A source is a path when it exists, has a JSON suffix, or starts like a path."""
    return is_local_source(source, Path.cwd())


def is_local_source(source: str, folder: Path) -> bool:
    """Whether ``source`` names a local file or folder (relative ones read from ``folder``) rather
    than a Hugging Face dataset: it exists there, has a JSON suffix, or starts like a path."""
    return (
        (folder / Path(source).expanduser()).exists()
        or source.endswith((".json", ".jsonl"))
        or source.startswith(("/", ".", "~"))
    )


def check_source(source: str) -> None:
    """Fail now, in one line, when ``source`` is a local path that does not exist or a malformed
    hub name: what :func:`read_examples` would find only after a model is loaded."""
    if looks_like_path(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise KotaeError(f"data not found: {path}")
    else:
        parse_hub_name(source)


def read_examples(source: str | Path) -> Iterator[QAExample]:
    """Unvalidated examples from a file, directory or Hugging Face dataset name."""
    text = str(source)
    if looks_like_path(text):
        path = Path(text).expanduser()
        if not path.exists():
            raise KotaeError(f"data not found: {path}")
        yield from _read_path(path)
    else:
        yield from _read_hub(text)


def load_examples(
    source: str | Path, max_examples: int | None = None, window: int = REPAIR_WINDOW
) -> LoadResult:
    """Read, de-duplicate ids, take the first ``max_examples`` questions, validate answers."""
    examples: list[QAExample] = []
    for example in _unique_ids(read_examples(source)):
        if max_examples is not None and len(examples) >= max_examples:
            break
        examples.append(example)
    if not examples:
        raise KotaeError(f"{source}: no questions found")
    return validate_examples(examples, source=str(source), window=window)
