"""Ask a built pipeline a question: the one entry point shared by ``kotae ask``, ``kotae serve`` and the bench.

The pipeline is built and warmed up once; :meth:`QuestionAnswerer.ask` feeds the question to
whichever retrievers the pipeline has and returns the reader's answers. Calls are serialised by a
lock, since Haystack components (models, the FAISS store, BM25) are not assumed to be thread-safe.

Example::

    qa = QuestionAnswerer.from_config(load_pipeline_config("configs/pipeline/default.yaml"))
    for answer in qa.ask("富士山の高さは？", top_k=3):
        print(answer.data, answer.score, answer.meta["source_start"])
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kotae.errors import IndexUnavailable, KotaeError
from kotae.pipeline.config import PipelineConfig

if TYPE_CHECKING:
    from haystack import ExtractedAnswer, Pipeline


@dataclass(frozen=True)
class Question:
    """One question for :meth:`QuestionAnswerer.run_many`: :meth:`QuestionAnswerer.run`'s arguments."""

    text: str
    top_k: int | None = None
    filters: dict[str, Any] | None = None
    include_outputs_from: set[str] | None = None


class QuestionAnswerer:
    """A warmed-up pipeline and a lock around it."""

    def __init__(
        self,
        pipeline: Pipeline,
        config: PipelineConfig | None = None,
        query_targets: list[str] | None = None,
        answers_from: str = "reader",
    ) -> None:
        """
        :param query_targets: The ``component.input`` paths the question goes to (default: those of
            kotae's component names, :data:`~kotae.pipeline.haystack_yaml.QUERY_INPUTS`).
        :param answers_from: The component whose ``answers`` output is returned (and takes ``top_k``).
        """
        from kotae.pipeline.haystack_yaml import query_targets as default_targets

        self.pipeline = pipeline
        self.config = config
        self.components = set(pipeline.graph.nodes)
        self.query_targets = query_targets or default_targets(self.components)
        self.answers_from = answers_from
        self.filtered = sorted(
            name
            for name, sockets in pipeline.inputs(include_components_with_connected_inputs=True).items()
            if "filters" in sockets
        )
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls, config: PipelineConfig, config_path: str | Path | None = None, warm_up: bool = True
    ) -> QuestionAnswerer:
        """Check the index exists and was built with this embedder and the reader model is findable;
        build the pipeline, load the models."""
        from kotae.pipeline.build import build_pipeline, require_index, require_same_embedder

        require_index(config.index_dir, config_path, config)
        pipeline = build_pipeline(config)  # refuses unsafe model files first
        require_same_embedder(config, config_path)
        answerer = cls(pipeline, config)
        if warm_up:
            answerer.warm_up()
        return answerer

    @classmethod
    def from_pipeline_file(cls, path: str | Path, warm_up: bool = True) -> QuestionAnswerer:
        """The pipeline a Haystack pipeline YAML file describes (``kotae pipeline show``, or edited),
        read safely; its index is checked before anything is opened, and its embedder against the index's."""
        from kotae.pipeline.build import pipeline_from_mapping, require_index, require_same_embedder
        from kotae.pipeline.config import load_pipeline_config
        from kotae.pipeline.haystack_yaml import read_pipeline_file

        pipeline_file = read_pipeline_file(Path(path))
        config = load_pipeline_config(None, pipeline_file.overrides)
        require_index(config.index_dir, None, config)
        pipeline = pipeline_from_mapping(pipeline_file.data)
        require_same_embedder(config)
        answerer = cls(pipeline, config, pipeline_file.query_targets, pipeline_file.answers_from)
        if warm_up:
            answerer.warm_up()
        return answerer

    def warm_up(self) -> None:
        """Load every model now rather than on the first question."""
        with self._lock:
            self.pipeline.warm_up()

    def inputs(self, question: str, top_k: int | None, filters: dict[str, Any] | None) -> dict[str, Any]:
        """The ``Pipeline.run`` data for one question."""
        data: dict[str, dict[str, Any]] = {}
        for target in self.query_targets:
            component, field = target.split(".", 1)
            data.setdefault(component, {})[field] = question
        if top_k is not None:
            data.setdefault(self.answers_from, {})["top_k"] = top_k
        if filters:
            for name in self.filtered:
                data.setdefault(name, {})["filters"] = filters
        return data

    def run(
        self,
        question: str,
        top_k: int | None = None,
        filters: dict[str, Any] | None = None,
        include_outputs_from: set[str] | None = None,
    ) -> dict[str, Any]:
        """One locked ``Pipeline.run`` for ``question``; its raw result (``include_outputs_from`` as in Haystack).

        A failure the user can fix (bad filters, an index built with another embedder, a reader
        error meant for people) becomes a one-line KotaeError; an index file that SQLite can no
        longer read (damaged after start-up) an :class:`IndexUnavailable` naming the file and the
        command that rebuilds it; anything else propagates.
        """
        with self._lock:
            return self._run(Question(question, top_k, filters, include_outputs_from))

    def run_many(self, questions: list[Question]) -> list[dict[str, Any] | BaseException]:
        """Each question's :meth:`run` result, or the error :meth:`run` would raise for it, under one lock.

        With kotae's reader, every question goes through the pipeline with the reader deferred
        (retrieval only), then the reader reads all their passages in one batch
        (:meth:`~kotae.pipeline.reader.KotaeExtractiveReader.read_many`): the same windows and the
        same decoder, so the same answers as one question at a time. Should the batch fail, the
        questions are run again one by one, so each gets its own answer or error.
        """
        with self._lock:
            reader = self.pipeline.get_component("reader") if "reader" in self.components else None
            if len(questions) == 1 or not hasattr(reader, "read_many"):
                return [self._attempt(question) for question in questions]
            try:
                return self._batched(reader, questions)
            except Exception:
                return [self._attempt(question) for question in questions]

    def _batched(self, reader: Any, questions: list[Question]) -> list[dict[str, Any] | BaseException]:
        """Retrieval per question with the reader deferred, then one :meth:`read_many` for all."""
        outcomes: list[dict[str, Any] | BaseException] = []
        with reader.deferred() as requests:
            for question in questions:
                recorded = len(requests)
                outcome = self._attempt(question)
                if not isinstance(outcome, BaseException) and len(requests) == recorded:
                    raise RuntimeError("the pipeline answered without reaching its reader")
                outcomes.append(outcome)
        read = reader.read_many(requests)
        answered = iter(read)
        for outcome in outcomes:
            if not isinstance(outcome, BaseException):
                outcome["reader"] = {"answers": next(answered)}
        return outcomes

    def _attempt(self, question: Question) -> dict[str, Any] | BaseException:
        try:
            return self._run(question)
        except Exception as error:
            return error

    def _run(self, question: Question) -> dict[str, Any]:
        """:meth:`run` without the lock."""
        from haystack.core.errors import PipelineRuntimeError
        from haystack.document_stores.errors import DocumentStoreError
        from haystack.errors import FilterError

        data = self.inputs(question.text, question.top_k, question.filters)
        try:
            result: dict[str, Any] = self.pipeline.run(
                data, include_outputs_from=question.include_outputs_from
            )
        except PipelineRuntimeError as error:
            cause = error.__cause__
            if isinstance(cause, KotaeError):
                raise cause from None
            if isinstance(cause, sqlite3.DatabaseError):
                raise IndexUnavailable(self._damaged(error.component_name, cause)) from None
            if isinstance(cause, (ValueError, DocumentStoreError, FilterError)):
                raise KotaeError(f"{error.component_name}: {cause}".splitlines()[0]) from None
            raise
        return result

    def _damaged(self, component: str | None, error: sqlite3.DatabaseError) -> str:
        """The damaged-store line for the store behind ``component`` (else the config's index)."""
        from kotae.indexing.store import damaged_store_message

        instance = (
            self.pipeline.get_component(component) if component and component in self.components else None
        )
        store = getattr(instance, "document_store", None)
        folder = getattr(store, "path", None) or (self.config.index_dir if self.config else Path("."))
        return damaged_store_message(folder, error)

    def ask(
        self, question: str, top_k: int | None = None, filters: dict[str, Any] | None = None
    ) -> list[ExtractedAnswer]:
        """The reader's answers to ``question``, best first (at most ``top_k``, plus a no-answer if enabled)."""
        answers: list[ExtractedAnswer] = self.run(question, top_k, filters)[self.answers_from]["answers"]
        return answers
