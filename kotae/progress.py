"""Progress that reads the same on a terminal and in a log file, and no third-party bars.

On a terminal (stderr is a TTY) long jobs show a transient rich bar. Anywhere else (a log file, a
pipe, CI) they print plain lines at a steady interval, :data:`INTERVAL_SECONDS` apart (the
``KOTAE_PROGRESS_SECONDS`` environment variable changes it; ``0`` prints every step), plus one at
the end: no ``\\r``, no escape codes::

    embedding documents: 120/500 (24%), 1,310 passages, 10s elapsed, about 32s left

:func:`quiet_third_party` turns off what transformers, huggingface_hub and datasets would print
themselves (``Loading weights`` bars, the bold ``LOAD REPORT`` table, download bars).

Example::

    with progress("reading batches", total=len(batches)) as advance:
        for batch in batches:
            ...
            advance(1)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

INTERVAL_SECONDS = 10.0
"""Seconds between two progress lines in a log (``KOTAE_PROGRESS_SECONDS`` overrides)."""


def interval_seconds() -> float:
    """The configured interval: ``KOTAE_PROGRESS_SECONDS`` when it is a number >= 0, else 10 s."""
    try:
        return max(0.0, float(os.environ.get("KOTAE_PROGRESS_SECONDS", INTERVAL_SECONDS)))
    except ValueError:
        return INTERVAL_SECONDS


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(
    label: str, done: int, total: int | None, elapsed: float, note: str = "", initial: int = 0
) -> str:
    """One plain progress line: count, share, ``note``, time so far and an estimate of the rest at
    the pace since ``initial`` (where a resumed job started counting).

    >>> progress_line("reading", 25, 100, 10.0, "batch 25")
    'reading: 25/100 (25%), batch 25, 10s elapsed, about 30s left'
    >>> progress_line("asking", 3, None, 61.0)
    'asking: 3, 1m01s elapsed'
    """
    parts = [f"{label}: {done:,}" + (f"/{total:,} ({100 * done / total:.0f}%)" if total else "")]
    if note:
        parts.append(note)
    parts.append(f"{_duration(elapsed)} elapsed")
    if total and initial < done < total:
        parts.append(f"about {_duration(elapsed * (total - done) / (done - initial))} left")
    return ", ".join(parts)


class ProgressLines:
    """Decides when a log gets its next line: every ``interval`` seconds and at the end (pure but
    for the injected ``clock``)."""

    def __init__(
        self,
        label: str,
        total: int | None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        initial: int = 0,
    ) -> None:
        self.label = label
        self.total = total
        self.interval = interval_seconds() if interval is None else interval
        self.clock = clock
        self.started = clock()
        self.last = self.started
        self.initial = self.done = initial

    def advance(self, count: int = 1, note: str = "") -> str | None:
        """Count ``count`` more; the line to print now, or None until the interval has passed."""
        self.done += count
        now = self.clock()
        finished = self.total is not None and self.done >= self.total
        if not finished and now - self.last < self.interval:
            return None
        self.last = now
        return progress_line(self.label, self.done, self.total, now - self.started, note, self.initial)


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (bars) rather than a file or pipe (lines)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


@contextmanager
def progress(
    label: str, total: int | None, enabled: bool = True, console: Any = None
) -> Iterator[Callable[..., None]]:
    """``advance(count=1, note="")`` for a job of ``total`` steps: a transient bar on a terminal
    (or on the rich ``console`` given), lines on stderr at a steady interval elsewhere, nothing
    when not ``enabled``."""
    if not enabled:
        yield lambda count=1, note="": None
        return
    if console is not None or stderr_is_terminal():
        with _bar(label, total, console) as advance:
            yield advance
        return
    lines = ProgressLines(label, total)

    def write(count: int = 1, note: str = "") -> None:
        line = lines.advance(count, note)
        if line is not None:
            print(line, file=sys.stderr, flush=True)

    yield write


@contextmanager
def _bar(label: str, total: int | None, console: Any) -> Iterator[Callable[..., None]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total, note="")

        def advance(count: int = 1, note: str = "") -> None:
            bar.update(task, advance=count, note=note)

        yield advance


def quiet_third_party() -> None:
    """No progress bars, bold tables or advisory warnings from transformers, huggingface_hub and
    datasets on stderr: kotae reports progress and loading itself. Call before loading a model."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
