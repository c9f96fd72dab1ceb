"""kotae's extractive reader as a Haystack component: the decoder ``kotae evaluate`` scores, over many passages.

All retrieved passages are windowed together (:func:`kotae.reader_training.features.tokenize_windows`),
run through the model in length-sorted batches by a runtime (:mod:`kotae.reader_training.runtime`:
torch, torch-bf16, or the float32 or int8 ONNX form; ``runtime_name`` says which answered) and decoded in one go by :func:`kotae.reader_training.decode.decode`, and ranked globally. With
``relative_scores=True`` (the default) a span scores its margin over its own window's no-answer
score, because raw ``start + end`` logit sums of different passages are on different scales; with
``False`` it scores the raw sum. With ``retriever_weight > 0`` the span's score is combined with its
passage's retrieval rank or score (:mod:`kotae.pipeline.ranking`), so an answer from a passage both
retrievers put first can beat a slightly higher-scored span from the tenth. This is the same windowing
and the same decoder as ``kotae evaluate``: on one passage the pipeline's best answer is exactly the
answer that was scored.

Offsets are characters (Japanese has no word boundaries): ``document_offset`` is the span in the
passage; ``meta["source_start"]``/``meta["source_end"]`` are the span in the original source
document (the passage's ``meta["start"]`` plus the passage offset, as written by ``kotae index``).
``context`` is the sentence around the answer, ``context_offset`` the answer inside it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from haystack import Document, ExtractedAnswer, component, default_from_dict, default_to_dict

from kotae.pipeline.answers import sentence_around, source_span
from kotae.pipeline.ranking import (
    Evidence,
    combined_scores,
    rank_order,
    retriever_evidence,
    unread_cannot_win,
)

if TYPE_CHECKING:
    from kotae.reader_training.decode import Decoded, Span
    from kotae.reader_training.evaluate import DecodeSettings, LoadedReader
    from kotae.reader_training.features import Window


PAD_MULTIPLE = 16
"""Batches are padded to a multiple of this many tokens, so windows of different questions share batches."""


def padded_lengths(
    lengths: Sequence[int], owners: Sequence[int], batch_size: int, multiple: int, cap: int | None = None
) -> list[int]:
    """The padded length of each window: its question's windows, longest first, in batches of
    ``batch_size``, each batch padded to its longest window rounded up to ``multiple`` (but not
    beyond ``cap``, the window length limit, unless the window itself is longer).

    It depends only on the window's own question, so a question read alone or with others gets
    the same padding (and the same logits).

    >>> padded_lengths([30, 7, 20, 40], owners=[0, 0, 1, 1], batch_size=1, multiple=16)
    [32, 16, 32, 48]
    >>> padded_lengths([30, 7, 20, 40], owners=[0, 0, 1, 1], batch_size=2, multiple=16, cap=44)
    [32, 32, 44, 44]
    """
    padded = [0] * len(lengths)
    for owner in set(owners):
        mine = sorted((i for i, o in enumerate(owners) if o == owner), key=lambda i: -lengths[i])
        for first in range(0, len(mine), batch_size):
            batch = mine[first : first + batch_size]
            longest = max(lengths[i] for i in batch)
            rounded = -(-longest // multiple) * multiple
            for index in batch:
                padded[index] = max(longest, min(rounded, cap)) if cap else rounded
    return padded


@dataclass(frozen=True)
class ReadRequest:
    """One question for :meth:`KotaeExtractiveReader.read_many`: ``run``'s arguments."""

    query: str
    documents: list[Document]
    top_k: int | None = None
    max_answer_length: int | None = None
    no_answer: bool | None = None


