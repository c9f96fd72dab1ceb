"""Readers shipped as the weights training changed, completed at prepare time from the base model.

A reader fine-tuned from ``multilingual-e5-small`` with frozen word embeddings differs from its base
in every tensor but the 250k x 384 word-embedding matrix, which is 80 % of the model. kotae ships
only the other tensors, in fp16, beside a ``delta.json`` that names the base and its source file;
``kotae models prepare`` puts the base's embedding matrix back and writes a complete, standard
``BertForQuestionAnswering`` folder (float32 safetensors, the base's tokenizer, ``reader_config.json``,
``model_card.md``) that kotae's reader, ``kotae evaluate`` and Haystack's
``TransformersExtractiveReader`` all load.

>>> from kotae.reader_weights import export_delta
>>> export_delta("runs/reader-default", "kotae/weights/reader-e5-small-ja-en")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kotae.errors import KotaeError
from reader_training.device_bundle import HF_WORD_EMBEDDINGS, MAX_FILE_BYTES, sha256

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DELTA_FILE = "delta.json"
BASE_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SPAN_EDGES_FILE = "span_edges.json"  # reader_training.edges: where edges may move inside edge tokens
CARRIED_FILES = ("config.json", "reader_config.json", SPAN_EDGES_FILE, "model_card.md")


def _base_source(base_folder: Path) -> str | None:
    stamp = base_folder / "kotae-prepared.json"
    return json.loads(stamp.read_text())["source"] if stamp.is_file() else None


def base_word_embeddings(base_folder: Path) -> np.ndarray:
    """The word-embedding matrix of a prepared base (BertModel) or reader folder, as float32."""
    from safetensors import safe_open

    with safe_open(str(base_folder / "model.safetensors"), framework="numpy") as handle:
        keys = set(handle.keys())
        for key in (BASE_WORD_EMBEDDINGS, HF_WORD_EMBEDDINGS):
            if key in keys:
                return np.asarray(handle.get_tensor(key), dtype=np.float32)
    raise KotaeError(f"{base_folder / 'model.safetensors'} has no word-embedding matrix")


def shard(tensors: Mapping[str, np.ndarray], limit: int = MAX_FILE_BYTES) -> list[dict[str, np.ndarray]]:
    """Tensors split, in order, into groups of at most ``limit`` bytes (a bigger tensor alone)."""
    groups: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, value in tensors.items():
        if groups[-1] and size + value.nbytes > limit:
            groups.append({})
            size = 0
        groups[-1][name] = value
        size += value.nbytes
    return groups


def export_delta(model_dir: str | Path, out_dir: str | Path, base: str = "multilingual-e5-small") -> Path:
    """Write a trained reader's changed tensors (fp16 shards) and its small files to ``out_dir``.

    Refuses a model whose word embeddings differ from the base's: they would be lost at prepare time.
    """
    from safetensors.numpy import load_file, save_file

    from kotae.models import resolve_model

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
    delta = {"base": base, "base_source": _base_source(base_folder), "dtype": "float16", "files": files}
    (out / DELTA_FILE).write_text(json.dumps(delta, indent=2) + "\n", encoding="utf-8")
    return out


def delta_version(delta_dir: Path) -> str:
    """A digest of a shipped delta's small files (``delta.json`` holds every shard's sha256), so a
    prepared reader is rebuilt when kotae ships new weights, settings or card."""
    digest = hashlib.sha256()
    for name in (DELTA_FILE, *CARRIED_FILES):
        path = delta_dir / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    return digest.hexdigest()[:16]


def read_delta(delta_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``delta.json`` and the shipped tensors, each file checked against its recorded sha256."""
    from safetensors.numpy import load_file

    path = delta_dir / DELTA_FILE
    if not path.is_file():
        raise KotaeError(f"{path} is missing; reinstall kotae (pip install -e .)")
    delta = json.loads(path.read_text(encoding="utf-8"))
    tensors: dict[str, np.ndarray] = {}
    for entry in delta["files"]:
        file = delta_dir / entry["file"]
        if not file.is_file() or sha256(file) != entry["sha256"]:
            raise KotaeError(f"{file} is missing or damaged (sha256 mismatch); reinstall kotae")
        tensors.update(load_file(str(file)))
    return delta, tensors


def materialise(delta_dir: Path, base_folder: Path, target: Path) -> str:
    """Fill ``target`` with the complete reader: the base's word embeddings plus the shipped tensors."""
    from safetensors.numpy import save_file

    delta, tensors = read_delta(delta_dir)
    source = _base_source(base_folder)
    if delta.get("base_source") and source and source != delta["base_source"]:
        raise KotaeError(f"{base_folder} was prepared from {source}, the reader from {delta['base_source']}")
    state = {HF_WORD_EMBEDDINGS: base_word_embeddings(base_folder)}
    state.update({name: value.astype(np.float32) for name, value in tensors.items()})
    target.mkdir(parents=True, exist_ok=True)
    save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        if (base_folder / name).is_file():
            shutil.copy2(base_folder / name, target / name)
    for name in CARRIED_FILES:
        if (delta_dir / name).is_file():
            shutil.copy2(delta_dir / name, target / name)
    return f"{delta_dir.name} (fp16 delta) + {delta['base']} word embeddings"


def main(argv: list[str] | None = None) -> int:
    """``python -m kotae.reader_weights MODEL_DIR OUT_DIR``: write a trained reader's shippable delta."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m kotae.reader_weights",
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
