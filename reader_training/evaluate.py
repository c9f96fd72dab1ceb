"""Run a reader over SQuAD-format questions and score it: the shell behind ``kotae evaluate``.

Windows are batched by length (long ones together, so padding stays small), run without
gradients, decoded by :mod:`kotae.reader_training.decode` and scored by :mod:`kotae.reader_training.metrics`
— the same code the training loop uses for its dev scores.

Example::

    report = evaluate_folder("runs/jaquad-small", "../shared/data/jaquad/dev", limit=200)
    print(report.scores["f1"], report.examples_per_second)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kotae.errors import KotaeError
from kotae.reader_training.data import LoadReport, QAExample, load_examples
from kotae.reader_training.decode import EdgeRefine, WindowLogits, choose_answer, decode
from kotae.reader_training.edges import edge_refiner_from_folder
from kotae.reader_training.features import prepare_eval_features, require_fast_tokenizer
from kotae.reader_training.metrics import LanguageChoice, evaluate_predictions
from kotae.reader_training.runtime import ReaderRuntime, TorchRuntime, open_runtime, window_logits

__all__ = [
    "DecodeSettings",
    "EvalReport",
    "LoadedReader",
    "Prediction",
    "evaluate_examples",
    "evaluate_folder",
    "load_reader",
    "load_runtime",
    "open_reader",
    "predict",
    "resolve_reference",
    "saved_settings",
    "window_logits",
]

READER_SETTINGS = "reader_config.json"
"""Written next to a trained model: the windowing and decoding it was trained and measured with."""


@dataclass(frozen=True)
class DecodeSettings:
    """How questions are windowed and answers decoded."""

    max_length: int = 384
    stride: int = 128
    max_question_length: int = 64
    max_answer_length: int = 30
    n_best: int = 20
    null_score_threshold: float = 0.0
    batch_size: int = 32

    @classmethod
    def from_train_config(cls, config: Mapping[str, Any], batch_size: int | None = None) -> DecodeSettings:
        """The settings a training config names (its keys; ``eval_batch_size`` unless ``batch_size`` is given).

        Used by ``kotae train`` and by the device run and its unpacking, which hold the config as a
        plain mapping: one place that knows which config keys decide the decoding.
        """
        return cls(
            max_length=config["max_length"],
            stride=config["stride"],
            max_question_length=config["max_question_length"],
            max_answer_length=config["max_answer_length"],
            n_best=config["n_best"],
            null_score_threshold=config["null_score_threshold"],
            batch_size=int(config["eval_batch_size"]) if batch_size is None else batch_size,
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Prediction:
    """The chosen answer for one question (``text == ""`` and ``start == -1`` for no answer)."""

    id: str
    text: str
    start: int
    end: int
    score: float
    null_score: float | None


@dataclass
class EvalReport:
    scores: dict[str, float | int]
    predictions: list[Prediction]
    seconds: float
    load_report: LoadReport | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    runtime: str = "torch"  # which runtime answered (kotae.reader_training.runtime)

    @property
    def examples_per_second(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The JSON object ``kotae evaluate --json`` prints."""
        result: dict[str, Any] = {
            "exact_match": round(float(self.scores["exact_match"]), 2),
            "f1": round(float(self.scores["f1"]), 2),
            "n": int(self.scores["n"]),
            "examples_per_second": round(self.examples_per_second, 2),
            "runtime": self.runtime,
        }
        for key, value in self.scores.items():
            if key.startswith(("has_ans_", "no_ans_", "n_")):
                result[key] = round(float(value), 2) if isinstance(value, float) else value
        return result


def predict(
    model: Any | ReaderRuntime,
    tokenizer: Any,
    examples: Sequence[QAExample],
    settings: DecodeSettings,
    allow_null: bool = False,
    progress: bool = False,
    refine: EdgeRefine | None = None,
) -> list[Prediction]:
    """The best answer for every example (or no answer, when ``allow_null`` and the null score wins);
    ``model`` is a torch model or a :class:`~kotae.reader_training.runtime.ReaderRuntime`; ``refine``
    moves span edges inside edge tokens (:mod:`kotae.reader_training.edges`)."""
    runtime = model if isinstance(model, ReaderRuntime) else TorchRuntime(model, tokenizer)
    windows = prepare_eval_features(
        tokenizer, examples, settings.max_length, settings.stride, settings.max_question_length
    )
    logits = runtime.window_logits(windows, settings.batch_size, progress)
    per_example: list[list[WindowLogits]] = [[] for _ in examples]
    for window, (start, end) in zip(windows, logits, strict=True):
        per_example[window.example_index].append(
            WindowLogits(start, end, window.offsets, window.cls_index, context_index=0)
        )
    predictions: list[Prediction] = []
    for example, example_windows in zip(examples, per_example, strict=True):
        decoded = decode(
            example_windows, [example.context], settings.n_best, settings.max_answer_length, refine=refine
        )
        best = choose_answer(decoded, allow_null, settings.null_score_threshold)
        if best is None:
            predictions.append(Prediction(example.id, "", -1, -1, 0.0, decoded.null_score))
        else:
            predictions.append(
                Prediction(example.id, best.text, best.start, best.end, best.score, decoded.null_score)
            )
    return predictions


