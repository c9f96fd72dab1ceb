"""kotae's extractive reader as a Haystack component: the decoder ``kotae evaluate`` scores, over many passages.

All retrieved passages are windowed together (:func:`kotae.reader_training.features.tokenize_windows`),
run through the model in length-sorted batches (:func:`kotae.reader_training.evaluate.window_logits`) and
decoded in one go by :func:`kotae.reader_training.decode.decode`, and ranked globally. With
``relative_scores=True`` (the default) a span scores its margin over its own window's no-answer
score, because raw ``start + end`` logit sums of different passages are on different scales; with
``False`` it scores the raw sum. This is the same windowing and the same decoder as
``kotae evaluate``: on one passage the pipeline's best answer is exactly the answer that was scored.

Offsets are characters (Japanese has no word boundaries): ``document_offset`` is the span in the
passage; ``meta["source_start"]``/``meta["source_end"]`` are the span in the original source
document (the passage's ``meta["start"]`` plus the passage offset, as written by ``kotae index``).
``context`` is the sentence around the answer, ``context_offset`` the answer inside it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from haystack import Document, ExtractedAnswer, component, default_from_dict, default_to_dict

from kotae.pipeline.answers import sentence_around, source_span


@component
class KotaeExtractiveReader:
    """Finds the answer span to a question in a list of passages, ranking spans across all of them.

    Spans are ranked by their margin over their own window's no-answer (CLS) score
    (``relative_scores=True``, see ``kotae.reader_training.decode``): raw logit sums of different passages
    are on different scales, and the margin picks the right passage far more often. The score of an
    answer is its share of probability among the decoded candidate spans (and the no-answer score):
    a softmax over those margins, so its order is the decoder's order; the margin is kept in
    ``meta["logit_score"]``. On a single short passage both rankings equal ``kotae evaluate``'s.

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

        Settings left as None come from the model's ``reader_config.json`` (what it was trained and
        measured with), else the ``kotae evaluate`` defaults.
        :raises ValueError: If ``top_k`` or a length setting is not greater than 0.
        """
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
        self._model: Any = None
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
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KotaeExtractiveReader:
        """Deserialise the component from a dictionary."""
        return default_from_dict(cls, data)

    def warm_up(self) -> None:
        """Load the model and its fast tokenizer (once), and settle the windowing settings."""
        if self._model is not None:
            return
        import torch

        from kotae.reader_training.edges import edge_refiner_from_folder
        from kotae.reader_training.evaluate import DecodeSettings, load_reader, saved_settings

        model, tokenizer, folder = load_reader(self.model)
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        model.eval()
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
        from kotae.reader_training.decode import WindowLogits, choose_answer, decode, softmax
        from kotae.reader_training.evaluate import window_logits
        from kotae.reader_training.features import tokenize_windows

        top_k = self.top_k if top_k is None else top_k
        if top_k <= 0:
            raise ValueError(f"top_k must be greater than 0, but got {top_k}")
        with_null = self.no_answer if no_answer is None else no_answer
        passages = [d for d in documents if d.content]
        if not passages or not query.strip():
            return {"answers": []}
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
        logits = window_logits(self._model, self._tokenizer, windows, settings.batch_size)
        decoded = decode(
            [
                WindowLogits(start, end, window.offsets, window.cls_index, context_index=window.example_index)
                for window, (start, end) in zip(windows, logits, strict=True)
            ],
            contexts,
            n_best=settings.n_best,
            max_answer_length=settings.max_answer_length,
            top_k=max(top_k, settings.n_best),
            relative_to_null=self.relative_scores,
            refine=self._refine,
        )
        raw = [span.score for span in decoded.answers]
        has_null = decoded.null_score is not None
        probabilities = softmax([*raw, decoded.null_score] if decoded.null_score is not None else raw)
        answers: list[ExtractedAnswer] = []
        seen: set[tuple[str, int, int]] = set()
        for span, probability in zip(decoded.answers, probabilities, strict=False):
            answer = self._answer(
                query, passages[span.context_index], span.start, span.end, float(probability), span.score
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
                choose_answer(decoded, allow_null=True, null_threshold=settings.null_score_threshold) is None
            )
            null = ExtractedAnswer(
                query=query,
                score=float(probabilities[-1]) if has_null else 0.0,
                data=None,
                meta={"logit_score": decoded.null_score},
            )
            answers = [null, *answers] if null_wins else [*answers, null]
        return {"answers": answers}

    @staticmethod
    def _answer(
        query: str, passage: Document, start: int, end: int, score: float, logit_score: float
    ) -> ExtractedAnswer:
        text = passage.content or ""
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
                "logit_score": logit_score,
            },
        )
