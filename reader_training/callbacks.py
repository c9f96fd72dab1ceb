"""What ``kotae train`` does at transformers' ``Trainer`` events, beside training itself.

Each class here is one ``TrainerCallback`` with one job: write the Trainer's logs to
``train_log.jsonl`` (:class:`TrainLogWriter`), run the quick dev check every N steps
(:class:`DevCheckEvery`, scoring with :class:`DevCheck`), keep a snapshot of the trained tensors every
N steps (:class:`SnapshotEvery`), time the steps this process ran (:class:`StepClock`) and, when
stderr is a log file rather than a terminal, print a progress line at a steady interval
(:class:`ProgressLog`). :func:`kotae.reader_training.train.run_training` wires them up.

This module imports transformers at import time; import it only where training runs.

Example::

    check = DevCheck(dev_sets, tokenizer, settings, "auto", refine, train_log, print)
    trainer = Trainer(..., callbacks=[TrainLogWriter(train_log), DevCheckEvery(check, 250)])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from kotae.progress import ProgressLines, stderr_is_terminal
from kotae.reader_training.data import LoadResult
from kotae.reader_training.edges import EdgeRefiner
from kotae.reader_training.evaluate import DecodeSettings, evaluate_examples
from kotae.reader_training.metrics import LanguageChoice
from kotae.reader_training.report import TrainLog
from kotae.reader_training.snapshots import save_snapshot, snapshot_path

Log = Callable[[str], None]


class DevCheck:
    """Scores a model on the dev sets with the evaluation code (:func:`evaluate_examples`, span
    edges included), writes each set's scores to the train log and logs a line per set. ``seconds``
    adds up the time spent here, so that training speed can leave it out."""

    def __init__(
        self,
        dev_sets: Mapping[str, LoadResult],
        tokenizer: Any,
        settings: DecodeSettings,
        language: LanguageChoice,
        refine: EdgeRefiner,
        train_log: TrainLog,
        log: Log,
    ) -> None:
        self.dev_sets = dev_sets
        self.tokenizer = tokenizer
        self.settings = settings
        self.language = language
        self.refine = refine
        self.train_log = train_log
        self.log = log
        self.seconds = 0.0

    def __call__(self, model: Any, step: int) -> dict[str, dict[str, Any]]:
        began = time.perf_counter()
        results: dict[str, dict[str, Any]] = {}
        for name, loaded in self.dev_sets.items():
            report = evaluate_examples(
                model, self.tokenizer, loaded.examples, self.settings, self.language, refine=self.refine
            )
            scores = report.summary()
            results[name] = scores
            self.train_log.write({"step": step, "dev": name, **scores})
            self.log(
                f"step {step} dev {name}: EM {scores['exact_match']:.2f} F1 {scores['f1']:.2f} (n={scores['n']})"
            )
        self.seconds += time.perf_counter() - began
        return results


def _due(step: int, every: int | None) -> bool:
    """Whether ``step`` is a multiple of ``every`` (never when ``every`` is 0 or None)."""
    return bool(every) and step % (every or 1) == 0


class TrainLogWriter(TrainerCallback):  # type: ignore[misc]
    """Every log of the Trainer (loss, learning rate, epoch, ...) as one line of the train log."""

    def __init__(self, train_log: TrainLog) -> None:
        self.train_log = train_log

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if logs:
            record = {"step": state.global_step, "epoch": state.epoch}
            record.update({k: v for k, v in logs.items() if isinstance(v, int | float | str)})
            self.train_log.write(record)


class DevCheckEvery(TrainerCallback):  # type: ignore[misc]
    """The dev check every ``steps`` steps (none when 0 or None), except at the last step: the run
    scores its final model after training."""

    def __init__(self, check: DevCheck, steps: int | None) -> None:
        self.check = check
        self.steps = steps

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if _due(state.global_step, self.steps) and model is not None and state.global_step < state.max_steps:
            self.check(model, state.global_step)


class SnapshotEvery(TrainerCallback):  # type: ignore[misc]
    """The trained tensors every ``steps`` steps in ``output/snapshots/`` (none when 0 or None)."""

    def __init__(self, output: Path, steps: int | None) -> None:
        self.output = output
        self.steps = steps

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if _due(state.global_step, self.steps) and model is not None:
            save_snapshot(model, snapshot_path(self.output, state.global_step))


class StepClock(TrainerCallback):  # type: ignore[misc]
    """When this process's training began and ended, and its first and last step (a resumed run
    starts past step 0), for sequences/s."""

    def __init__(self) -> None:
        self.first_step = 0
        self.last_step = 0
        self.began = 0.0
        self.ended = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.began = time.perf_counter()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not self.first_step:
            self.first_step = state.global_step or -1

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.ended = time.perf_counter()
        self.last_step = state.global_step

    def steps_run(self) -> int:
        return self.last_step - max(self.first_step, 0)


class ProgressLog(TrainerCallback):  # type: ignore[misc]
    """Where the Trainer's bar is off (stderr is a log file): a progress line with the latest loss at
    a steady interval (:class:`kotae.progress.ProgressLines`); nothing when ``enabled`` is false."""

    def __init__(self, log: Log, enabled: bool) -> None:
        self.log = log
        self.enabled = enabled
        self.lines: ProgressLines | None = None
        self.loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.enabled and not stderr_is_terminal():
            self.lines = ProgressLines("training steps", state.max_steps, initial=state.global_step)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        self.loss = (logs or {}).get("loss", self.loss)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        note = f"loss {self.loss:.4f}" if self.loss is not None else ""
        line = self.lines.advance(1, note) if self.lines is not None else None
        if line is not None:
            self.log(line)
