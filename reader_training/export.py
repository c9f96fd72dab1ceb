"""Ship a trained reader as the weights training changed: fp16 shards beside ``delta.json``.

The inverse of :func:`kotae.reader_weights.materialise`, which ``kotae models prepare`` runs to put
the base model's word embeddings back. Usage::

    python -m kotae.reader_training.export runs/reader-default kotae/weights/reader-e5-small-ja-en
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from kotae.errors import KotaeError
from kotae.models import resolve_model
from kotae.reader_training.report import CARD_FILE
from kotae.reader_weights import CARRIED_FILES, DELTA_FILE, SHIPPED_CARD, base_source, base_word_embeddings
from kotae.weight_files import HF_WORD_EMBEDDINGS, sha256, shard

__all__ = ["export_delta"]


def export_delta(model_dir: str | Path, out_dir: str | Path, base: str = "multilingual-e5-small") -> Path:
    """Write a trained reader's changed tensors (fp16 shards) and its small files to ``out_dir``.

    Refuses a model whose word embeddings differ from the base's: they would be lost at prepare time.
    """
    from safetensors.numpy import load_file, save_file

    model = Path(model_dir)
    out = Path(out_dir)
    base_folder = resolve_model(base)
    state = load_file(str(model / "model.safetensors"))
    word = state.pop(HF_WORD_EMBEDDINGS, None)
    if word is None:
        raise KotaeError(f"{model}: no {HF_WORD_EMBEDDINGS}; is this a BERT question-answering model?")
    if not np.array_equal(word, base_word_embeddings(base_folder)):
        raise KotaeError(f"{model}: word embeddings differ from {base}'s; train with freeze_word_embeddings")
    half = {}
    for name, value in state.items():
        converted = value.astype(np.float16)
        if not np.isfinite(converted).all():
            raise KotaeError(f"{model}: tensor {name} does not fit fp16")
        half[name] = converted
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    files = []
    for number, group in enumerate(shard(half), start=1):
        name = f"weights-{number}.safetensors"
        save_file(group, str(out / name), metadata={"format": "pt"})
        files.append({"file": name, "sha256": sha256(out / name), "tensors": len(group)})
    for name in CARRIED_FILES:
        if (model / name).is_file():
            shutil.copy2(model / name, out / name)
    if (model / CARD_FILE).is_file() and not (model / SHIPPED_CARD).is_file():
        shutil.copy2(model / CARD_FILE, out / SHIPPED_CARD)  # a run's README.md ships as model_card.md
    delta = {"base": base, "base_source": base_source(base_folder), "dtype": "float16", "files": files}
    (out / DELTA_FILE).write_text(json.dumps(delta, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m kotae.reader_training.export MODEL_DIR OUT_DIR``: write a trained reader's shippable delta."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m kotae.reader_training.export",
        description="Write a reader's trained tensors (all but the frozen word embeddings) as fp16 "
        "shards plus its small files, for shipping; kotae models prepare completes it from the base.",
    )
    parser.add_argument("model_dir", help="a reader trained with freeze_word_embeddings: true")
    parser.add_argument("out_dir", help="e.g. kotae/weights/reader-e5-small-ja-en (replaced)")
    parser.add_argument("--base", default="multilingual-e5-small", help="the base it was trained from")
    args = parser.parse_args(argv)
    try:
        out = export_delta(args.model_dir, args.out_dir, args.base)
    except KotaeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.glob("weights-*.safetensors"))
    print(f"{out}: {size / 1e6:.1f} MB of fp16 weights")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