@component
class KotaeExtractiveReader:
    """Finds the answer span to a question in a list of passages, ranking spans across all of them.

    Spans are ranked by their margin over their own window's no-answer (CLS) score
    (``relative_scores=True``, see ``kotae.reader_training.decode``): raw logit sums of different passages
    are on different scales, and the margin picks the right passage far more often. With
    ``retriever_weight`` w > 0 the ranking score is ``(1 - w) * margin + w * retriever evidence`` of the
    span's passage (``-log`` of its retrieval rank by default; see :mod:`kotae.pipeline.ranking`).
    The score of an answer is its share of probability among the decoded candidate spans (and the
    no-answer score): a softmax over the ranking scores, so its order is the answers' order; the
    reader's margin is kept in ``meta["logit_score"]``, the ranking score in ``meta["rank_score"]``.
    Whether the no-answer comes first is decided on the reader's own scores. On a single passage
    every ranking equals ``kotae evaluate``'s.

    Importable as a Haystack integration, ``from haystack_integrations.components.readers.kotae import
    KotaeExtractiveReader`` (also its serialised ``type``).

    ### Usage example
    ```python
    from haystack import Document
    from haystack_integrations.components.readers.kotae import KotaeExtractiveReader

    reader = KotaeExtractiveReader(model="reader-e5-small-ja-en", top_k=3)
    reader.warm_up()
    passages = [Document(content="富士山の高さは3776メートルである。", meta={"start": 120, "source": "fuji.txt"})]
    answers = reader.run(query="富士山の高さは？", documents=passages)["answers"]
    print(answers[0].data, answers[0].meta["source_start"])
    ```
    """

    __module__ = "haystack_integrations.components.readers.kotae"  # its public home and serialised type

    def __init__(
        self,
        model: str,
        top_k: int = 5,
        max_answer_length: int | None = None,
        max_length: int | None = None,
        stride: int | None = None,
        max_question_length: int | None = None,
        n_best: int | None = None,
        no_answer: bool = False,
        no_answer_threshold: float | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        relative_scores: bool = True,
        retriever_weight: float = 0.0,
        retriever_evidence: Evidence = "rank",
        runtime: str = "torch",
        early_stop_margin: float | None = None,
        early_stop_after: Sequence[int] = (3, 6),
    ) -> None:
        """
        Create the reader; the model loads in :meth:`warm_up`.

        :param model: A reader model folder, a kotae model alias or a hub id (resolved on warm-up).
        :param top_k: How many answers to return. Must be greater than 0.
        :param max_answer_length: Longest answer, in tokens.
        :param max_length: Window length in tokens (question + passage).
        :param stride: Tokens shared by neighbouring windows of a long passage.
        :param max_question_length: Questions are cut to this many tokens.
        :param n_best: Start and end candidates considered per window.
        :param no_answer: Also return a no-answer (``data=None``), first when the null score beats the
            best span by more than ``no_answer_threshold``, otherwise last.
        :param no_answer_threshold: Margin for the no-answer decision (raw logit units).
        :param batch_size: Windows per forward pass.
        :param device: Torch device (``cpu``, ``cuda``, ``cuda:1``); None picks CUDA when available.
        :param relative_scores: Rank spans by their margin over their window's no-answer score
            (True) or by raw logit sums, as ``kotae evaluate`` does within one context (False).
        :param retriever_weight: The retriever's share ``w`` (0-1) of an answer's ranking score,
            ``(1 - w) * reader score + w * retriever evidence`` (:mod:`kotae.pipeline.ranking`);
            0 ranks by the reader alone.
        :param retriever_evidence: ``rank`` (``-log`` of the passage's retrieval rank) or ``score``
            (the passage's ``Document.score``).
        :param runtime: How the model runs: ``torch`` (float32), ``torch-bf16``, ``onnx`` or
            ``onnx-int8`` (the cached float32 or int8 ONNX form on ONNX Runtime) or ``auto`` (``onnx-int8``
            on a CPU with VNNI or AMX where onnxruntime is installed, else ``torch``); see
            ``kotae.reader_training.runtime``.
        :param early_stop_margin: Read the passages in rounds (the first ``early_stop_after[0]``, then up
            to ``early_stop_after[1]``, ..., then the rest) and stop once no unread passage could beat
            the best answer so far if no reader margin exceeds this value
            (:func:`kotae.pipeline.ranking.unread_cannot_win`). None reads every passage at once. Only
            with ``relative_scores`` and without a no-answer; the answers after the first come from the
            passages read.
        :param early_stop_after: The passage counts after which the reader checks whether it may stop.

        Settings left as None come from the model's ``reader_config.json`` (what it was trained and
        measured with), else the ``kotae evaluate`` defaults.
        :raises ValueError: If ``top_k`` or a length setting is not greater than 0, ``runtime`` is
            unknown, ``retriever_weight`` is not between 0 and 1, or ``early_stop_after`` holds a
            count below 1.
        """
        from kotae.reader_training.runtime import RUNTIMES

        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, but got {runtime!r}")
        if top_k <= 0:
            raise ValueError(f"top_k must be greater than 0, but got {top_k}")
        for name, value in (
            ("max_answer_length", max_answer_length),
            ("max_length", max_length),
            ("max_question_length", max_question_length),
            ("n_best", n_best),
            ("batch_size", batch_size),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be greater than 0, but got {value}")
        if stride is not None and stride < 0:
            raise ValueError(f"stride must be 0 or more, but got {stride}")
        if not 0.0 <= retriever_weight <= 1.0:
            raise ValueError(f"retriever_weight must be between 0 and 1, but got {retriever_weight}")
        if retriever_evidence not in ("rank", "score"):
            raise ValueError(f"retriever_evidence must be rank or score, but got {retriever_evidence!r}")
        self.model = model
        self.top_k = top_k
        self.max_answer_length = max_answer_length
        self.max_length = max_length
        self.stride = stride
        self.max_question_length = max_question_length
        self.n_best = n_best
        self.no_answer = no_answer
        self.no_answer_threshold = no_answer_threshold
        self.batch_size = batch_size
        self.device = device
        self.relative_scores = relative_scores
        self.retriever_weight = retriever_weight
        self.retriever_evidence: Evidence = retriever_evidence
        if any(count < 1 for count in early_stop_after):
            raise ValueError(f"early_stop_after counts must be 1 or more, but got {list(early_stop_after)}")
        self.runtime = runtime
        self.early_stop_margin = early_stop_margin
        self.early_stop_after = sorted(set(early_stop_after))
        self.loaded: LoadedReader | None = None  # set by warm_up
        self._deferred: list[ReadRequest] | None = None  # questions recorded by run() inside deferred()

    def to_dict(self) -> dict[str, Any]:
        """Serialise the component to a dictionary."""
        return default_to_dict(
            self,
            model=self.model,
            top_k=self.top_k,
            max_answer_length=self.max_answer_length,
            max_length=self.max_length,
            stride=self.stride,
            max_question_length=self.max_question_length,
            n_best=self.n_best,
            no_answer=self.no_answer,
            no_answer_threshold=self.no_answer_threshold,
            batch_size=self.batch_size,
            device=self.device,
            relative_scores=self.relative_scores,
            retriever_weight=self.retriever_weight,
            retriever_evidence=self.retriever_evidence,
            runtime=self.runtime,
            early_stop_margin=self.early_stop_margin,
            early_stop_after=self.early_stop_after,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KotaeExtractiveReader:
        """Deserialise the component from a dictionary."""
        return default_from_dict(cls, data)

    @property
    def settings(self) -> DecodeSettings | None:
        """The windowing/decoding settings the reader reads with (``None`` before :meth:`warm_up`)."""
        return None if self.loaded is None else self.loaded.settings

    @property
    def runtime_name(self) -> str | None:
        """Which runtime answers (``None`` before :meth:`warm_up`)."""
        return None if self.loaded is None else str(self.loaded.runtime.name)

    def warm_up(self) -> None:
        """Open the reader once (:func:`kotae.reader_training.evaluate.open_reader`): the model's runtime
        (preparing its ONNX form once, for the ONNX runtimes), its fast tokenizer, the windowing settings
        (the folder's, with this component's explicit ones on top) and the folder's span-edge table."""
        if self.loaded is not None:
            return
        import sys

        from kotae.reader_training.evaluate import open_reader

        def log(message: str) -> None:
            print(message, file=sys.stderr, flush=True)

        explicit = {
            "max_answer_length": self.max_answer_length,
            "max_length": self.max_length,
            "stride": self.stride,
            "max_question_length": self.max_question_length,
            "n_best": self.n_best,
            "null_score_threshold": self.no_answer_threshold,
            "batch_size": self.batch_size,
        }
        self.loaded = open_reader(self.model, self.runtime, self.device, explicit, log)

    @property
    def _opened(self) -> LoadedReader:
        """The reader :meth:`warm_up` opened (reading calls ``warm_up`` first)."""
        if self.loaded is None:
            raise RuntimeError("KotaeExtractiveReader: call warm_up() before reading")
        return self.loaded

    @component.output_types(answers=list[ExtractedAnswer])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        max_answer_length: int | None = None,
        no_answer: bool | None = None,
    ) -> dict[str, list[ExtractedAnswer]]:
        """
        Read ``documents`` and return the best answers to ``query``, best first.

        While :meth:`deferred` is open, the question is only recorded and no answers are returned
        (a batch of questions is then read at once by :meth:`read_many`).

        :param query: The question.
        :param documents: Passages to read (documents without text are skipped).
        :param top_k: How many answers (defaults to the init value).
        :param max_answer_length: Longest answer in tokens (defaults to the init/model value).
        :param no_answer: Add a no-answer (defaults to the init value).
        :returns: ``answers``: ExtractedAnswers with the document, passage offsets, source offsets
            in ``meta``, the sentence around the answer as ``context``, and a score.
        :raises ValueError: If ``top_k`` is not greater than 0.
        """
        request = ReadRequest(query, documents, top_k, max_answer_length, no_answer)
        if self._deferred is not None:
            self._deferred.append(request)
            return {"answers": []}
        return {"answers": self.read_many([request])[0]}

    @contextmanager
    def deferred(self) -> Iterator[list[ReadRequest]]:
        """While open, :meth:`run` records each question it is asked (in the list yielded) and
        answers nothing, so a server can run its pipeline per question and read them in one batch."""
        recorded: list[ReadRequest] = []
        self._deferred = recorded
        try:
            yield recorded
        finally:
            self._deferred = None

    def read_many(self, requests: Sequence[ReadRequest]) -> list[list[ExtractedAnswer]]:
        """The answers to each request, as :meth:`run` gives them, with the windows of all requests
        read by the model together (one length-sorted set of batches instead of one per question).

        Windowing, decoding and ranking are per question, and each window is padded as its question
        alone would pad it, so each list is the one :meth:`run` returns for that request alone (on
        the torch runtimes exactly; int8 ONNX quantises activations per batch, so its scores may
        move in the last digits).

        :raises ValueError: If a request's ``top_k`` is not greater than 0.
        """
        for request in requests:
            if request.top_k is not None and request.top_k <= 0:
                raise ValueError(f"top_k must be greater than 0, but got {request.top_k}")
        readable = [
            (number, replace(request, documents=[d for d in request.documents if d.content]))
            for number, request in enumerate(requests)
        ]
        readable = [(n, r) for n, r in readable if r.documents and r.query.strip()]
        answers: list[list[ExtractedAnswer]] = [[] for _ in requests]
        decoded = self._decode_all([request for _, request in readable])
        for (number, request), spans in zip(readable, decoded, strict=True):
            answers[number] = self._answers(request, spans)
        return answers

    def read(
        self, query: str, passages: list[Document], top_k: int, max_answer_length: int | None = None
    ) -> Decoded:
        """The decoder's candidate spans for ``query`` in ``passages`` (every passage has text),
        ranked by the reader's own score; ``span.context_index`` is the passage's position.

        With the retriever's evidence in play (``retriever_weight > 0``) every passage's best spans are
        kept as candidates, so that the combined ranking can lift a lower-scored passage's span. Every
        passage is read (no early stopping), so the spans of each are there to compare.
        """
        return self._decode_all([ReadRequest(query, passages, top_k, max_answer_length)], early_stop=False)[0]

    def _decode_all(self, requests: Sequence[ReadRequest], early_stop: bool = True) -> list[Decoded]:
        """Each request's decoded spans, all requests' windows read by the model together, in rounds
        of passages (:meth:`_rounds`) while some request may still stop early."""
        if not requests:
            return []
        self.warm_up()
        rounds = [self._rounds(request) if early_stop else [len(request.documents)] for request in requests]
        read: list[list[tuple[Window, tuple[np.ndarray, np.ndarray]]]] = [[] for _ in requests]
        decoded: list[Decoded | None] = [None] * len(requests)
        for step in range(max(len(counts) for counts in rounds)):
            reading = [number for number, done in enumerate(decoded) if done is None]
            chunks = {n: range(rounds[n][step - 1] if step else 0, rounds[n][step]) for n in reading}
            for number, window_logits in self._read_passages(requests, chunks):
                read[number].append(window_logits)
            for number in reading:
                spans = self._decode(requests[number], read[number])
                last = step == len(rounds[number]) - 1
                if last or self._may_stop(requests[number], spans, rounds[number][step]):
                    decoded[number] = spans
        return [spans for spans in decoded if spans is not None]

    def _rounds(self, request: ReadRequest) -> list[int]:
        """How many of the request's passages are read after each round: all at once, or in the
        ``early_stop_after`` rounds when early stopping applies to it."""
        count = len(request.documents)
        with_null = self.no_answer if request.no_answer is None else request.no_answer
        if self.early_stop_margin is None or with_null or not self.relative_scores:
            return [count]
        return [k for k in self.early_stop_after if k < count] + [count]

    def _may_stop(self, request: ReadRequest, decoded: Decoded, read: int) -> bool:
        """Whether no passage after the first ``read`` could beat the best span found so far."""
        if not decoded.answers or self.early_stop_margin is None:
            return False
        evidence = self.passage_evidence(request.documents)
        best = float(self.span_scores(decoded, evidence).max())
        return unread_cannot_win(best, evidence, read, self.retriever_weight, self.early_stop_margin)

    def _read_passages(
        self, requests: Sequence[ReadRequest], chunks: dict[int, range]
    ) -> Iterator[tuple[int, tuple[Window, tuple[np.ndarray, np.ndarray]]]]:
        """The windows and logits of passages ``chunks[n]`` of each request ``n``, read together; each
        window's ``example_index`` is its passage's position among its request's documents."""
        from kotae.reader_training.features import tokenize_windows

        pairs = [(number, passage) for number, passages in chunks.items() for passage in passages]
        if not pairs:
            return
        settings = self._opened.settings
        windows = tokenize_windows(
            self._opened.tokenizer,
            [requests[number].query for number, _ in pairs],
            [requests[number].documents[passage].content or "" for number, passage in pairs],
            settings.max_length,
            settings.stride,
            settings.max_question_length,
        )
        logits = self._logits(windows, [number for number, _ in pairs])
        for window, out in zip(windows, logits, strict=True):
            number, passage = pairs[window.example_index]
            yield number, (replace(window, example_index=passage), out)

    def _logits(self, windows: list[Window], question_of: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every window's logits (``question_of[p]`` is the question that passage ``p`` belongs to),
        each window padded to the length it would have if its question were read alone
        (:func:`padded_lengths`), so batching questions together changes no answer; windows of one
        padded length are read together, whichever question they belong to."""
        settings = self._opened.settings
        owners = [question_of[window.example_index] for window in windows]
        lengths = [len(window.input_ids) for window in windows]
        pad = padded_lengths(lengths, owners, settings.batch_size, PAD_MULTIPLE, settings.max_length)
        results: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0), np.empty(0))] * len(windows)
        for length in sorted(set(pad), reverse=True):
            chosen = [index for index, padded in enumerate(pad) if padded == length]
            read = self._opened.runtime.window_logits(
                [windows[i] for i in chosen], settings.batch_size, pad_to=length
            )
            for index, out in zip(chosen, read, strict=True):
                results[index] = out
        return results

    def _decode(
        self, request: ReadRequest, windows: list[tuple[Window, tuple[np.ndarray, np.ndarray]]]
    ) -> Decoded:
        """One question's candidate spans from its windows' logits (``example_index``: the passage's
        position among the request's documents)."""
        from kotae.reader_training.decode import WindowLogits, decode

        top_k = self.top_k if request.top_k is None else request.top_k
        settings = self._opened.settings
        if request.max_answer_length is not None:
            settings = replace(settings, max_answer_length=request.max_answer_length)
        passages = request.documents
        candidates = max(top_k, settings.n_best) * (len(passages) if self.retriever_weight > 0 else 1)
        return decode(
            [
                WindowLogits(start, end, window.offsets, window.cls_index, context_index=window.example_index)
                for window, (start, end) in windows
            ],
            [d.content or "" for d in passages],
            n_best=settings.n_best,
            max_answer_length=settings.max_answer_length,
            top_k=candidates,
            relative_to_null=self.relative_scores,
            refine=self._opened.refine,
        )

    def _answers(self, request: ReadRequest, decoded: Decoded) -> list[ExtractedAnswer]:
        """One question's answers, best first by the ranking score (:meth:`span_scores`), with the
        no-answer first or last when asked for."""
        from kotae.reader_training.decode import choose_answer, softmax

        query, passages = request.query, request.documents
        top_k = self.top_k if request.top_k is None else request.top_k
        with_null = self.no_answer if request.no_answer is None else request.no_answer
        combined = self.span_scores(decoded, self.passage_evidence(passages))
        order = rank_order(combined)
        has_null = decoded.null_score is not None
        scores = [float(s) for s in combined]
        if decoded.null_score is not None:  # the no-answer gets retriever evidence 0
            scores.append((1.0 - self.retriever_weight) * decoded.null_score)
        probabilities = softmax(scores)
        answers: list[ExtractedAnswer] = []
        seen: set[tuple[str, int, int]] = set()
        for position in order:
            span = decoded.answers[position]
            answer = self._answer(
                query,
                passages[span.context_index],
                span,
                float(probabilities[position]),
                float(combined[position]),
            )
            # Overlapping passages of one source document can hold the same span: keep its best.
            key = (str(answer.meta["document_id"]), answer.meta["source_start"], answer.meta["source_end"])
            if key not in seen:
                seen.add(key)
                answers.append(answer)
            if len(answers) == top_k:
                break
        if with_null:
            null_wins = (
                choose_answer(
                    decoded, allow_null=True, null_threshold=self._opened.settings.null_score_threshold
                )
                is None
            )
            null = ExtractedAnswer(
                query=query,
                score=float(probabilities[-1]) if has_null else 0.0,
                data=None,
                meta={"logit_score": decoded.null_score},
            )
            answers = [null, *answers] if null_wins else [*answers, null]
        return answers

    def passage_evidence(self, passages: list[Document]) -> np.ndarray:
        """Each passage's retrieval evidence (:func:`kotae.pipeline.ranking.retriever_evidence`),
        ``passages`` in retrieval order."""
        return retriever_evidence([d.score for d in passages], self.retriever_evidence)

    def span_scores(self, decoded: Decoded, evidence: np.ndarray) -> np.ndarray:
        """Each decoded span's ranking score: the reader's score combined with its passage's retrieval
        ``evidence`` (:meth:`passage_evidence`; :func:`kotae.pipeline.ranking.combined_scores`)."""
        return combined_scores(
            [span.score for span in decoded.answers],
            [span.context_index for span in decoded.answers],
            evidence,
            self.retriever_weight,
        )

    @staticmethod
    def _answer(
        query: str, passage: Document, span: Span, score: float, rank_score: float
    ) -> ExtractedAnswer:
        text = passage.content or ""
        start, end = span.start, span.end
        context, context_start, context_end = sentence_around(text, start, end)
        source_start, source_end = source_span(passage, start, end)
        return ExtractedAnswer(
            query=query,
            score=score,
            data=text[start:end],
            document=passage,
            context=context,
            document_offset=ExtractedAnswer.Span(start, end),
            context_offset=ExtractedAnswer.Span(context_start, context_end),
            meta={
                "document_id": (passage.meta or {}).get("document_id", passage.id),
                "source_start": source_start,
                "source_end": source_end,
                "logit_score": span.score,
                "rank_score": rank_score,
            },
        )