def evaluate_examples(
    model: Any | ReaderRuntime,
    tokenizer: Any,
    examples: Sequence[QAExample],
    settings: DecodeSettings,
    language: LanguageChoice = "auto",
    allow_null: bool | None = None,
    progress: bool = False,
    refine: EdgeRefine | None = None,
) -> EvalReport:
    """Predict and score; ``allow_null`` defaults to whether the set has unanswerable questions."""
    version_2 = any(not e.answers for e in examples)
    allow = version_2 if allow_null is None else allow_null
    runtime = model if isinstance(model, ReaderRuntime) else TorchRuntime(model, tokenizer)
    started = time.perf_counter()
    predictions = predict(runtime, tokenizer, examples, settings, allow, progress, refine)
    seconds = time.perf_counter() - started
    scores = evaluate_predictions(
        {p.id: p.text for p in predictions},
        {e.id: e.answer_texts for e in examples},
        language,
        texts={e.id: e.question for e in examples},
        version_2=version_2,
    )
    return EvalReport(scores, predictions, seconds, settings=settings.as_dict(), runtime=runtime.name)


def load_reader(model_ref: str) -> tuple[Any, Any, Path]:
    """Model, fast tokenizer and folder for a reader reference (alias, folder or hub id)."""
    folder = resolve_reference(model_ref)
    tokenizer = load_tokenizer(folder, model_ref)
    return load_model(folder), tokenizer, folder


def load_runtime(
    model_ref: str,
    runtime: str = "torch",
    device: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[ReaderRuntime, Any, Path]:
    """A reader runtime (:data:`kotae.reader_training.runtime.RUNTIMES`), fast tokenizer and folder for
    a reader reference; the torch model is loaded only where the runtime needs it."""
    folder = resolve_reference(model_ref)
    tokenizer = load_tokenizer(folder, model_ref)
    return (
        open_runtime(runtime, folder, tokenizer, lambda: load_model(folder), device, log),
        tokenizer,
        folder,
    )


def load_tokenizer(folder: Path, model_ref: str) -> Any:
    """The reader folder's fast tokenizer (no code from the folder)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as error:
        raise KotaeError(f"cannot load a tokenizer from {folder} ({error})".splitlines()[0]) from None
    require_fast_tokenizer(tokenizer, model_ref)
    return tokenizer


def load_model(folder: Path) -> Any:
    """The reader folder's question-answering torch model (weights only from safetensors, never a
    pickle, and no code from the folder)."""
    from transformers import AutoModelForQuestionAnswering

    try:
        return AutoModelForQuestionAnswering.from_pretrained(
            folder, use_safetensors=True, trust_remote_code=False
        )
    except Exception as error:
        raise KotaeError(
            f"cannot load a question-answering model from {folder} ({error})".splitlines()[0]
        ) from None


def resolve_reference(model_ref: str) -> Path:
    """A local folder for a model reference; local directories need no model registry."""
    path = Path(model_ref).expanduser()
    if path.is_dir():
        return path
    from kotae.models import resolve_model

    return resolve_model(model_ref)


def saved_settings(folder: Path) -> dict[str, Any]:
    """The windowing/decoding settings a trained reader was saved with (empty when none)."""
    path = folder / READER_SETTINGS
    if not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    known = DecodeSettings.__dataclass_fields__
    return {k: v for k, v in loaded.items() if k in known}


@dataclass(frozen=True)
class LoadedReader:
    """A trained reader ready to read, everything taken from its one folder (:func:`open_reader`): the
    runtime, the fast tokenizer, the windowing/decoding settings and the span-edge refiner. Reading
    through it, no caller can decode with the folder's model but forget its ``span_edges.json``."""

    runtime: ReaderRuntime
    tokenizer: Any
    settings: DecodeSettings
    refine: EdgeRefine | None
    folder: Path

    def predict(
        self, examples: Sequence[QAExample], allow_null: bool = False, progress: bool = False
    ) -> list[Prediction]:
        """:func:`predict` with this reader's runtime, settings and span edges."""
        return predict(
            self.runtime, self.tokenizer, examples, self.settings, allow_null, progress, self.refine
        )

    def evaluate(
        self,
        examples: Sequence[QAExample],
        language: LanguageChoice = "auto",
        allow_null: bool | None = None,
        progress: bool = False,
    ) -> EvalReport:
        """:func:`evaluate_examples` with this reader's runtime, settings and span edges."""
        return evaluate_examples(
            self.runtime,
            self.tokenizer,
            examples,
            self.settings,
            language,
            allow_null,
            progress,
            self.refine,
        )


def open_reader(
    model_ref: str,
    runtime: str = "torch",
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> LoadedReader:
    """A reader reference (alias, folder or hub id) loaded to read: its runtime (:func:`load_runtime`),
    the settings it was saved with (:func:`saved_settings`) with the non-``None`` ``overrides`` on
    top, and the span-edge refiner of its folder (none when the folder has no table)."""
    model, tokenizer, folder = load_runtime(model_ref, runtime, device, log)
    values = saved_settings(folder)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return LoadedReader(model, tokenizer, DecodeSettings(**values), edge_refiner_from_folder(folder), folder)


def evaluate_folder(
    model_ref: str,
    data: str,
    language: LanguageChoice = "auto",
    limit: int | None = None,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    progress: bool = False,
    runtime: str = "torch",
    log: Callable[[str], None] = lambda message: None,
) -> EvalReport:
    """Load a reader and a data set and score one against the other (``kotae evaluate``); ``runtime``
    picks how the model runs (:data:`kotae.reader_training.runtime.RUNTIMES`)."""
    loaded = load_examples(data, max_examples=limit)  # data errors first: they are cheap to find
    reader = open_reader(model_ref, runtime, device, overrides, log)
    report = reader.evaluate(loaded.examples, language, progress=progress)
    report.load_report = loaded.report
    return report
