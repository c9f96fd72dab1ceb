"""kotae's reader training: turn any encoder with a fast tokenizer into an extractive QA reader and
measure it honestly.

For: ``kotae train`` and ``kotae evaluate``, and the windowing and decoder the pipeline's reader
reuses. It knows nothing of indexes or pipelines; it uses only the core (:mod:`kotae.models`,
:mod:`kotae.weight_files`, errors).

One file per concern:

- :mod:`kotae.reader_training.data` — load SQuAD v1.1/v2.0 JSON, shard directories (JaQuAD), JSONL or a
  Hugging Face dataset; validate every answer offset (repair or drop, with counts).
- :mod:`kotae.reader_training.features` — question + context to overlapping windows with character
  offsets; answer characters to start/end token labels (CLS when the window lacks the answer).
- :mod:`kotae.reader_training.decode` — start/end logits to ranked answer spans (the one decoder, shared
  with the pipeline's reader).
- :mod:`kotae.reader_training.edges` — where Japanese answer edges may move inside edge tokens,
  learnt from the training labels; the decoder refines spans with it.
- :mod:`kotae.reader_training.metrics` — official SQuAD EM/F1 and Japanese character-level EM/F1.
- :mod:`kotae.reader_training.config` — the validated training YAML (``configs/train/*.yaml``).
- :mod:`kotae.reader_training.train` / :mod:`kotae.reader_training.evaluate` / :mod:`kotae.reader_training.cli` — the
  shells behind ``kotae train`` and ``kotae evaluate``; :mod:`kotae.reader_training.report` writes the
  model card, metrics, log and curves.
- :mod:`kotae.reader_training.snapshots` — a long run's kept tensors, and readers made from one
  snapshot or the mean of several; :mod:`kotae.reader_training.run_status` — where a run stands
  and its learning curve, read from its files while it trains.
- :mod:`kotae.reader_training.export` — a trained reader as the fp16 delta kotae ships.
- :mod:`kotae.reader_training.device` — training on a lent GPU machine (see ``device/DEVICE.md``).
- :mod:`kotae.reader_training.testing` — a tiny tokenizer and BERT for tests.

    kotae train --config configs/train/jaquad-small.yaml [--set key=value ...] [--resume]
    kotae evaluate --model runs/reader-jaquad-small --data ../shared/data/jaquad/dev [--json]

Public names (imported on first use): see ``__all__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kotae.lazy import lazy_exports

if TYPE_CHECKING:
    from kotae.reader_training.config import TrainConfig, load_train_config
    from kotae.reader_training.data import QAExample, load_examples
    from kotae.reader_training.decode import Span, choose_answer
    from kotae.reader_training.evaluate import evaluate_folder
    from kotae.reader_training.metrics import evaluate_predictions
    from kotae.reader_training.train import run_training

_EXPORTS = {
    "QAExample": "kotae.reader_training.data",
    "Span": "kotae.reader_training.decode",
    "TrainConfig": "kotae.reader_training.config",
    "choose_answer": "kotae.reader_training.decode",
    "evaluate_folder": "kotae.reader_training.evaluate",
    "evaluate_predictions": "kotae.reader_training.metrics",
    "load_examples": "kotae.reader_training.data",
    "load_train_config": "kotae.reader_training.config",
    "run_training": "kotae.reader_training.train",
}
__all__ = [
    "QAExample",
    "Span",
    "TrainConfig",
    "choose_answer",
    "evaluate_folder",
    "evaluate_predictions",
    "load_examples",
    "load_train_config",
    "run_training",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
