"""kotae's reader training: turn any encoder with a fast tokenizer into an extractive QA reader and
measure it honestly.

One file per concern:

- :mod:`kotae.reader_training.data` — load SQuAD v1.1/v2.0 JSON, shard directories (JaQuAD), JSONL or a
  Hugging Face dataset; validate every answer offset (repair or drop, with counts).
- :mod:`kotae.reader_training.features` — question + context to overlapping windows with character
  offsets; answer characters to start/end token labels (CLS when the window lacks the answer).
- :mod:`kotae.reader_training.decode` — start/end logits to ranked answer spans (the one decoder, shared
  with the pipeline's reader).
- :mod:`kotae.reader_training.metrics` — official SQuAD EM/F1 and Japanese character-level EM/F1.
- :mod:`kotae.reader_training.config` — the validated training YAML (``configs/train/*.yaml``).
- :mod:`kotae.reader_training.train` / :mod:`kotae.reader_training.evaluate` / :mod:`kotae.reader_training.cli` — the
  shells behind ``kotae train`` and ``kotae evaluate``; :mod:`kotae.reader_training.report` writes the
  model card, metrics, log and curves.
- :mod:`kotae.reader_training.testing` — a tiny tokenizer and BERT for tests.

    kotae train --config configs/train/jaquad-small.yaml [--set key=value ...] [--resume]
    kotae evaluate --model runs/reader-jaquad-small --data ../shared/data/jaquad/dev [--json]
"""
