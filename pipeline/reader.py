"""kotae's extractive reader as a Haystack component: the decoder ``kotae evaluate`` scores, over many passages.

All retrieved passages are windowed together (:func:`kotae.reader_training.features.tokenize_windows`),
run through the model in length-sorted batches by a runtime (:mod:`kotae.reader_training.runtime`:
torch, torch-bf16 or the int8 ONNX form; ``runtime_name`` says which answered) and decoded in one go by :func:`kotae.reader_training.decode.decode`, and ranked globally. With
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

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from haystack import Document, ExtractedAnswer, component, default_from_dict, default_to_dict

from kotae.pipeline.answers import sentence_around, source_span
from kotae.pipeline.ranking import Evidence, combined_scores, rank_order, retriever_evidence

if TYPE_CHECKING:
    from kotae.reader_training.decode import Decoded, Span


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

    ### Usage example
    ```python
    from haystack import Document
    from kotae.pipeline.reader import KotaeExtractiveReader

    reader = KotaeExtractiveReader(model="path/to/reader", top_k=3)
    reader.warm_up()
    passages = [Document(content="富士山の高さは3776メートルである。", meta={"start": 120, "source": "fuji.txt"})]
    answers = reader.run(query="富士山の高さは？", documents=passages)["answers"]
    print(answers[0].data, answers[0].meta["source_start"])
    ```
    """

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
            ``onnx-int8`` (the cached float32 or int8 ONNX form on ONNX Runtime) or ``auto`` (``onnx-int8`` where onnxruntime is
            installed and the device is a CPU, else ``torch``); see ``kotae.reader_training.runtime``.

        Settings left as None come from the model's ``reader_config.json`` (what it was trained and
        measured with), else the ``kotae evaluate`` defaults.
        :raises ValueError: If ``top_k`` or a length setting is not greater than 0, ``runtime`` is
            unknown, or ``retriever_weight`` is not between 0 and 1.
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
        self.runtime = runtime
        self.runtime_name: str | None = None  # which runtime answers, set by warm_up
        self._model: Any = None  # kotae.reader_training.runtime.ReaderRuntime
        self._tokenizer: Any = None
        self._refine: Any = None  # kotae.reader_training.edges.EdgeRefiner when the model folder has a table
        self.settings: Any = None  # kotae.reader_training.evaluate.DecodeSettings, set by warm_up

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
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KotaeExtractiveReader:
        """Deserialise the component from a dictionary."""
        return default_from_dict(cls, data)

    def warm_up(self) -> None:
        """Load the model's runtime (preparing its ONNX form once, for the ONNX runtimes) and fast tokenizer
        (once), and settle the windowing settings."""
        if self._model is not None:
            return
        import sys

        from kotae.reader_training.edges import edge_refiner_from_folder
        from kotae.reader_training.evaluate import DecodeSettings, load_runtime, saved_settings

        def log(message: str) -> None:
            print(message, file=sys.stderr, flush=True)

        model, tokenizer, folder = load_runtime(self.model, self.runtime, self.device, log)
        values = saved_settings(folder)
        explicit = {
            "max_answer_length": self.max_answer_length,
            "max_length": self.max_length,
            "stride": self.stride,
            "max_question_length": self.max_question_length,
            "n_best": self.n_best,
            "null_score_threshold": self.no_answer_threshold,
            "batch_size": self.batch_size,
        }
        values.update({k: v for k, v in explicit.items() if v is not None})
        self.settings = DecodeSettings(**values)
        self._refine = edge_refiner_from_folder(folder)
        self._model, self._tokenizer = model, tokenizer
        self.runtime_name = model.name

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

        :param query: The question.
        :param documents: Passages to read (documents without text are skipped).
        :param top_k: How many answers (defaults to the init value).
        :param max_answer_length: Longest answer in tokens (defaults to the init/model value).
        :param no_answer: Add a no-answer (defaults to the init value).
        :returns: ``answers``: ExtractedAnswers with the document, passage offsets, source offsets
            in ``meta``, the sentence around the answer as ``context``, and a score.
        :raises ValueError: If ``top_k`` is not greater than 0.
        """
        from kotae.reader_training.decode import choose_answer, softmax

        top_k = self.top_k if top_k is None else top_k
        if top_k <= 0:
            raise ValueError(f"top_k must be greater than 0, but got {top_k}")
        with_null = self.no_answer if no_answer is None else no_answer
        passages = [d for d in documents if d.content]
        if not passages or not query.strip():
            return {"answers": []}
        decoded = self.read(query, passages, top_k, max_answer_length)
        combined = self.span_scores(decoded, passages)
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
                choose_answer(decoded, allow_null=True, null_threshold=self.settings.null_score_threshold)
                is None
            )
            null = ExtractedAnswer(
                query=query,
                score=float(probabilities[-1]) if has_null else 0.0,
                data=None,
                meta={"logit_score": decoded.null_score},
            )
            answers = [null, *answers] if null_wins else [*answers, null]
        return {"answers": answers}

    def read(
        self, query: str, passages: list[Document], top_k: int, max_answer_length: int | None = None
    ) -> Decoded:
        """The decoder's candidate spans for ``query`` in ``passages`` (all windowed and read together),
        ranked by the reader's own score; ``span.context_index`` is the passage's position.

        With the retriever's evidence in play (``retriever_weight > 0``) every passage's best spans are
        kept as candidates, so that the combined ranking can lift a lower-scored passage's span.
        """
        from kotae.reader_training.decode import WindowLogits, decode
        from kotae.reader_training.features import tokenize_windows

        self.warm_up()
        settings = self.settings
        if max_answer_length is not None:
            settings = replace(settings, max_answer_length=max_answer_length)
        contexts = [d.content or "" for d in passages]
        windows = tokenize_windows(
            self._tokenizer,
            [query] * len(contexts),
            contexts,
            settings.max_length,
            settings.stride,
            settings.max_question_length,
        )
        logits = self._model.window_logits(windows, settings.batch_size)
        candidates = max(top_k, settings.n_best) * (len(contexts) if self.retriever_weight > 0 else 1)
        return decode(
            [
                WindowLogits(start, end, window.offsets, window.cls_index, context_index=window.example_index)
                for window, (start, end) in zip(windows, logits, strict=True)
            ],
            contexts,
            n_best=settings.n_best,
            max_answer_length=settings.max_answer_length,
            top_k=candidates,
            relative_to_null=self.relative_scores,
            refine=self._refine,
        )

    def span_scores(self, decoded: Decoded, passages: list[Document]) -> np.ndarray:
        """Each decoded span's ranking score: the reader's score combined with its passage's retrieval
        evidence (:func:`kotae.pipeline.ranking.combined_scores`); ``passages`` in retrieval order."""
        evidence = retriever_evidence([d.score for d in passages], self.retriever_evidence)
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
