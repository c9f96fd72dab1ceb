"""Questions that arrive together, answered together: the micro-batcher behind ``kotae serve``.

One worker thread owns the pipeline. A request hands its question to :meth:`QuestionBatcher.ask`
and awaits the answer, so the server's event loop never waits on a model and keeps answering the
page, ``/health`` and static files while questions are read. The worker takes the first waiting
question, then collects more for up to ``max_wait_ms`` or until ``max_batch`` are waiting, and
answers them with one :meth:`~kotae.pipeline.qa.QuestionAnswerer.run_many`: retrieval per question,
then the reader over all their passages in one batch. Each caller gets its own result or error,
the same as :meth:`~kotae.pipeline.qa.QuestionAnswerer.run` gives for that question alone.

Example::

    batcher = QuestionBatcher(qa, BatchSettings(max_batch=8, max_wait_ms=5))
    result = await batcher.ask(Question("富士山の高さは？", top_k=3))
    batcher.close()
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from kotae.pipeline.qa import Question, QuestionAnswerer


@dataclass(frozen=True)
class BatchSettings:
    """How long the worker waits for company, and how many questions it reads at once."""

    max_batch: int = 8
    max_wait_ms: float = 5.0

    def __post_init__(self) -> None:
        if self.max_batch <= 0:
            raise ValueError(f"max_batch must be greater than 0, but got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, but got {self.max_wait_ms}")


Waiting = tuple[Question, "Future[dict[str, Any]]"]
_STOP = None


def collect(waiting: queue.Queue[Waiting | None], first: Waiting, settings: BatchSettings) -> list[Waiting]:
    """``first`` and whatever else arrives within ``max_wait_ms`` of it, at most ``max_batch`` in all.

    A stop marker met while collecting is put back, for the worker loop to see next.
    """
    batch = [first]
    deadline = time.monotonic() + settings.max_wait_ms / 1000
    while len(batch) < settings.max_batch:
        try:
            item = (
                waiting.get(timeout=max(deadline - time.monotonic(), 0))
                if settings.max_wait_ms
                else waiting.get_nowait()
            )
        except queue.Empty:
            break
        if item is _STOP:
            waiting.put(item)
            break
        batch.append(item)
    return batch


class QuestionBatcher:
    """A worker thread answering queued questions in batches over one :class:`QuestionAnswerer`."""

    def __init__(self, qa: QuestionAnswerer, settings: BatchSettings | None = None) -> None:
        self.qa = qa
        self.settings = settings or BatchSettings()
        self.batches = 0
        self.answered = 0
        self._waiting: queue.Queue[Waiting | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._starting = threading.Lock()

    def submit(self, question: Question) -> Future[dict[str, Any]]:
        """Queue ``question`` (starting the worker if it is not running); the future holds its
        ``run`` result or raises its error."""
        with self._starting:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="kotae-batcher", daemon=True)
                self._worker.start()
        future: Future[dict[str, Any]] = Future()
        self._waiting.put((question, future))
        return future

    async def ask(self, question: Question) -> dict[str, Any]:
        """:meth:`submit`, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(question))

    def close(self, timeout: float = 30.0) -> None:
        """Answer what is queued, then stop the worker (a later question starts a new one)."""
        with self._starting:
            worker, self._worker = self._worker, None
            if worker is not None:
                self._waiting.put(_STOP)
                worker.join(timeout)

    def _serve(self) -> None:
        while (first := self._waiting.get()) is not None:
            batch = collect(self._waiting, first, self.settings)
            self._answer(batch)

    def _answer(self, batch: list[Waiting]) -> None:
        live = [(question, future) for question, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            outcomes = self.qa.run_many([question for question, _ in live])
        except BaseException as error:  # the lock or the pipeline itself broke: every caller hears of it
            outcomes = [error] * len(live)
        self.batches += 1
        self.answered += len(live)
        for (_, future), outcome in zip(live, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
