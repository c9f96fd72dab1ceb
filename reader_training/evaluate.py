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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kotae.errors import KotaeError
from kotae.reader_training.data import LoadReport, QAExample, load_examples
from kotae.reader_training.decode import EdgeRefine, WindowLogits, choose_answer, decode
from kotae.reader_training.edges import edge_refiner_from_folder
from kotae.reader_training.features import Window, prepare_eval_features, require_fast_tokenizer
from kotae.reader_training.metrics import LanguageChoice, evaluate_predictions

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
        }
        for key, value in self.scores.items():
            if key.startswith(("has_ans_", "no_ans_", "n_")):
                result[key] = round(float(value), 2) if isinstance(value, float) else value
        return result


def window_logits(
    model: Any,
    tokenizer: Any,
    windows: Sequence[Window],
    batch_size: int,
    progress: bool = False,
    pad_to: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Start/end logits for every window (trimmed to its length), in the order given; ``progress``
    shows a bar on a terminal. Each batch is padded to its longest window, or to ``pad_to`` tokens
    when given (a window's logits depend on its padded length, not on the other windows in its batch)."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    results: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0), np.empty(0))] * len(windows)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            starts_at = range(0, len(order), batch_size)
            for first in tqdm(starts_at, desc="reading", unit="batch", disable=None if progress else True):
                batch_ids = order[first : first + batch_size]
                batch = tokenizer.pad(
                    [windows[i].model_inputs() for i in batch_ids],
                    padding="max_length" if pad_to else True,
                    max_length=pad_to,
                    return_tensors="pt",
                )
                batch = {k: v.to(device) for k, v in batch.items()}
                output = model(**batch)
                starts = output.start_logits.float().cpu().numpy()
                ends = output.end_logits.float().cpu().numpy()
                left = getattr(tokenizer, "padding_side", "right") == "left"
                for row, index in enumerate(batch_ids):
                    length = len(windows[index].input_ids)
                    cut = slice(starts.shape[1] - length, None) if left else slice(0, length)
                    results[index] = (starts[row, cut], ends[row, cut])
    finally:
        if was_training:
            model.train()
    return results


def predict(
    model: Any,
    tokenizer: Any,
    examples: Sequence[QAExample],
    settings: DecodeSettings,
    allow_null: bool = False,
    progress: bool = False,
    refine: EdgeRefine | None = None,
) -> list[Prediction]:
    """The best answer for every example (or no answer, when ``allow_null`` and the null score wins);
    ``refine`` moves span edges inside edge tokens (:mod:`kotae.reader_training.edges`)."""
    windows = prepare_eval_features(
        tokenizer, examples, settings.max_length, settings.stride, settings.max_question_length
    )
    logits = window_logits(model, tokenizer, windows, settings.batch_size, progress)
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
    model: Any,
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
    started = time.perf_counter()
    predictions = predict(model, tokenizer, examples, settings, allow, progress, refine)
    seconds = time.perf_counter() - started
    scores = evaluate_predictions(
        {p.id: p.text for p in predictions},
        {e.id: e.answer_texts for e in examples},
        language,
        texts={e.id: e.question for e in examples},
        version_2=version_2,
    )
    return EvalReport(scores, predictions, seconds, settings=settings.as_dict())


def load_reader(model_ref: str) -> tuple[Any, Any, Path]:
    """Model, fast tokenizer and folder for a reader reference (alias, folder or hub id)."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    folder = resolve_reference(model_ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as error:
        raise KotaeError(f"cannot load a tokenizer from {folder} ({error})".splitlines()[0]) from None
    require_fast_tokenizer(tokenizer, model_ref)
    try:  # weights only from safetensors (never a pickle), and no code from the model folder
        model = AutoModelForQuestionAnswering.from_pretrained(
            folder, use_safetensors=True, trust_remote_code=False
        )
    except Exception as error:
        raise KotaeError(
            f"cannot load a question-answering model from {folder} ({error})".splitlines()[0]
        ) from None
    return model, tokenizer, folder


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


def evaluate_folder(
    model_ref: str,
    data: str,
    language: LanguageChoice = "auto",
    limit: int | None = None,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    progress: bool = False,
) -> EvalReport:
    """Load a reader and a data set and score one against the other (``kotae evaluate``)."""
    loaded = load_examples(data, max_examples=limit)  # data errors first: they are cheap to find
    model, tokenizer, folder = load_reader(model_ref)
    if device is not None:
        model.to(device)
    else:
        import torch

        if torch.cuda.is_available():
            model.to("cuda")
    values = saved_settings(folder)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    settings = DecodeSettings(**values)
    refine = edge_refiner_from_folder(folder)
    report = evaluate_examples(
        model, tokenizer, loaded.examples, settings, language, progress=progress, refine=refine
    )
    report.load_report = loaded.report
    return report
